"""Dashboards forked from a prestarted engine (``forkserver.py``) instead of fresh interpreters.

A fresh interpreter costs every dashboard tens of milliseconds of CPU before
its first line; a fork of one that is already up costs a few (docs/local.md,
"The prestarted engine"). :class:`ForkServer` starts the prestarted engine and
holds its socket; a thread reads its answers, and the exit status of every
child it forked, which is reaped there.

Example
-------
>>> forkserver = ForkServer(sys.executable, environment, "/tmp/forkserver.log")   # doctest: +SKIP
>>> child = forkserver.spawn(7, "/tmp/project", environment, log_fd, channel_fd)   # doctest: +SKIP
>>> child.wait()                                                                  # doctest: +SKIP
0
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path

from sense.local.statedir import open_no_link

logger = logging.getLogger("sense.local")

FORKSERVER = str(Path(__file__).parent.parent / "forkserver.py")
#: What an interpreter, or the C library and the dynamic linker under it, reads once at start:
#: a fork keeps the prestarted engine's, so a dashboard that asks for other values cannot be one.
STARTUP_PREFIXES = ("PYTHON", "LC_", "LD_", "MALLOC_")
STARTUP_NAMES = ("LANG", "TZ", "HOME", "GLIBC_TUNABLES")
#: Seconds the prestarted engine gets to exit once it is told to (its children are stopped by then).
CLOSE_TIMEOUT = 5.0


class CannotFork(Exception):
    """This dashboard is not forked from the prestarted engine; the message says why."""


class ForkedProcess:
    """A dashboard forked by the prestarted engine: what the backend uses of ``subprocess.Popen``.

    The prestarted engine is its parent: it reaps it and reports the exit
    status, which :meth:`wait` returns (minus the signal that killed it, as
    ``Popen.returncode``). If the prestarted engine dies first, the status is
    lost: :meth:`wait` returns None.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._ended = threading.Event()

    def wait(self) -> int | None:
        """Wait for it to end; its return code, or None if that was lost."""
        self._ended.wait()
        return self.returncode

    def _end(self, returncode: int | None) -> None:
        self.returncode = returncode
        self._ended.set()

    def __repr__(self) -> str:
        return f"<ForkedProcess {self.pid} returncode={self.returncode}>"


class _Answer:
    """What the prestarted engine answered to one request: a ForkedProcess, or why not."""

    def __init__(self) -> None:
        self._given = threading.Event()
        self._value: ForkedProcess | CannotFork | None = None

    def give(self, value: ForkedProcess | CannotFork) -> None:
        self._value = value
        self._given.set()

    def take(self) -> ForkedProcess:
        self._given.wait()
        if isinstance(self._value, CannotFork):
            raise self._value
        return self._value


