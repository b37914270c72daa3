"""The built-in backend: every dashboard is a process group on this machine.

Each dashboard runs ``engine.py`` with the server's Python, in its own
session and process group, its output in ``.sense/logs/<id>.log``. The
engine holds one end of a socket pair whose other end is kept here: through
it the engine says it is ready and receives its job, and when this end
closes (the server is gone, even by SIGKILL) the engine ends its group.

Placement is simple here: each dashboard gets its own loopback address
(127.0.0.1 + id on Linux) and one free port.

Example
-------
>>> backend = LocalBackend("/tmp/project", StateDir("/tmp/project"))     # doctest: +SKIP
>>> backend.subscribe(print, print)                                      # doctest: +SKIP
>>> spec = LaunchSpec(1, "worker", context=lambda placement: {}, code="print('hi')")
>>> backend.launch(spec).project_ip                                      # doctest: +SKIP
'127.0.0.2'
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from sense.errors import SenseConfigError
from sense.local.backends import Backend, LaunchSpec, Placement, dashboard_environment
from sense.local.backends.prestart import CannotFork, ForkedProcess, ForkServer
from sense.local.statedir import open_no_link

logger = logging.getLogger("sense.local")

ENGINE = str(Path(__file__).parent.parent / "engine.py")
SERVER_IP = "127.0.0.1"
QUOTA_VARIABLE = "SENSE_LOCAL_MAX_WORKERS"
DEFAULT_ENGINE = "sense-ipython-engine"
#: Bytes a dashboard's log holds before it is set aside and starts anew (see engine.py).
DEFAULT_LOG_CAP = 100 * 1024 * 1024
#: How much of a log one read hands over at a time.
CHUNK = 64 * 1024


@dataclass
class Job:
    """What one dashboard's engine runs: ``code``, else ``script`` with ``argv``, else idles."""

    code: str = ""
    script: str = ""
    argv: list[str] = field(default_factory=list)

    def message(self, **extra) -> bytes:
        """The job as the engine reads it, with ``extra`` fields: one JSON line (see engine.py)."""
        if self.code:
            job = {"code": self.code}
        elif self.script:
            job = {"script": self.script, "argv": self.argv}
        else:
            job = {}
        return json.dumps(job | extra).encode() + b"\n"


@dataclass
class _LogParts:
    """What the backend has seen of one dashboard's log (see :meth:`LocalBackend.read_logs`)."""

    #: The current part's inode, to notice that it was set aside.
    inode: int | None = None
    #: Bytes written before the current part.
    base: int = 0
    current: int = 0
    set_aside: int = 0


@dataclass
class _Process:
    popen: subprocess.Popen | ForkedProcess
    channel: socket.socket
    job: Job
    #: Its message to the engine: the job and where its output goes.
    message: bytes
    stopped: bool = False
    #: Whether the engine has its job (or an idle one, when a stop came first).
    handed_over: bool = False
    #: Orders that came before the job was handed over and go right after it (an interrupt).
    after_job: bytes = b""
    #: Taken to write to ``channel``: the job goes first, then orders.
    lock: threading.Lock = field(default_factory=threading.Lock)
    ended: threading.Event = field(default_factory=threading.Event)


def default_quota() -> int:
    """How many dashboards may run at once: ``SENSE_LOCAL_MAX_WORKERS``, else 4 per CPU, 8 at least.

    Idle workers cost memory, not CPU, so a few per core is safe.
    """
    configured = os.environ.get(QUOTA_VARIABLE, "").strip()
    if configured:
        if not configured.isdigit():
            raise SenseConfigError(f"{QUOTA_VARIABLE} should be a number, not {configured!r}")
        return int(configured)
    return max(8, 4 * (os.cpu_count() or 1))


def project_ip(dashboard_id: int) -> str:
    """A dashboard's own loopback address: 127.0.0.1 + id on Linux (id 7 → 127.0.0.8).

    Every address of 127.0.0.0/8 reaches this machine on Linux, so two
    dashboards can bind the same port, each on its own address. Elsewhere
    only 127.0.0.1 is configured, and dashboards share it.
    """
    if not sys.platform.startswith("linux"):
        return SERVER_IP
    # Stay clear of 127.0.0.1 (the server) and of 127.255.255.255 (broadcast).
    offset = (dashboard_id - 1) % (2**24 - 3) + 1
    return str(ipaddress.IPv4Address(SERVER_IP) + offset)


