"""The agent of the Ray backend: what runs on each node and starts its dashboards there.

One agent per node lives as long as the server: a Ray actor pinned to its
node (see :mod:`sense.local.backends.ray`). Ray decides where a dashboard
goes; the agent runs it there exactly as the local server does, through a
:class:`~sense.local.backends.local.LocalBackend` of its own (process
groups running the small engine, forked from a prestarted engine), with the
node's own environment and the ``SENSE_*`` context that the server built for
Ray's placement. It imports nothing of Ray: the backend wraps it in an
actor, and tests can run it in-process.

Example
-------
>>> agent = NodeAgent(None, grace=1.0)                                     # doctest: +SKIP
>>> agent.launch(7, {"code": "print('hi')"}, {"SENSE_DASHBOARD_ID": "7"})  # doctest: +SKIP
>>> agent.events(timeout=5.0)                                              # doctest: +SKIP
[('running', 7)]
>>> agent.heard(7)                                                         # doctest: +SKIP
>>> agent.events(timeout=5.0)                                              # doctest: +SKIP
[('exit', 7, 0, 'exited')]
"""

from __future__ import annotations

import os
import queue
import shutil
import tempfile
import threading
from pathlib import Path

from sense.local.backends import LaunchSpec
from sense.local.backends.local import CHUNK, LocalBackend, free_port
from sense.local.statedir import StateDir

#: Seconds a dashboard's job waits for the server to hear that it runs.
HEARD_TIMEOUT = 30.0
#: An agent's own state directory (off the server's node): this, its pid, a dash, a random part.
STATE_DIR_PREFIX = "sense-agent-"


def node_environment() -> dict[str, str]:
    """This node's own environment: the one its Ray node (the raylet) was started with.

    A Ray worker's environment adds Ray's own variables (and the copy of the
    project on ``PYTHONPATH``) to it; a dashboard should see what a program
    started on that node would, as on the platform.
    """
    raylet = os.environ.get("RAY_RAYLET_PID", "")
    try:
        with open(f"/proc/{int(raylet)}/environ", "rb") as file:
            pairs = file.read().split(b"\0")
    except (ValueError, OSError):
        return dict(os.environ)
    return dict(
        (name.decode(errors="replace"), value.decode(errors="replace"))
        for name, sep, value in (pair.partition(b"=") for pair in pairs)
        if sep
    )