class ForkServer:
    """A prestarted engine, ready to fork dashboards.

    Parameters
    ----------
    python : str
        Its interpreter, the one a fresh dashboard would run.
    environment : mapping
        Its environment: what a dashboard's must agree with on :data:`STARTUP_PREFIXES`
        and :data:`STARTUP_NAMES` to be forked.
    log_path : path
        Where its own output goes (nothing, unless it fails).
    """

    def __init__(self, python: str, environment: Mapping[str, str], log_path) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            # 0600 and no symbolic link, whatever the umask: .sense/ holds only such files.
            with open_no_link(log_path, "ab") as log:
                self.process = subprocess.Popen(
                    [python, FORKSERVER, "--fd", str(theirs.fileno())],
                    cwd="/",
                    env=dict(environment),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    pass_fds=(theirs.fileno(),),
                    # Out of reach of the terminal's Ctrl-C, as every dashboard is.
                    start_new_session=True,
                )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.environment = dict(environment)
        self.log_path = log_path
        self._socket = ours
        self._lock = threading.Lock()
        # Sending, and retiring, one at a time: nothing is sent once it is retired.
        self._sending = threading.Lock()
        self._waiting: dict[int, _Answer] = {}
        self._children: dict[int, ForkedProcess] = {}
        self._sites: dict[str, int | None] = {}
        self._retired = False
        self._gone = False
        self._reader = threading.Thread(
            target=self._read, daemon=True, name=f"sense-forkserver-{self.process.pid}"
        )
        self._reader.start()

    def unusable(self, environment: Mapping[str, str]) -> str | None:
        """Why it should fork nothing more, or None; ``environment`` is the one a prestarted
        engine would start with now.

        It has ended; packages were installed or removed since it started, which a fresh
        interpreter would see (a new ``.pth`` file, a user site directory made since); or the
        server's own environment changed a variable read at start (a library of the server's
        process may set ``os.environ["PYTHONHASHSEED"]``, as dask's does), so that every
        dashboard's would differ from its own.
        """
        if self._gone:
            return "the prestarted engine has ended"
        for directory, modified in self._sites.items():
            if _modified(directory) != modified:
                return f"packages changed in {directory} since the prestarted engine started"
        difference = _startup_difference(environment, self.environment)
        if difference is not None:
            return (
                f"the server's environment now {difference}, which is read once when an "
                "interpreter starts"
            )
        return None

    def refusal(self, env: Mapping[str, str]) -> str | None:
        """Why a dashboard with environment ``env`` cannot be forked from it, or None."""
        difference = _startup_difference(env, self.environment)
        if difference is not None:
            return f"its environment {difference}, which is read once when an interpreter starts"
        return None

    def spawn(
        self, dashboard_id: int, cwd: str, env: Mapping[str, str], log_fd: int, channel_fd: int
    ) -> ForkedProcess:
        """Fork the engine of a dashboard; return once it exists.

        ``log_fd`` becomes its stdout and stderr, ``channel_fd`` its channel to the server.

        Raises
        ------
        CannotFork
            Its environment differs where a fork cannot follow, the request is too large for
            the socket, the fork failed, or the prestarted engine forks nothing more (it has
            ended, or is retired).
        """
        reason = self.refusal(env)
        if reason is not None:
            raise CannotFork(reason)
        request = json.dumps({"id": dashboard_id, "cwd": cwd, "env": dict(env)}).encode()
        answer = _Answer()
        with self._sending:
            with self._lock:
                if self._gone or self._retired:
                    raise CannotFork("the prestarted engine forks nothing more")
                self._waiting[dashboard_id] = answer
            try:
                socket.send_fds(self._socket, [request], [log_fd, channel_fd])
            except OSError as error:
                with self._lock:
                    self._waiting.pop(dashboard_id, None)
                if error.errno == errno.EMSGSIZE:
                    raise CannotFork(
                        f"its environment is too large to hand over in one message "
                        f"({len(request)} bytes)"
                    ) from None
                raise CannotFork(f"the prestarted engine cannot be reached: {error}") from None
        return answer.take()

    def retire(self) -> None:
        """Fork nothing more; it ends once its children have, whose exit statuses still come."""
        with self._sending:
            self._retired = True
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        """Retire it, and wait until it has ended: its children are expected to have ended."""
        self.retire()
        self._reader.join(CLOSE_TIMEOUT)
        if self._reader.is_alive():  # a child outlived its stop: its status will not be known
            self.process.kill()
            self._reader.join()

    def _read(self) -> None:
        try:
            while message := self._socket.recv(4096):
                self._take(json.loads(message))
        except OSError:
            pass
        finally:
            with self._sending:  # no request may go out on a number the socket no longer owns
                self._socket.close()
            # At end of file it has exited, or is about to; after anything else, it is of no use.
            self.process.kill()
            returncode = self.process.wait()
            with self._lock:
                self._gone = True
                waiting, self._waiting = self._waiting, {}
                orphans, self._children = self._children, {}
            ended = CannotFork(f"the prestarted engine ended (exit status {returncode})")
            for answer in waiting.values():
                answer.give(ended)
            if not self._retired:
                logger.warning(
                    "the prestarted engine (pid %d) ended with exit status %d (its output: %s); "
                    "the exit status of the %d dashboards it had started will not be known, and "
                    "the next launch starts a new one",
                    self.process.pid,
                    returncode,
                    self.log_path,
                    len(orphans),
                )
            for child in orphans.values():
                child._end(None)

    def _take(self, message: dict) -> None:
        """Hand over the answer to a request, or the end of a child; or note its sites."""
        if "sites" in message:
            self._sites = message["sites"]
            return
        if "exited" in message:
            with self._lock:
                child = self._children.pop(message["exited"], None)
            if child is not None:
                child._end(message["returncode"])
            return
        with self._lock:
            answer = self._waiting.pop(message["id"])
            if "pid" in message:
                child = self._children[message["pid"]] = ForkedProcess(message["pid"])
        if "pid" in message:
            answer.give(child)
        else:
            answer.give(CannotFork(f"the prestarted engine could not fork: {message['error']}"))


def _startup_difference(environment: Mapping[str, str], started: Mapping[str, str]) -> str | None:
    """How ``environment`` differs from ``started`` on what an interpreter reads as it starts
    (``"sets NAME"``, ``"leaves out NAME"``: the first such name), or None."""
    for name in sorted({*environment, *started}):
        if not (name.startswith(STARTUP_PREFIXES) or name in STARTUP_NAMES):
            continue
        if environment.get(name) != started.get(name):
            return f"{'sets' if name in environment else 'leaves out'} {name}"
    return None


def _modified(path: str) -> int | None:
    """When ``path`` was last modified, in nanoseconds; None if it does not exist."""
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None
