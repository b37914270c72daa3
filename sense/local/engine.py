"""The worker bootstrap: what runs inside every dashboard process of the local server.

The supervisor starts it by file path with the server's Python::

    python .../sense/local/engine.py --fd 5

so that neither ``sense`` nor anything of the server stack is imported: a
worker starts about as fast as bare Python. Standard library only.

File descriptor ``--fd`` is this end of a socket pair whose other end the
server holds for the dashboard's whole life. Over it the engine

1. says ``R`` (ready), then reads one JSON line: the job
   (``{"code": ...}``, ``{"script": ..., "argv": [...]}`` or ``{}`` to idle);
2. watches it until end of file. The server never writes again, so end of
   file means the server is gone (even by SIGKILL): the engine then kills
   its whole process group, so that no worker outlives its server.

The job runs as ``__main__`` in this process, with the project directory
(the working directory) first on ``sys.path``. The process ends when the job
ends: exit status 0, the job's own ``SystemExit`` status, or 1 after an
uncaught exception (its traceback goes to the log). Without a job it idles
until stopped. SIGTERM becomes ``SystemExit(143)`` so that ``finally``
blocks and ``atexit`` handlers of the job still run when it is stopped.
"""

import json
import os
import signal
import socket
import sys
import threading

STOPPED_BY_SIGTERM = 128 + signal.SIGTERM


def _kill_group_at_eof(channel):
    """Block until the server's end closes, then end this process group."""
    while channel.read(1):
        pass
    os.killpg(os.getpgrp(), signal.SIGKILL)


def _terminate(signum, frame):
    sys.exit(STOPPED_BY_SIGTERM)


def _run_job(job):
    """Run the job as ``__main__``; return the exit status."""
    import runpy

    try:
        if "code" in job:
            sys.argv = ["-c"]
            code = compile(job["code"], "<startup_code>", "exec")
            exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
        elif "script" in job:
            sys.argv = [job["script"], *job.get("argv", [])]
            # As `python SCRIPT` would, so that modules beside the script import too.
            sys.path.insert(1, os.path.dirname(os.path.abspath(job["script"])))
            runpy.run_path(job["script"], run_name="__main__")
        else:
            while True:
                signal.pause()
    except SystemExit as stop:
        return _exit_status(stop.code)
    except BaseException as error:
        import traceback  # only when needed: it costs every worker's start-up 4 ms

        # Leave out this engine's own frame: the user's code is what matters.
        traceback.print_exception(type(error), error, error.__traceback__.tb_next)
        return 128 + signal.SIGINT if isinstance(error, KeyboardInterrupt) else 1
    return 0


def _exit_status(code):
    """The process exit status that ``sys.exit(code)`` would give."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def main(argv):
    fd = int(argv[argv.index("--fd") + 1])
    signal.signal(signal.SIGTERM, _terminate)
    # Ray starts its processes with SIGINT blocked, and a process inherits that: on a Ray
    # node, Ctrl-C (an interrupt) would never reach the job.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    sock = socket.socket(fileno=fd)
    channel = sock.makefile("rb")
    sock.sendall(b"R")
    line = channel.readline()
    if not line:
        return 1  # the server went away before handing over the job
    job = json.loads(line)
    threading.Thread(target=_kill_group_at_eof, args=(channel,), daemon=True).start()
    # The project directory replaces this file's directory as the first import path.
    sys.path[0] = os.getcwd()
    return _run_job(job)


if __name__ == "__main__":
    status = main(sys.argv)
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(status)