def _remove_state_dirs_of_dead_agents() -> None:
    """Remove the state directories of this node's agents that died without their shutdown
    (their server was killed): nothing can ask for those logs any more."""
    for path in Path(tempfile.gettempdir()).glob(f"{STATE_DIR_PREFIX}*-*"):
        owner = path.name[len(STATE_DIR_PREFIX) :].split("-", 1)[0]
        if owner.isdigit() and not _alive(int(owner)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's
    return True


class NodeAgent:
    """Runs, watches and stops the dashboards placed on this node.

    Parameters
    ----------
    project_dir : str or None
        The project on the server's node, where dashboards there run and keep their output
        (in its ``.sense/``); None elsewhere: they run in Ray's copy of it (this process's
        working directory) and keep their output in a temporary directory of this node,
        removed by :meth:`shutdown` (or, if this agent is killed, by the next agent here).
    grace : float
        Seconds between SIGTERM and SIGKILL when stopping.
    base_env : dict, optional
        The environment dashboards start from; this node's own by default.
    prestart : bool
        Fork dashboards from a prestarted engine on this node (on by default).
    """

    def __init__(
        self,
        project_dir: str | None,
        *,
        grace: float,
        base_env: dict[str, str] | None = None,
        prestart: bool = True,
    ) -> None:
        self._own_state = project_dir is None
        if project_dir is None:
            _remove_state_dirs_of_dead_agents()
            state_dir = tempfile.mkdtemp(prefix=f"{STATE_DIR_PREFIX}{os.getpid()}-")
        else:
            state_dir = project_dir
        self.state = StateDir(state_dir)
        self._events: queue.SimpleQueue[tuple] = queue.SimpleQueue()
        self._stopped = False
        self.processes = LocalBackend(
            project_dir or os.getcwd(),
            self.state,
            grace=grace,
            base_env=node_environment() if base_env is None else base_env,
            prestart=prestart,
        )
        #: The dashboards whose job waits until the server has heard that they run.
        self._unheard: dict[int, threading.Event] = {}
        self.processes.subscribe(
            self._running,
            lambda dashboard_id, code, reason: self._events.put(
                ("exit", dashboard_id, code, reason)
            ),
        )

    def _running(self, dashboard_id: int) -> None:
        """The dashboard's process is up: say so, and hold its job until the server has heard
        (:meth:`heard`), so that the job sees itself running, as on the local backend."""
        unheard = self._unheard.setdefault(dashboard_id, threading.Event())
        self._events.put(("running", dashboard_id))
        # Bounded: a server too slow to answer delays the job, never stops it.
        unheard.wait(HEARD_TIMEOUT)
        self._unheard.pop(dashboard_id, None)

    def heard(self, dashboard_id: int) -> None:
        """The server has recorded that the dashboard runs (its ``running`` event): its job
        starts."""
        self._unheard.get(dashboard_id, threading.Event()).set()

    def pid(self) -> int:
        """This agent's process id (an answer also says that the agent is up)."""
        return os.getpid()

    def free_port(self) -> int:
        """A port free on this node, for a dashboard's ``SENSE_PORT1``."""
        return free_port()

    def launch(self, dashboard_id: int, job: dict, context: dict[str, str]) -> dict:
        """Start a dashboard: ``job`` has ``code``, or ``script`` and ``argv``, and ``env``;
        ``context`` is its ``SENSE_*`` variables for where Ray placed it.

        Returns its handle (``pid``, ``start_time``), to find it after a restart.
        """
        spec = LaunchSpec(
            dashboard_id,
            job.get("name", ""),
            # The local backend's own placement (a loopback address) means nothing here.
            context=lambda _placement: context,
            code=job.get("code", ""),
            script=job.get("script", ""),
            argv=list(job.get("argv", [])),
            env=dict(job.get("env", {})),
        )
        handle = self.processes.launch(spec).handle
        return {"pid": handle["pid"], "start_time": handle["start_time"]}

    def stop(self, dashboard_id: int) -> None:
        """Stop the dashboard (SIGTERM, SIGKILL after the grace); return once it has ended."""
        self.heard(dashboard_id)  # the stop must not wait for the server's news
        self.processes.stop(dashboard_id)

    def interrupt(self, dashboard_id: int) -> None:
        """Ctrl-C for the dashboard: SIGINT to every process of its job (see ``engine.py``)."""
        self.processes.interrupt(dashboard_id)

    def events(self, timeout: float) -> list[tuple]:
        """What happened since the last call, waiting up to ``timeout`` seconds for something.

        ``("running", id)`` once a dashboard's process is up (its job starts once the server
        says it has :meth:`heard`); ``("exit", id, exit_code,
        reason)`` once it has ended, ``reason`` one of :data:`~sense.local.backends.REASONS`.
        """
        try:
            happened = [self._events.get(timeout=timeout)]
        except queue.Empty:
            return []
        while not self._events.empty():
            happened.append(self._events.get())
        return happened

    def log_size(self, dashboard_id: int) -> int:
        return self.processes.log_size(dashboard_id)

    def read_log(self, dashboard_id: int, offset: int = 0, limit: int = CHUNK) -> bytes:
        """Up to ``limit`` bytes of the dashboard's output from ``offset`` (negative: from the
        end), counted as :meth:`log_size` counts."""
        return b"".join(self.processes.read_logs(dashboard_id, offset, limit))

    def forget(self, dashboard_id: int) -> None:
        """Remove an ended dashboard's output, once the server has kept its own copy."""
        if self._own_state:
            path = self.state.log_path(dashboard_id)
            for part in (path, path.with_name(path.name + ".1")):
                part.unlink(missing_ok=True)

    def stop_all(self) -> None:
        """Stop every dashboard of this node at once, and its prestarted engine; return once
        they have all ended."""
        if not self._stopped:
            self._stopped = True
            for dashboard_id in list(self._unheard):
                self.heard(dashboard_id)
            self.processes.shutdown()

    def shutdown(self) -> None:
        """Stop every dashboard of this node, and remove the output kept here."""
        self.stop_all()
        if self._own_state:
            shutil.rmtree(self.state.project_dir, ignore_errors=True)
