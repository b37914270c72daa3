"""Fixtures of the backends' tests: a real Ray cluster, what a backend reports, its processes.

The cluster has 3 nodes on 127.0.0.2-4 (see ``ray_cluster.py``), started
once for the session: Ray takes seconds to start on a small machine.
"""

from __future__ import annotations

import importlib.util
import itertools
import threading
import time
import uuid

import psutil
import pytest
from needs import require
from ray_cluster import loopback_cluster

from sense.local.backends import LaunchSpec, Placement

#: The nodes of the session's cluster.
NODES = 3
#: Each dashboard's context carries its test's mark, by which its processes are found.
MARK = "SENSE_PROJECT_ID"


@pytest.fixture(scope="session")
def ray_cluster():
    require(importlib.util.find_spec("ray") is not None, "Ray is not installed (sense[ray])")
    with loopback_cluster(NODES) as cluster:
        yield cluster


def make_backend(name: str, project_dir, *, grace: float = 1.0, **options):
    """A backend of kind ``name`` serving ``project_dir``."""
    if name == "ray":
        from sense.local.backends.ray import RayBackend

        return RayBackend(str(project_dir), project_dir / ".sense", grace=grace, **options)
    raise ValueError(f"no backend {name!r} in these tests yet")


def make_project(directory):
    """A project folder with a module kept in it."""
    directory.mkdir(exist_ok=True)
    (directory / "kept_module.py").write_text("WHERE = 'in the project'\n")
    return directory


@pytest.fixture
def project_dir(tmp_path):
    return make_project(tmp_path / "project")


def wait_until(condition, timeout: float = 30.0, what: str = "a condition"):
    """Poll ``condition()`` until it returns something true; return that, or fail."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


class Recorder:
    """What a backend reports, as its listeners hear it."""

    def __init__(self) -> None:
        self.running: list[int] = []
        self.exits: dict[int, tuple[int | None, str]] = {}
        self._changed = threading.Condition()

    def on_running(self, dashboard_id: int) -> None:
        with self._changed:
            self.running.append(dashboard_id)
            self._changed.notify_all()

    def on_exit(self, dashboard_id: int, code: int | None, reason: str) -> None:
        with self._changed:
            self.exits[dashboard_id] = (code, reason)
            self._changed.notify_all()

    def exit_of(self, dashboard_id: int, timeout: float = 30) -> tuple[int | None, str]:
        """How dashboard ``dashboard_id`` ended, once it has."""
        with self._changed:
            if not self._changed.wait_for(lambda: dashboard_id in self.exits, timeout):
                pytest.fail(f"dashboard {dashboard_id} did not end within {timeout} s")
            return self.exits[dashboard_id]

    def wait_running(self, dashboard_id: int, timeout: float = 30) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: dashboard_id in self.running, timeout):
                pytest.fail(f"dashboard {dashboard_id} was not running within {timeout} s")


def subscribed(backend) -> Recorder:
    """A recorder listening to ``backend``."""
    recorder = Recorder()
    backend.subscribe(recorder.on_running, recorder.on_exit)
    return recorder


class Launcher:
    """Launches dashboards on a backend with the next ids, their context carrying ``mark``."""

    def __init__(self, backend, mark: str, ids: itertools.count | None = None) -> None:
        self.backend = backend
        self.mark = mark
        self.ids = ids or itertools.count(1)

    def __call__(
        self, code: str = "", *, size="small", env=None, **fields
    ) -> tuple[int, Placement]:
        """Launch one (``fields``: more of :class:`LaunchSpec`, e.g. ``script``, ``argv``)."""
        dashboard_id = next(self.ids)

        def context(placement: Placement) -> dict[str, str]:
            (port,) = placement.ports
            return {
                MARK: self.mark,
                "SENSE_DASHBOARD_ID": str(dashboard_id),
                "SENSE_PROJECT_IP": placement.project_ip,
                "SENSE_PORT1": str(port),
            }

        spec = LaunchSpec(
            dashboard_id,
            "worker",
            "sense-ipython-engine",
            size,
            code=code,
            env=env or {},
            context=context,
            **fields,
        )
        return dashboard_id, self.backend.launch(spec)


def processes_marked(mark: str) -> list[psutil.Process]:
    """The dashboards' processes (and their children) whose environment carries ``mark``."""
    found = []
    for process in psutil.process_iter():
        try:
            # A zombie runs nothing: it waits for its parent to reap it.
            if process.environ().get(MARK) == mark and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return found


@pytest.fixture
def mark():
    """This test's mark; at its end no process carrying it may be left."""
    mark = uuid.uuid4().hex
    yield mark
    _, alive = psutil.wait_procs(processes_marked(mark), timeout=10)
    for process in alive:
        process.kill()
    assert not alive, f"dashboard processes left running: {[p.pid for p in alive]}"


def log_of(backend, dashboard_id: int, **where) -> str:
    """A dashboard's output, as the backend serves it."""
    return b"".join(backend.read_logs(dashboard_id, **where)).decode()


def wait_for_log(backend, dashboard_id: int, text: str, timeout: float = 30) -> str:
    """The dashboard's output, once it has ``text`` in it."""

    def log_with_text():
        log = log_of(backend, dashboard_id)
        return log if text in log else None

    return wait_until(log_with_text, timeout, f"{text!r} in the output of dashboard {dashboard_id}")
