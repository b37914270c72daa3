"""Who runs the dashboards: an interface, and its first backend, local processes.

A supervisor starts one dashboard's job, tells its owner when the job is up
and when it has ended, stops it, and serves its output. Another backend (an
existing cluster engine) can take the place of :class:`LocalProcessSupervisor`
by implementing :class:`Supervisor`.

Example
-------
>>> events = []
>>> sup = LocalProcessSupervisor(                          # doctest: +SKIP
...     "/tmp/project", lambda id: f"/tmp/project/.sense/logs/{id}.log",
...     lambda id: f"/tmp/project/.sense/code/{id}.py",
...     on_running=lambda id: events.append(("running", id)),
...     on_exit=lambda id, code, stopped: events.append(("exit", id, code)))
>>> handle = sup.launch(1, Job(code="print('hi')", env=dict(os.environ)))  # doctest: +SKIP
"""

from __future__ import annotations

import abc
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from sense.local.statedir import create_new, open_no_link

ENGINE = str(Path(__file__).with_name("engine.py"))
DEFAULT_GRACE = 3.0
DEFAULT_LOG_CAP = 100 * 1024 * 1024
#: Bytes read at once when a log is served.
CHUNK = 64 * 1024


@dataclass
class Job:
    """What one dashboard runs: ``code``, else ``script`` with ``argv``, else nothing (idle).

    ``console`` shares the supervisor's own terminal instead of a log file
    (the script of ``sense run``).
    """

    code: str = ""
    script: str = ""
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    console: bool = False

    def message(self, **extra) -> bytes:
        """The job as the engine reads it, with ``extra`` fields: one JSON line (see engine.py)."""
        if self.code:
            job = {"code": self.code}
        elif self.script:
            job = {"script": self.script, "argv": self.argv}
        else:
            job = {}
        return json.dumps(job | extra).encode() + b"\n"


class Supervisor(abc.ABC):
    """Runs dashboards' jobs and reports on them.

    Parameters
    ----------
    on_running : callable(dashboard_id)
        Called once the job's process is up, before the job itself starts.
    on_exit : callable(dashboard_id, exit_code, stopped)
        Called once the job has ended; ``stopped`` says whether :meth:`stop` ended it.
    """

    def __init__(
        self, on_running: Callable[[int], None], on_exit: Callable[[int, int, bool], None]
    ) -> None:
        self.on_running = on_running
        self.on_exit = on_exit

    @abc.abstractmethod
    def launch(self, dashboard_id: int, job: Job) -> dict:
        """Start the job; return a JSON-able handle that :meth:`cleanup` can use after a restart."""

    @abc.abstractmethod
    def stop(self, dashboard_id: int) -> None:
        """End the job (politely, then by force) and return once it has ended."""

    @abc.abstractmethod
    def interrupt(self, dashboard_id: int) -> None:
        """Interrupt the job as Ctrl-C in a terminal would (SIGINT)."""

    @abc.abstractmethod
    def wait(self, dashboard_id: int, timeout: float | None = None) -> int | None:
        """Wait for the job to end; its exit code, or None if it is still running."""

    @abc.abstractmethod
    def read_log(self, dashboard_id: int, offset: int = 0) -> tuple[int, Iterator[bytes]]:
        """The size of the job's log now, and its bytes from ``offset`` up to that size.

        A negative ``offset`` counts from the end (``-1000``: the last 1,000 bytes).
        The bytes come in chunks, so that a log of any size is served in little memory.
        """

    @abc.abstractmethod
    def cleanup(self, handles: Iterable[dict]) -> None:
        """End whatever is still running of jobs that an earlier run of the server launched."""

    @abc.abstractmethod
    def shutdown(self) -> None:
        """Stop every job."""