def free_port() -> int:
    """A TCP port free on every address of this machine at this moment."""
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


class LocalBackend(Backend):
    """Dashboards as process groups on this machine; see the module's description.

    Parameters
    ----------
    python : str
        The interpreter of every dashboard; the server's own by default.
    prestart : bool
        Fork dashboards from a prestarted engine instead of starting a fresh interpreter for
        each (see :mod:`sense.local.backends.prestart`); on by default.
    log_cap : int
        Bytes a dashboard's log may hold before it is set aside (``<id>.log.1``) and starts
        anew; :data:`DEFAULT_LOG_CAP` by default.
    base_env : mapping, optional
        The environment dashboards start from (see
        :func:`~sense.local.backends.dashboard_environment`): ``os.environ`` as it is at each
        launch by default. The Ray backend's agent passes its node's own.

    The other parameters are :class:`~sense.local.backends.Backend`'s; ``max_workers``
    defaults to :func:`default_quota`.
    """

    name = "local"
    offers_ssh = True
    # Every job runs with Python here: an R or JavaScript engine cannot run.
    engine_pattern = "[Pp][Yy][Tt][Hh][Oo][Nn]"

    def __init__(
        self,
        project_dir,
        state,
        *,
        python: str = sys.executable,
        prestart: bool = True,
        log_cap: int | None = None,
        base_env: Mapping[str, str] | None = None,
        **options,
    ) -> None:
        super().__init__(project_dir, state, **options)
        self.base_env = os.environ if base_env is None else base_env
        if self.max_workers is None:
            self.max_workers = default_quota()
        self.python = python
        self.log_cap = DEFAULT_LOG_CAP if log_cap is None else log_cap
        self._processes: dict[int, _Process] = {}
        self._logs: dict[int, _LogParts] = {}
        self._lock = threading.Lock()
        self._forkserver = self._new_forkserver() if prestart else None

    # -- what it accepts -------------------------------------------------------------------------

    def refusal(self, engine: str, size: str | int) -> str | None:
        if super().refusal(engine, size) is not None:
            return (
                f"engine {engine!r} is not available locally: the local server runs Python "
                f"engines only, such as {DEFAULT_ENGINE!r}"
            )
        return None  # a size changes nothing on one machine

    def capacity(self) -> int:
        return self.max_workers

    # -- life cycle ------------------------------------------------------------------------------

    def attach(self, dashboard_id: int) -> Placement:
        pid = os.getpid()
        return self._place(dashboard_id, {"pid": pid, "start_time": _start_time(pid)})

    def launch(self, spec: LaunchSpec) -> Placement:
        job = Job(spec.code, spec.script, list(spec.argv))
        placement = self._place(spec.dashboard_id, {})
        env = dashboard_environment(self.base_env, spec.context(placement), spec.env)
        message = self._message(spec, job)
        with open_no_link(self.state.log_path(spec.dashboard_id), "ab") as log:
            if spec.console:
                log.write(b"(this dashboard's output goes to the console of `sense run`)\n")
            channel, popen = self._fork(spec, env, log) or self._start(spec, env, log)
        process = _Process(popen, channel, job, message)
        with self._lock:
            self._processes[spec.dashboard_id] = process
        threading.Thread(
            target=self._watch,
            args=(spec.dashboard_id, process),
            daemon=True,
            name=f"sense-dashboard-{spec.dashboard_id}",
        ).start()
        placement.handle.update(pid=popen.pid, start_time=_start_time(popen.pid))
        return placement

    def _fork(self, spec: LaunchSpec, env: dict, log) -> tuple[socket.socket, ForkedProcess] | None:
        """Fork the dashboard's engine from the prestarted one: its end of the channel and it.

        None when prestart is off, or when a fork cannot start this dashboard as a fresh
        interpreter would (the server's log says why).
        """
        if self._forkserver is None:
            return None
        try:
            if spec.console:
                raise CannotFork("it shares the console of `sense run`")
            return self._spawn(spec, env, log)
        except CannotFork as reason:
            logger.info("dashboard %d starts in a fresh interpreter: %s", spec.dashboard_id, reason)
            return None

    def _spawn(self, spec: LaunchSpec, env: dict, log) -> tuple[socket.socket, ForkedProcess]:
        with self._lock:
            forkserver = self._forkserver
            unusable = forkserver.unusable(self._forkserver_environment())
            if unusable is not None:
                forkserver.retire()
                self._forkserver = self._new_forkserver()
        if unusable is not None:
            raise CannotFork(f"{unusable}; a new one starts for the next launches")
        with _channel() as (ours, theirs):
            return ours, forkserver.spawn(
                spec.dashboard_id, self.project_dir, env, log.fileno(), theirs.fileno()
            )

    def _new_forkserver(self) -> ForkServer | None:
        """A new prestarted engine; None, and the log says why, if it cannot start."""
        environment = self._forkserver_environment()
        try:
            return ForkServer(self.python, environment, self.state.log_dir / "forkserver.log")
        except OSError as error:
            logger.warning(
                "no prestarted engine (%s): dashboards start in fresh interpreters", error
            )
            return None

    def _forkserver_environment(self) -> dict[str, str]:
        """The environment a prestarted engine starts with: a dashboard's, less its own part."""
        return dashboard_environment(self.base_env, {}, {})

    def _start(self, spec: LaunchSpec, env: dict, log) -> tuple[socket.socket, subprocess.Popen]:
        """Start the dashboard's engine in a fresh interpreter: its end of the channel and it."""
        with _channel() as (ours, theirs):
            return ours, subprocess.Popen(
                [self.python, ENGINE, "--fd", str(theirs.fileno())],
                cwd=self.project_dir,
                env=env,
                stdin=None if spec.console else subprocess.DEVNULL,
                stdout=None if spec.console else log,
                stderr=None if spec.console else subprocess.STDOUT,
                pass_fds=(theirs.fileno(),),
                # Its own process group, so that stopping it reaches everything it started.
                start_new_session=True,
            )

    def _message(self, spec: LaunchSpec, job: Job) -> bytes:
        """The engine's message: the job, and where its output goes (see engine.py)."""
        extra = {}
        if not spec.console:
            extra.update(log=str(self.state.log_path(spec.dashboard_id)), log_cap=self.log_cap)
        return job.message(**extra)

    def _place(self, dashboard_id: int, handle: dict) -> Placement:
        port = free_port()
        return Placement({"backend": self.name, **handle}, project_ip(dashboard_id), {port: port})

    def _watch(self, dashboard_id: int, process: _Process) -> None:
        try:
            if process.channel.recv(1) == b"R":
                with process.lock:
                    if not process.handed_over:
                        # Recorded before the job starts, so the job sees itself running.
                        self.report_running(dashboard_id)
                        process.channel.sendall(process.message + process.after_job)
                        process.handed_over = True
        except OSError:
            pass  # the engine died before it was ready: its exit code tells
        code = process.popen.wait()
        if code is None:
            # Forked by a prestarted engine that died first: its exit status is lost with it,
            # and its end is when its channel closes.
            _wait_for_end_of_file(process.channel)
        # The engine ends every process of its job before it exits (see engine.py); if it
        # was killed from outside, what is left of its process group ends here.
        _signal_group(process.popen, signal.SIGKILL)
        try:
            self.report_exit(dashboard_id, code, "stopped" if process.stopped else "exited")
        finally:
            process.channel.close()
            process.ended.set()

    def stop(self, dashboard_id: int) -> None:
        process = self._processes.get(dashboard_id)
        if process is None or process.ended.is_set():
            return
        process.stopped = True
        # SIGTERM to the job's own process, then to every process of the job (in whatever
        # group or session), then SIGKILL, a grace apart: a process that owns others, as
        # dask's Nanny owns its worker, ends them its way first (docs/local.md, "Stopping").
        for order in (b"stop\n", b"term\n", b"kill\n"):
            _order(process, order, ends_job=True)
            if process.ended.wait(self.grace):
                return
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
        if process is not None and not process.ended.is_set():
            # Through the engine, not to the process group: a SIGINT that came while the
            # engine was forking its job would reach the engine alone, which ignores it.
            _order(process, b"interrupt\n", ends_job=False)

    # -- output ----------------------------------------------------------------------------------

    def read_logs(
        self, dashboard_id: int, offset: int = 0, limit: int | None = None
    ) -> Iterator[bytes]:
        """See :meth:`Backend.read_logs`; offsets count every byte the dashboard wrote.

        A log that reached its cap was set aside as ``<id>.log.1`` (see engine.py): what is
        kept of it comes first, so that a follower misses nothing when the log starts anew.
        """
        parts = self._log_parts(dashboard_id)
        end = parts.base + parts.current
        start = max(0, end + offset) if offset < 0 else offset
        start = max(start, parts.base - parts.set_aside)  # what is older is gone
        left = end - start if limit is None else min(limit, end - start)
        current = self.state.log_path(dashboard_id)
        for path, first, size in (
            (_set_aside(current), parts.base - parts.set_aside, parts.set_aside),
            (current, parts.base, parts.current),
        ):
            if left <= 0 or start >= first + size:
                continue
            for chunk in _read(path, start - first, min(left, first + size - start)):
                start += len(chunk)
                left -= len(chunk)
                yield chunk

    def log_size(self, dashboard_id: int) -> int:
        parts = self._log_parts(dashboard_id)
        return parts.base + parts.current

    def _log_parts(self, dashboard_id: int) -> _LogParts:
        """The parts of a dashboard's log now, and the bytes written before the current one.

        A new current part (another inode) means the last one was set aside meanwhile: its
        bytes now come before. (Two caps reached between two looks count as one.)
        """
        current = self.state.log_path(dashboard_id)
        now, aside = _stat(current), _stat(_set_aside(current))
        with self._lock:
            seen = self._logs.setdefault(dashboard_id, _LogParts())
            if now is not None and now.st_ino != seen.inode:
                seen.base += aside.st_size if aside is not None else 0
                seen.inode = now.st_ino
            seen.current = now.st_size if now is not None else 0
            seen.set_aside = aside.st_size if aside is not None else 0
            return replace(seen)

    # -- the end ---------------------------------------------------------------------------------

    @classmethod
    def recover(cls, handles: Iterable[dict]) -> None:
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
        if self._forkserver is not None:
            self._forkserver.close()


