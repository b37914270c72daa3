"""What the backends' tests share: making backends, hearing them, launching, finding processes.

The fixtures are in ``backends/conftest.py``; these are plain helpers, imported
by name (a module named ``conftest`` is ambiguous when several directories
have one).

Example
-------
>>> backend = make_backend("ray", project_dir, ray_address=cluster.address)  # doctest: +SKIP
>>> recorder = subscribed(backend)                                        # doctest: +SKIP
>>> dashboard_id, placement = Launcher(backend, mark)("print('hi')")      # doctest: +SKIP
>>> recorder.exit_of(dashboard_id)                                        # doctest: +SKIP
(0, 'exited')
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest
from waiting import left_running, wait_for

from sense.local.backends import LaunchSpec, Placement
from sense.local.statedir import StateDir

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
#: The nodes of the session's cluster (``backends/conftest.py``).
NODES = 3
#: Each dashboard's context carries its test's mark, by which its processes are found.
MARK = "SENSE_PROJECT_ID"
#: The ``sense`` command, run with this interpreter.
SENSE = [sys.executable, "-c", "import sys; from sense.local.cli import main; sys.exit(main())"]


def make_backend(name: str, project_dir, *, grace: float = 1.0, **options):
    """A backend of kind ``name`` serving ``project_dir``.

    Without a prestarted engine unless ``prestart=True``: these tests find a dashboard's
    processes by the mark in their environment, which ``/proc`` shows only for a process
    that was exec'd with it (the contract suite runs the Ray backend with prestart on).
    """
    if name == "ray":
        from sense.local.backends.ray import RayBackend

        options.setdefault("prestart", False)
        return RayBackend(str(project_dir), StateDir(project_dir), grace=grace, **options)
    raise ValueError(f"no backend {name!r} in these tests yet")


def make_project(directory):
    """A project folder with a module kept in it."""
    directory.mkdir(exist_ok=True)
    (directory / "kept_module.py").write_text("WHERE = 'in the project'\n")
    return directory


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
            engine="sense-ipython-engine",
            size=size,
            code=code,
            env=env or {},
            context=context,
            **fields,
        )
        return dashboard_id, self.backend.launch(spec)


def processes_marked(mark: str) -> list[psutil.Process]:
    """The dashboards' processes (and their children) whose environment carries ``mark``."""
    return processes_with(MARK, mark)


def processes_with(variable: str, value: str) -> list[psutil.Process]:
    """The running processes whose environment sets ``variable`` to ``value``."""
    found = []
    for process in psutil.process_iter():
        try:
            # A zombie runs nothing: it waits for its parent to reap it.
            if (
                process.environ().get(variable) == value
                and process.status() != psutil.STATUS_ZOMBIE
            ):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return found


def dashboards_with_processes(mark: str) -> set[str]:
    """The ids of the dashboards (launched by a :class:`Launcher`) that have a process running."""
    found = set()
    for process in processes_marked(mark):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            found.add(process.environ().get("SENSE_DASHBOARD_ID"))
    return found


def log_of(backend, dashboard_id: int, **where) -> str:
    """A dashboard's output, as the backend serves it."""
    return b"".join(backend.read_logs(dashboard_id, **where)).decode()


def wait_for_log(backend, dashboard_id: int, text: str, timeout: float = 30) -> str:
    """The dashboard's output, once it has ``text`` in it."""

    def log_with_text():
        log = log_of(backend, dashboard_id)
        return log if text in log else None

    return wait_for(log_with_text, timeout, what=f"{text!r} in the output of {dashboard_id}")


def sense_run(example: str, project_dir, *options: str, prefix: tuple[str, ...] = ()) -> str:
    """``sense run OPTIONS EXAMPLE`` of ``examples/EXAMPLE``, copied into ``project_dir``
    (``prefix``, e.g. ``nsenter ...``, runs it on another host); check that it succeeded,
    and return its output."""
    shutil.copy(EXAMPLES / example, project_dir)
    run = subprocess.run(
        [*prefix, *SENSE, "run", *options, example],
        cwd=project_dir,
        env={k: v for k, v in os.environ.items() if not k.startswith("SENSE_")},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stdout
    return run.stdout


def run_the_cluster_example(address: str, project_dir, *, prefix: tuple[str, ...] = ()) -> str:
    """``sense run --backend ray --ray-address ADDRESS cluster.py`` of the README, unmodified,
    in ``project_dir`` (``prefix``, e.g. ``nsenter ...``, runs it on another host); check that
    it succeeded with its workers on more than one node, and return its output."""
    output = sense_run(
        "cluster.py", project_dir, "--backend", "ray", "--ray-address", address, prefix=prefix
    )
    hellos = re.findall(r"worker \d+ says hello from (\S+)", output)
    assert len(hellos) == 4, output
    assert len(set(hellos)) > 1, f"every worker ran on {hellos[0]}"
    assert "the cluster summed the squares below 1000000: 333332833333500000" in output, output
    assert "cluster: [1, 2, 3, 4, 5]" in output, output
    assert "after stopWorkers(): [1]" in output, output
    # The workers' own lines: on the console of `sense run`, and kept in their logs.
    kept = [log.read_text() for log in (Path(project_dir) / ".sense" / "logs").glob("*.log")]
    assert sum(log.count("said hello to the master") for log in kept) == 4, kept
    assert output.count("said hello to the master") == 4, output
    return output


def sigkill_of_the_driver_leaves_nothing(driver, ids: range, mark: str, node_ips: set[str]):
    """Launch dashboards ``ids`` through ``driver``, one per node, each job with a child of its
    own; SIGKILL the driver; check that none of their processes is left, on any node."""
    code = (
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        "print('up', flush=True)\n"
        "time.sleep(120)\n"
    )
    launched = [driver.launch(i, code=code, env={MARK: mark}) for i in ids]
    assert {dashboard["project_ip"] for dashboard in launched} == node_ips
    for dashboard_id in ids:
        wait_for(lambda i=dashboard_id: "up" in driver.logs(i), 30, what=f"{dashboard_id}'s child")
    processes = processes_marked(mark)
    children = [p for p in processes if p.cmdline()[-1:] == ["import time; time.sleep(120)"]]
    assert len(children) == len(ids)  # besides each engine and the job it runs
    driver.kill()
    alive = left_running(processes, timeout=30)
    assert not alive, f"left running after the server was killed: {[p.pid for p in alive]}"