@dataclass
class _Process:
    popen: subprocess.Popen
    channel: socket.socket
    job: Job
    stopped: bool = False
    #: Whether the engine has its job (or an idle one, when a stop came first).
    handed_over: bool = False
    #: Taken to write to ``channel``: the job goes first, then orders.
    lock: threading.Lock = field(default_factory=threading.Lock)
    ended: threading.Event = field(default_factory=threading.Event)


class LocalProcessSupervisor(Supervisor):
    """Each dashboard is ``engine.py`` on this machine, in a process group of its own, and its job.

    Parameters
    ----------
    project_dir : path
        The working directory of every job.
    log_path : callable(dashboard_id) -> path
        Where each dashboard's output goes.
    code_path : callable(dashboard_id) -> path
        Where a dashboard's startup code is saved while it runs (see engine.py: the
        processes that multiprocessing spawns read it there).
    grace : float
        Seconds between SIGTERM and SIGKILL when stopping.
    log_cap : int
        Bytes a dashboard's log may hold before it starts anew (see engine.py).
    python : str
        The interpreter; the server's own by default.
    """

    def __init__(
        self,
        project_dir,
        log_path: Callable[[int], Path],
        code_path: Callable[[int], Path],
        on_running: Callable[[int], None],
        on_exit: Callable[[int, int, bool], None],
        *,
        grace: float = DEFAULT_GRACE,
        log_cap: int = DEFAULT_LOG_CAP,
        python: str = sys.executable,
    ) -> None:
        super().__init__(on_running, on_exit)
        self.project_dir = str(project_dir)
        self.log_path = log_path
        self.code_path = code_path
        self.grace = grace
        self.log_cap = log_cap
        self.python = python
        self._processes: dict[int, _Process] = {}
        self._lock = threading.Lock()

    def launch(self, dashboard_id: int, job: Job) -> dict:
        if job.code:
            path = self.code_path(dashboard_id)
            Path(path).unlink(missing_ok=True)
            create_new(path, job.code.encode())
        ours, theirs = socket.socketpair()
        with open_no_link(self.log_path(dashboard_id), "ab") as log:
            if job.console:
                log.write(b"(this dashboard's output goes to the console of `sense run`)\n")
            output = None if job.console else log
            try:
                popen = subprocess.Popen(
                    [self.python, ENGINE, "--fd", str(theirs.fileno())],
                    cwd=self.project_dir,
                    env=job.env,
                    stdin=None if job.console else subprocess.DEVNULL,
                    stdout=output,
                    stderr=None if job.console else subprocess.STDOUT,
                    pass_fds=(theirs.fileno(),),
                    # Its own process group: Ctrl-C (interrupt) reaches the job and what it started.
                    start_new_session=True,
                )
            except BaseException:
                ours.close()
                raise
            finally:
                # Only the job may hold this end: the server's end closing must mean EOF there.
                theirs.close()
        process = _Process(popen, ours, job)
        with self._lock:
            self._processes[dashboard_id] = process
        threading.Thread(
            target=self._watch,
            args=(dashboard_id, process),
            daemon=True,
            name=f"sense-dashboard-{dashboard_id}",
        ).start()
        return {"pid": popen.pid, "start_time": _start_time(popen.pid)}

    def _watch(self, dashboard_id: int, process: _Process) -> None:
        try:
            if process.channel.recv(1) == b"R":
                with process.lock:
                    if not process.handed_over:
                        # Recorded before the job starts, so the job sees itself running.
                        self.on_running(dashboard_id)
                        process.channel.sendall(self._message(dashboard_id, process.job))
                        process.handed_over = True
        except OSError:
            pass  # the engine died before it was ready: its exit code tells
        code = process.popen.wait()
        # The engine ends every process of its job before it exits (see engine.py); if it
        # was killed from outside, what is left of its process group ends here.
        _signal_group(process.popen, signal.SIGKILL)
        Path(self.code_path(dashboard_id)).unlink(missing_ok=True)
        try:
            self.on_exit(dashboard_id, code, process.stopped)
        except Exception as error:  # a full disk, say: one line, not a thread's traceback
            print(
                f"sense: dashboard {dashboard_id} ended (exit code {code}), but its end could "
                f"not be recorded: {error}",
                file=sys.stderr,
            )
        finally:
            process.channel.close()
            process.ended.set()

    def _message(self, dashboard_id: int, job: Job) -> bytes:
        extra = {"file": str(self.code_path(dashboard_id))} if job.code else {}
        if not job.console:
            extra.update(log=str(self.log_path(dashboard_id)), log_cap=self.log_cap)
        return job.message(**extra)

    def _message(self, dashboard_id: int, job: Job) -> bytes:
        extra = {"file": str(self.code_path(dashboard_id))} if job.code else {}
        if not job.console:
            extra.update(log=str(self.log_path(dashboard_id)), log_cap=self.log_cap)
        return job.message(**extra)

    def stop(self, dashboard_id: int) -> None:
        process = self._processes.get(dashboard_id)
        if process is None or process.ended.is_set():
            return
        process.stopped = True
        # The engine signals every process of the job, in whatever group or session.
        _order(process, b"stop\n")
        if not process.ended.wait(self.grace):
            _order(process, b"kill\n")
            if not process.ended.wait(self.grace):
                # The engine itself does not answer (stopped by SIGSTOP?): its group, at least.
                _signal_group(process.popen, signal.SIGKILL)
                process.ended.wait(self.grace)

    def wait(self, dashboard_id: int, timeout: float | None = None) -> int | None:
        process = self._processes.get(dashboard_id)
        if process is None or not process.ended.wait(timeout):
            return None
        return process.popen.returncode

    def interrupt(self, dashboard_id: int) -> None:
        process = self._processes.get(dashboard_id)
        if process is not None:
            _signal_group(process.popen, signal.SIGINT)

    def read_log(self, dashboard_id: int, offset: int = 0) -> tuple[int, Iterator[bytes]]:
        try:
            log = open_no_link(self.log_path(dashboard_id))
        except FileNotFoundError:
            return 0, iter(())
        size = os.fstat(log.fileno()).st_size
        start = min(offset, size) if offset >= 0 else max(0, size + offset)
        log.seek(start)
        return size, _chunks(log, size - start)

    def cleanup(self, handles: Iterable[dict]) -> None:
        for handle in handles:
            pid, started = handle.get("pid"), handle.get("start_time")
            # Without a start time to compare, a reused pid cannot be told apart: leave it.
            if pid and started is not None and _start_time(pid) == started:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)

    def shutdown(self) -> None:
        with self._lock:
            ids = list(self._processes)
        stoppers = [threading.Thread(target=self.stop, args=(i,)) for i in ids]
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join()


def _chunks(log: BinaryIO, length: int) -> Iterator[bytes]:
    """``length`` bytes of ``log`` from where it stands, a chunk at a time; then it is closed."""
    with log:
        while length > 0 and (chunk := log.read(min(CHUNK, length))):
            length -= len(chunk)
            yield chunk


def _order(process: _Process, order: bytes) -> None:
    """Send the engine an order (see engine.py); an idle job first if it has none yet."""
    with process.lock:
        if not process.handed_over:
            # A stop before the job was handed over: none of the job's code ever runs.
            order = Job().message() + order
            process.handed_over = True
        with contextlib.suppress(OSError):  # the engine is gone: it is ending, or has ended
            process.channel.sendall(order)


def _signal_group(popen: subprocess.Popen, signum: int) -> None:
    """Signal the process group that ``popen`` leads, if it still exists.

    Safe against pid reuse: the number is never handed out again while the
    leader is unreaped, nor while any member of its group lives.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, signum)


def _start_time(pid: int) -> str | None:
    """When process ``pid`` started, in clock ticks since boot (Linux), to tell pids apart."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # The command name may hold spaces and parentheses: count fields after its end.
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None