@contextlib.contextmanager
def _channel() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A dashboard's socket pair: the server's end, and the end its engine is started with.

    The engine's end is closed here once the block has handed it over: only the engine may
    hold it, so that the server's end closing means end of file there. The server's end is
    closed too if the block fails: an engine started after all then finds it closed, and ends.
    """
    ours, theirs = socket.socketpair()
    try:
        yield ours, theirs
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()


def _set_aside(log: Path) -> Path:
    """Where a log that reached its cap was moved."""
    return log.with_name(log.name + ".1")


def _stat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _read(path: Path, offset: int, length: int) -> Iterator[bytes]:
    """``length`` bytes of ``path`` from ``offset``, a chunk at a time (fewer if it is shorter)."""
    try:
        log = open_no_link(path)
    except FileNotFoundError:
        return
    with log:
        log.seek(offset)
        while length > 0 and (chunk := log.read(min(CHUNK, length))):
            length -= len(chunk)
            yield chunk


def _order(process: _Process, order: bytes, *, ends_job: bool) -> None:
    """Send the engine an order (see engine.py).

    Before the job was handed over, an order that ``ends_job`` goes with an idle job instead
    (none of the job's code ever runs); another waits to go right after the job.
    """
    with process.lock:
        if not process.handed_over:
            if not ends_job:
                process.after_job += order
                return
            order = Job().message() + order
            process.handed_over = True
        with contextlib.suppress(OSError):  # the engine is gone: it is ending, or has ended
            process.channel.sendall(order)


def _wait_for_end_of_file(channel: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while channel.recv(4096):
            pass


def _signal_group(popen: subprocess.Popen | ForkedProcess, signum: int) -> None:
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
