"""The agent of the Ray backend: what runs on each node and starts its dashboards there.

One agent per node lives as long as the server: a Ray actor pinned to its
node (see :mod:`sense.local.backends.ray`). It runs each dashboard as the
local server does, a process group running the small engine, through
:class:`~sense.local.supervisor.LocalProcessSupervisor`, and keeps its
output on the node's disk. It imports nothing of Ray: the backend wraps it
in an actor, and tests can run it in-process.

Example
-------
>>> agent = NodeAgent(None, None, grace=1.0)                       # doctest: +SKIP
>>> agent.launch(7, {"code": "print('hi')"}, {"SENSE_DASHBOARD_ID": "7"})  # doctest: +SKIP
>>> agent.events(timeout=5.0)                                      # doctest: +SKIP
[('running', 7), ('exit', 7, 0, False)]
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sense.local.supervisor import Job, LocalProcessSupervisor

#: Bytes read from a log at a time.
CHUNK = 64 * 1024
#: An agent's own log directory (off the server's node): this, its pid, a dash, a random part.
LOG_DIR_PREFIX = "sense-logs-"


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


def free_port() -> int:
    """A TCP port free on every address of this node at this moment."""
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def read_chunks(path: Path, offset: int = 0, limit: int | None = None) -> Iterator[bytes]:
    """The bytes of file ``path`` from ``offset`` (negative: from the end), ``limit`` at most.

    A file that does not exist (yet) reads as empty.
    """
    with contextlib.suppress(FileNotFoundError), open(path, "rb") as file:
        if offset < 0:
            offset = max(0, os.fstat(file.fileno()).st_size + offset)
        file.seek(offset)
        left = sys.maxsize if limit is None else limit
        while left > 0:
            chunk = file.read(min(CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk


def _remove_log_dirs_of_dead_agents() -> None:
    """Remove the log directories of this node's agents that died without their shutdown
    (their server was killed): nothing can ask for those logs any more."""
    for path in Path(tempfile.gettempdir()).glob(f"{LOG_DIR_PREFIX}*-*"):
        owner = path.name[len(LOG_DIR_PREFIX) :].split("-", 1)[0]
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
        Where dashboards run: the project itself on the server's node, None elsewhere
        for Ray's copy of it (this process's working directory).
    log_dir : str or None
        Where their output goes: the project's log directory on the server's node, None
        elsewhere for a temporary directory of this node, removed by :meth:`shutdown` (or,
        if this agent is killed, by the next agent started on the node).
    grace : float
        Seconds between SIGTERM and SIGKILL when stopping.
    base_env : dict, optional
        The environment dashboards start from; this node's own by default.
    """

    def __init__(
        self,
        project_dir: str | None,
        log_dir: str | None,
        *,
        grace: float,
        base_env: dict[str, str] | None = None,
    ) -> None:
        self._own_log_dir = log_dir is None
        if log_dir is None:
            _remove_log_dirs_of_dead_agents()
            log_dir = tempfile.mkdtemp(prefix=f"{LOG_DIR_PREFIX}{os.getpid()}-")
        self.log_dir = Path(log_dir)
        base = node_environment() if base_env is None else base_env
        # When the node itself runs on a dashboard, its context must not leak into these.
        self.base_env = {name: v for name, v in base.items() if not name.startswith("SENSE_")}
        # Output should reach the log as it is printed, not when a buffer fills.
        self.base_env.setdefault("PYTHONUNBUFFERED", "1")
        self._events: queue.SimpleQueue[tuple] = queue.SimpleQueue()
        self.supervisor = LocalProcessSupervisor(
            project_dir or os.getcwd(),
            self.log_path,
            on_running=lambda dashboard_id: self._events.put(("running", dashboard_id)),
            on_exit=lambda dashboard_id, code, stopped: self._events.put(
                ("exit", dashboard_id, code, stopped)
            ),
            grace=grace,
            # The node's Python, the one that runs Ray here.
            python=sys.executable,
        )

    def log_path(self, dashboard_id: int) -> Path:
        """Where dashboard ``dashboard_id`` writes its output on this node."""
        return self.log_dir / f"{dashboard_id}.log"

    def pid(self) -> int:
        """This agent's process id (an answer also says that the agent is up)."""
        return os.getpid()

    def free_port(self) -> int:
        """A port free on this node, for a dashboard's ``SENSE_PORT1``."""
        return free_port()

    def launch(self, dashboard_id: int, job: dict, env: dict[str, str]) -> dict:
        """Start a dashboard: ``job`` has ``code`` or ``script`` and ``argv``; ``env`` (its
        context and the caller's variables) goes over this node's environment.

        Returns its process's ``pid`` and ``start_time``, to find it after a restart.
        """
        job = Job(
            code=job.get("code", ""),
            script=job.get("script", ""),
            argv=list(job.get("argv", [])),
            env={**self.base_env, **env},
        )
        return self.supervisor.launch(dashboard_id, job)

    def stop(self, dashboard_id: int) -> None:
        """SIGTERM the dashboard's group, SIGKILL after the grace; return once it has ended."""
        self.supervisor.stop(dashboard_id)

    def interrupt(self, dashboard_id: int) -> None:
        """SIGINT the dashboard's group."""
        self.supervisor.interrupt(dashboard_id)

    def events(self, timeout: float) -> list[tuple]:
        """What happened since the last call, waiting up to ``timeout`` seconds for something.

        ``("running", id)`` once a dashboard's process is up; ``("exit", id, exit_code,
        stopped)`` once it has ended, ``stopped`` saying whether :meth:`stop` ended it.
        """
        try:
            happened = [self._events.get(timeout=timeout)]
        except queue.Empty:
            return []
        while not self._events.empty():
            happened.append(self._events.get())
        return happened

    def log_size(self, dashboard_id: int) -> int:
        try:
            return self.log_path(dashboard_id).stat().st_size
        except FileNotFoundError:
            return 0

    def read_log(self, dashboard_id: int, offset: int = 0, limit: int = CHUNK) -> bytes:
        """Up to ``limit`` bytes of the dashboard's output from ``offset``."""
        return b"".join(read_chunks(self.log_path(dashboard_id), offset, limit))

    def forget(self, dashboard_id: int) -> None:
        """Remove an ended dashboard's output, once the server has kept its own copy."""
        self.log_path(dashboard_id).unlink(missing_ok=True)

    def cleanup(self, handles: list[dict]) -> None:
        """End the process groups of ``handles`` (``pid``, ``start_time``) of an earlier run."""
        self.supervisor.cleanup(handles)

    def stop_all(self) -> None:
        """Stop every dashboard of this node at once; return once they have all ended."""
        self.supervisor.shutdown()

    def shutdown(self) -> None:
        """Stop every dashboard of this node, and remove the output kept here."""
        self.supervisor.shutdown()
        if self._own_log_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)
