"""One shell or command of an SSH session, run on this machine through the reaper.

The reaper (``reaper.py``) owns everything the command starts: :meth:`Command.end`
ends all of it, and so does the death of the server, whose end of the
reaper's control socket then closes by itself.

Example
-------
>>> command, streams = await Command.start(["true"], cwd=".", env={})  # doctest: +SKIP
>>> await command.exit_code()                                           # doctest: +SKIP
0
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import socket
import struct
import sys
import termios
from dataclasses import dataclass
from pathlib import Path

REAPER = str(Path(__file__).with_name("reaper.py"))


@dataclass
class Streams:
    """The server's ends of a session's standard streams (file descriptors).

    With a terminal, ``stdout`` carries standard error too, and ``stderr`` is None.
    """

    stdin: int
    stdout: int
    stderr: int | None


class Command:
    """A command running in the reaper; see :meth:`start`."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        control: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self.process = process
        self._reports, self._control = control

    @classmethod
    async def start(
        cls,
        argv: list[str],
        *,
        cwd: str,
        env: dict[str, str],
        terminal_size: tuple[int, int] | None = None,
    ) -> tuple[Command, Streams]:
        """Start ``argv`` in ``cwd`` with exactly ``env``, on a new terminal of
        ``terminal_size`` (columns, rows) or on pipes; return it and the server's ends of its
        streams, which the caller closes (or hands to something that does)."""
        ours, theirs = socket.socketpair()
        if terminal_size is not None:
            server_end, child_end = os.openpty()
            _set_size(child_end, *terminal_size)
            streams = Streams(os.dup(server_end), server_end, None)
            child_fds = [child_end]
            stdio = (child_end, child_end, child_end)
        else:
            (in_r, in_w), (out_r, out_w), (err_r, err_w) = os.pipe(), os.pipe(), os.pipe()
            streams = Streams(in_w, out_r, err_r)
            child_fds = [in_r, out_w, err_w]
            stdio = (in_r, out_w, err_w)
        tty = ["--tty"] if terminal_size is not None else []
        try:
            process = await asyncio.create_subprocess_exec(
                # -I: the dashboard's PYTHONPATH and the like must not reach the reaper itself.
                *(sys.executable, "-I", REAPER, "--fd", str(theirs.fileno()), *tty, "--", *argv),
                stdin=stdio[0],
                stdout=stdio[1],
                stderr=stdio[2],
                cwd=cwd,
                env=env,
                pass_fds=(theirs.fileno(),),
            )
        except BaseException:
            ours.close()
            for fd in {streams.stdin, streams.stdout, streams.stderr} - {None}:
                os.close(fd)
            raise
        finally:
            # Only the reaper may hold these: their closing is what ends the session.
            theirs.close()
            for fd in child_fds:
                os.close(fd)
        return cls(process, await asyncio.open_connection(sock=ours)), streams

    async def exit_code(self) -> int | None:
        """The command's exit code (negative: the signal that ended it); None if it was ended
        with its dashboard before it could report one."""
        line = await self._reports.readline()
        return int(line) if line.strip() else None

    def end(self) -> None:
        """Kill the command and all it started (the reaper does, on seeing its socket close)."""
        self._control.close()

    async def wait(self) -> None:
        """Until the reaper has exited, which is when the last of the session's processes has."""
        await self.process.wait()
        self._control.close()


def _set_size(terminal_fd: int, columns: int, rows: int) -> None:
    fcntl.ioctl(terminal_fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
