"""Fixtures of the local server's tests: real servers on free ports, real worker processes.

Every test checks at its end that no process it started is left (``no_strays``).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import requests
from waiting import strays, wait_for

from sense.local import LocalServer
from sense.local.backends.prestart import FORKSERVER
from sense.local.engine import __file__ as ENGINE_FILE
from sense.local.store import ACTIVE

#: What a dashboard's command line runs: the engine, or the prestarted engine it was forked from.
ENGINES = (os.path.basename(ENGINE_FILE), os.path.basename(FORKSERVER))
SENSE = [sys.executable, "-c", "import sys; from sense.local.cli import main; sys.exit(main())"]


def runs_an_engine(process: psutil.Process) -> bool:
    """Whether ``process`` runs the worker engine, or the prestarted engine.

    A dashboard forked from the prestarted engine keeps its command line.
    """
    try:
        return any(part.endswith(ENGINES) for part in process.cmdline())
    except psutil.Error:
        return False


def engine_processes(under: Path) -> list[psutil.Process]:
    """The processes running the worker engine in a project under ``under``.

    Two for each dashboard: the engine, and the job it forked.

    Matched by working directory, not by parentage: a worker whose server was
    killed belongs to init, and other sessions on this machine run workers too.
    (The prestarted engine itself runs in ``/``: it is not one of them.)
    """
    found = []
    for process in psutil.process_iter(["cwd"]):
        if (process.info["cwd"] or "").startswith(str(under)) and runs_an_engine(process):
            found.append(process)
    return found


def dashboard_processes(api: Api) -> list[psutil.Process]:
    """The dashboards' processes of the project of ``api``, wherever a backend put them.

    Found by the project URL in their environment, or by their output going to the
    project's logs: a dashboard forked from the prestarted engine has its environment in
    ``os.environ`` only, while ``/proc`` shows the one the prestarted engine started with.
    """
    logs = str(api.server.state.log_dir)
    found = []
    for process in psutil.process_iter():
        if not runs_an_engine(process):
            continue
        try:
            if process.environ().get("SENSE_PROJECT_URL") == api.url or os.readlink(
                f"/proc/{process.pid}/fd/1"
            ).startswith(logs):
                found.append(process)
        except (psutil.Error, OSError):
            continue
    return found


def dashboard_process(api: Api, dashboard_id: int) -> psutil.Process:
    """The engine process of one dashboard: the pid its backend keeps, else by its environment."""
    pid = api.server.project.get(dashboard_id)["handle"].get("pid")
    if pid is not None:
        return psutil.Process(pid)

    def found():
        for process in dashboard_processes(api):
            try:
                if process.environ().get("SENSE_DASHBOARD_ID") == str(dashboard_id):
                    return process
            except psutil.Error:
                continue
        return None

    found.__name__ = f"the process of dashboard {dashboard_id}"
    return wait_for(found)


def prestarted_engines() -> list[psutil.Process]:
    """The prestarted engines of the servers that this test process runs."""
    found = []
    for process in psutil.Process().children():
        # One that has ended may be a zombie until its reader thread reaps it: no cmdline.
        with contextlib.suppress(psutil.Error):
            if FORKSERVER in process.cmdline():
                found.append(process)
    return found


@pytest.fixture(autouse=True)
def no_strays(tmp_path):
    """Fail a test that leaves a worker process behind (after giving it 30 s to end: the
    machine may be busy).

    Nor may a prestarted engine of a server of this test outlive it (those of a module's
    server, started before the test, are that server's to end).
    """
    before = set(prestarted_engines())
    yield
    started = [p for p in prestarted_engines() if p not in before]
    alive = strays(engine_processes(tmp_path) + started, timeout=30)
    assert not alive, f"processes left running: {[p.pid for p in alive]}"


class Api:
    """``requests`` aimed at one project, with its credentials."""

    def __init__(self, server: LocalServer) -> None:
        self.server = server
        self.url = server.project_url
        self.auth = (server.project.info.token, "")

    def __call__(self, method: str, path: str = "", **kwargs) -> requests.Response:
        kwargs.setdefault("auth", self.auth)
        kwargs.setdefault("timeout", 30)
        return requests.request(method, self.url + path, **kwargs)

    def launch(self, status: int = 201, **body) -> dict:
        """Launch under the server's master unless told otherwise; check the status."""
        body.setdefault("master_id", self.server.master["id"])
        answer = self("POST", "/dashboards", json=body)
        assert answer.status_code == status, answer.text
        return answer.json()

    def get(self, dashboard_id: int) -> dict:
        return self("GET", f"/dashboards/{dashboard_id}").json()

    def wait_status(self, dashboard_id: int, *statuses: str, timeout: float = 10.0) -> dict:
        def reached():
            dashboard = self.get(dashboard_id)
            return dashboard if dashboard["status"] in statuses else None

        reached.__name__ = f"dashboard {dashboard_id} to be {' or '.join(statuses)}"
        return wait_for(reached, timeout)

    def logs(self, dashboard_id: int) -> str:
        return self("GET", f"/dashboards/{dashboard_id}/logs").text


@pytest.fixture
def project_dir(tmp_path) -> Path:
    directory = tmp_path / "project"
    directory.mkdir()
    return directory


@pytest.fixture
def server(project_dir):
    """A local server whose master is this test process (its environment left alone)."""
    with LocalServer(project_dir, grace=1.0) as running:
        running.attach(set_environ=False)
        yield running


@pytest.fixture
def api(server) -> Api:
    return Api(server)


#: The backends that the contract suite (test_backend_contract.py) runs against, as the keyword
#: arguments of :class:`LocalServer` that choose one (and its options).
#: ``"ray"`` runs on the session's 3-node loopback Ray cluster (``ray_cluster``), whose address
#: is known once it has started.
BACKENDS = {
    "local": {"backend": "local"},
    "local-no-prestart": {"backend": "local", "prestart": False},
    "ray": {"backend": "ray"},
}


@pytest.fixture(params=BACKENDS.values(), ids=BACKENDS.keys())
def backend(request) -> dict:
    """The keyword arguments of :class:`LocalServer` that choose one backend."""
    if request.param["backend"] == "ray":
        cluster = request.getfixturevalue("ray_cluster")
        return {**request.param, "ray_address": cluster.address}
    return request.param


def contract_project(directory: Path) -> Path:
    """``directory``, a project for the contract suite: it holds ``helper_module.py`` before
    its server starts (on Ray, the project is shipped to the nodes then: see docs/ray.md)."""
    (directory / "helper_module.py").write_text("VALUE = 'from the project'\n")
    return directory


@pytest.fixture(scope="module")
def ray_contract_server(tmp_path_factory, ray_cluster):
    """One server on the session's Ray cluster for a module's tests: it takes seconds to start
    (its driver, then an agent and a prestarted engine on each node), a test about one."""
    project_dir = tmp_path_factory.mktemp("ray-contract") / "project"
    project_dir.mkdir()
    backend = {**BACKENDS["ray"], "ray_address": ray_cluster.address}
    with LocalServer(contract_project(project_dir), grace=1.0, **backend) as running:
        running.attach(set_environ=False)
        yield running


@pytest.fixture
def contract_api(project_dir, backend, request):
    """The API of a server on ``backend`` whose master is this test process.

    On Ray, the module's server (:func:`ray_contract_server`): at the end of the test every
    dashboard it left running is stopped, and none of their processes may be left.
    """
    if backend["backend"] != "ray":
        with LocalServer(contract_project(project_dir), grace=1.0, **backend) as running:
            running.attach(set_environ=False)
            yield Api(running)
        return
    server = request.getfixturevalue("ray_contract_server")
    api = Api(server)
    yield api
    master_id = server.master["id"]
    left = [d["id"] for d in server.project.dashboards(status=ACTIVE) if d["id"] != master_id]
    processes = [p for d in left for p in process_tree(dashboard_process(api, d))]
    for dashboard_id in left:
        server.project.stop(dashboard_id)
    alive = strays(processes, timeout=30)
    assert not alive, f"processes of dashboards {left} left running: {[p.pid for p in alive]}"


def process_tree(process: psutil.Process) -> list[psutil.Process]:
    """``process`` and every process below it; none if it has ended."""
    try:
        return [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


#: ``local_master``'s options for a test of how a dashboard ends on SIGTERM by itself: on a busy
#: machine that can take longer than the suite's usual grace period of 1 s, after which the
#: stop's SIGTERM to every process of the job would end it instead.
PATIENT = {"grace": 120.0}


@pytest.fixture
def local_master(project_dir, monkeypatch, request):
    """``sense.local.start()``: this process is the master dashboard, its environment set.

    Parametrized indirectly, the parameter is a dict of more options of ``start``
    (:data:`PATIENT`: a stop waits for the dashboard's own end, however busy the machine).
    """
    import sense.local

    for name in list(os.environ):
        if name.startswith("SENSE_"):
            monkeypatch.delenv(name)
    server = sense.local.start(project_dir, **{"grace": 1.0, **getattr(request, "param", {})})
    yield server
    sense.local.stop()


def sense_command(*args: str, cwd, **kwargs) -> subprocess.Popen:
    """The ``sense`` command as a child process, run with this interpreter."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENSE_")}
    env.update(kwargs.pop("env", {}))
    return subprocess.Popen(
        [*SENSE, *args],
        cwd=cwd,
        env=env,
        **{"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True, **kwargs},
    )


def read_exports(process):
    """The ``export NAME=value`` lines that ``sense server`` prints, until its last one."""
    for line in process.stdout:
        if line.startswith("export "):
            name, _, value = line[len("export ") :].strip().partition("=")
            yield name, shlex.split(value)[0] if value else ""
        elif line.startswith("Ctrl-C"):
            return


def install_backend(site: Path, name: str, target: str) -> Path:
    """Install a backend into folder ``site`` as a third party would: a distribution whose
    entry point ``name`` of ``sense.backends`` is ``target`` (``module:Class``); ``site``."""
    dist_info = site / f"sense_{name}-1.0.dist-info"
    dist_info.mkdir(parents=True)
    metadata = f"Metadata-Version: 2.1\nName: sense-{name}\nVersion: 1.0\n"
    (dist_info / "METADATA").write_text(metadata)
    (dist_info / "entry_points.txt").write_text(f"[sense.backends]\n{name} = {target}\n")
    return site
