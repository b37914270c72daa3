"""The keeper of one SSH session's processes: they end with their dashboard, or with the server.

The SSH server starts it by file path with its own Python, on the session's
standard input, output and error (pipes, or a terminal with ``--tty``)::

    python -I .../sense/local/sshd/reaper.py --fd 5 [--tty] -- /bin/bash -c 'make test'

so that nothing but the standard library is imported. It

1. becomes a child subreaper (Linux): whatever the command starts stays its
   descendant, even after a double fork or ``setsid`` (``nohup cmd &``);
2. runs the command in a new session (with the terminal as its controlling
   terminal under ``--tty``), then lets go of the session's streams itself,
   so that the client sees their end when the command's processes close them;
3. writes the command's exit code to fd ``--fd`` as one line (``-9``: SIGKILL);
4. stays until every descendant has ended: what the command left running
   belongs to the dashboard, not to the SSH connection;
5. when fd ``--fd`` reaches end of file (the server closed it because the
   dashboard ended, or the server died, even by SIGKILL), kills every
   descendant, whatever process group or session it moved to.
"""

import contextlib
import ctypes
import fcntl
import os
import signal
import socket
import subprocess
import sys
import termios
import threading
import time

PR_SET_CHILD_SUBREAPER = 36
COMMAND_NOT_FOUND = 127


def _become_subreaper():
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _take_terminal():
    """In the command's process, a session leader by now: make stdin its controlling terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _let_go_of_streams():
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def _descendants():
    """The pids of every process whose chain of parents leads to this one (from /proc)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as stat:
                    # The command name may hold spaces and parentheses: count fields after its end.
                    parents[int(entry)] = int(stat.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # it ended while we looked
    found, generation = set(), {os.getpid()}
    while generation:
        generation = {pid for pid, parent in parents.items() if parent in generation} - found
        found |= generation
    return found


def _kill_all_at_eof(channel):
    """Block until the server's end closes, then SIGKILL every descendant until none is left.

    The main thread reaps them; as a subreaper this process inherits whatever a
    dying descendant leaves behind, so the next round finds it.
    """
    try:
        while channel.recv(64):
            pass
    except OSError:
        pass  # a server that died may reset the connection: the same news
    while True:
        for pid in _descendants():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def main(argv):
    split = argv.index("--")
    options, command = argv[1:split], argv[split + 1 :]
    channel = socket.socket(fileno=int(options[options.index("--fd") + 1]))
    _become_subreaper()
    try:
        child = subprocess.Popen(
            command,
            start_new_session=True,
            preexec_fn=_take_terminal if "--tty" in options else None,
        )
    except OSError as error:
        print(f"{command[0]}: {error.strerror}", file=sys.stderr, flush=True)
        channel.sendall(b"%d\n" % COMMAND_NOT_FOUND)
        return 0
    _let_go_of_streams()
    threading.Thread(target=_kill_all_at_eof, args=(channel,), daemon=True).start()
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 0  # no child left, so no descendant either: all is over
        if pid == child.pid:
            # An error here means the server no longer listens: the session is closed already.
            with contextlib.suppress(OSError):
                channel.sendall(b"%d\n" % os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
