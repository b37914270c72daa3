"""The prestarted engine: an interpreter that is already up forks one dashboard per request.

The local backend (``sense/local/backends/prestart.py``) starts it by file
path with the server's Python, like the engine itself::

    python .../sense/local/forkserver.py --fd 5

so it imports nothing of ``sense`` nor of the server stack: only the engine
(``engine.py`` beside it, on ``sys.path`` as this file's directory), what
the engine imports, and the codec of host-name lookups (see :func:`main`).
Standard library only, and single-threaded, so that a fork copies one
consistent thread.

File descriptor ``--fd`` is a Unix socket of type ``SOCK_SEQPACKET`` (one
message per request or answer) whose other end the server holds.

- A request is a JSON object ``{"id": dashboard id, "cwd": ..., "env": {...}}``
  with two file descriptors passed along (``SCM_RIGHTS``): the dashboard's
  log, and the engine's end of the dashboard's own socket pair (its channel
  to the server, see ``engine.py``). The answer is ``{"id": ..., "pid": ...}``
  once the child is forked.
- When a child ends, the message ``{"exited": pid, "returncode": ...}`` says
  so, its return code as ``subprocess.Popen`` gives it: the exit status, or
  minus the signal that killed it.
- Once up, it says where its interpreter found packages at start-up, with
  each directory's modification time (None if missing):
  ``{"sites": {directory: mtime_ns}}``; a package installed or removed
  since then makes the server start a new prestarted engine.
- End of file (the server is gone, even by SIGKILL, or it has no more
  requests): no more forks; it exits once its children have ended and been
  reported, or at once if the server can no longer be told. A forked engine
  holds its own channel to the server and ends its group when that closes,
  as every engine does.

The child becomes what ``python engine.py --fd N`` would be: its own
session and process group, the dashboard's working directory and
environment, stdin from ``/dev/null``, stdout and stderr to its log, no
descriptor but the channel, ``sys.argv`` as the engine's; then the engine
runs, already loaded here, and its job ends as Python ends (see
``engine.py``). The ``random`` module reseeds itself at fork. What a fork
cannot change is what an interpreter reads once when it starts, the hash
seed of ``str`` among it: the backend starts a fresh interpreter when a
dashboard's environment sets such a variable (docs/local.md, "The
prestarted engine").
"""

import gc
import json
import os
import select
import signal
import site
import socket
import sys

import engine  # loaded once here, with what it imports, for every child

#: The engine's channel, where a fresh engine would find its ``--fd``.
CHANNEL_FD = 3
#: The largest request: the socket's send buffer bounds a message anyway.
MAX_REQUEST = 1 << 20


def serve(server):
    """Fork a child per request until end of file and no children left; return in the parent.

    In a child this never returns: :func:`_become_engine` ends the process.
    """
    wakeup_read, wakeup_write = os.pipe()
    os.set_blocking(wakeup_write, False)
    signal.set_wakeup_fd(wakeup_write)
    # A Python handler, so that SIGCHLD writes to the wakeup descriptor.
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    children = set()
    accepting = True
    while accepting or children:
        watched = [server, wakeup_read] if accepting else [wakeup_read]
        readable, _, _ = select.select(watched, [], [])
        if wakeup_read in readable:
            os.read(wakeup_read, 4096)
            if not _report_ended(server, children):
                return  # the server can no longer be told
        if server not in readable:
            continue
        message, fds, _, _ = socket.recv_fds(server, MAX_REQUEST, 2)
        if not message:
            accepting = False
            continue
        request = json.loads(message)
        log_fd, channel_fd = fds
        try:
            pid = os.fork()
        except OSError as error:  # out of processes or memory: the launch fails, as Popen's would
            answer = {"id": request["id"], "error": str(error)}
        else:
            if pid == 0:
                _become_engine(request, log_fd, channel_fd, (server, wakeup_read, wakeup_write))
            children.add(pid)
            answer = {"id": request["id"], "pid": pid}
        os.close(log_fd)
        os.close(channel_fd)
        _tell(server, answer)


def _site_directories():
    """Where this interpreter looked for packages (and their ``.pth`` files) when it started."""
    directories = site.getsitepackages()
    if site.ENABLE_USER_SITE:
        directories.append(site.getusersitepackages())
    return {directory: _modified(directory) for directory in directories}


def _modified(path):
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _report_ended(server, children):
    """Reap every child that has ended and report it; False if the server cannot be told."""
    while children:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            return True
        children.discard(pid)
        if not _tell(server, {"exited": pid, "returncode": os.waitstatus_to_exitcode(status)}):
            return False
    return True


def _tell(server, message):
    try:
        server.send(json.dumps(message).encode())
    except OSError:  # the server is gone
        return False
    return True


def _become_engine(request, log_fd, channel_fd, forkserver_fds):
    """In a forked child: become ``python engine.py --fd N`` for the request. Never returns."""
    server, wakeup_read, wakeup_write = forkserver_fds
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    server.close()
    os.close(wakeup_read)
    os.close(wakeup_write)
    os.setsid()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(null)
    os.close(log_fd)
    if channel_fd != CHANNEL_FD:
        os.dup2(channel_fd, CHANNEL_FD)
        os.close(channel_fd)
    # Whatever else this process might hold is not the dashboard's.
    os.closerange(CHANNEL_FD + 1, os.sysconf("SC_OPEN_MAX"))
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    argv = [engine.__file__, "--fd", str(CHANNEL_FD)]
    sys.argv = argv
    sys.orig_argv = [sys.orig_argv[0], *argv]
    # A module of the project may be called `engine` too: it must not find this one.
    del sys.modules["engine"]
    sys.exit(engine.run(argv))  # as `python engine.py` does (see its end)


def main(argv):
    server = socket.socket(fileno=int(argv[argv.index("--fd") + 1]))
    # What the engine loads on the way to its job, loaded once here for every child:
    # runpy for a script, the C library for prctl (2 ms a dashboard otherwise). And the codec
    # of every host name a socket looks up, which a worker's first connection (to its master,
    # say) would load: 2 ms a dashboard too.
    import encodings.idna  # noqa: F401
    import runpy  # noqa: F401

    engine.load_libc()

    # What exists by now lives as long as the process: a child's garbage collections skip it,
    # so that they do not copy the pages it is on.
    gc.freeze()
    if _tell(server, {"sites": _site_directories()}):
        serve(server)


if __name__ == "__main__":
    main(sys.argv)
