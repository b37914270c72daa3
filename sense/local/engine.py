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

The job runs in this process as Python would run it: startup code as
``python -c CODE`` (its own ``__main__`` module, ``sys.argv == ["-c"]``), a
script as ``python SCRIPT`` (``__file__``, its directory first on
``sys.path``), with the project directory (the working directory) on
``sys.path`` too. The process ends when the job ends, and as Python would
end it: exit status 0, the job's own ``SystemExit`` status, or 1 after an
uncaught exception (its traceback goes to the log). Without a job it idles
until stopped. SIGTERM becomes ``SystemExit(143)`` so that ``finally``
blocks and ``atexit`` handlers of the job still run when it is stopped.
"""

import builtins
import importlib.machinery
import io
import json
import os
import signal
import socket
import sys
import threading
import types

STOPPED_BY_SIGTERM = 128 + signal.SIGTERM


def _kill_group_at_eof(channel):
    """Block until the server's end closes, then end this process group."""
    while channel.read(1):
        pass
    os.killpg(os.getpgrp(), signal.SIGKILL)


def _terminate(signum, frame):
    sys.exit(STOPPED_BY_SIGTERM)


def _run_job(job):
    """Run the job as ``__main__``; its ``SystemExit`` or error ends this process as in Python."""
    if "code" in job:
        _run_code(job["code"], job.get("file"))
    elif "script" in job:
        _run_script(job["script"], job.get("argv", []))
    else:
        while True:
            signal.pause()


def _run_code(source, saved_at):
    """Run ``source`` as ``python -c SOURCE`` would.

    Its module is ``__main__`` in ``sys.modules`` (pickle finds what it defines) and
    ``sys.argv`` is ``["-c"]``. ``saved_at``, the same code in a file, is the module's
    ``__file__`` for multiprocessing alone (see :func:`_code_module`).
    """
    sys.argv = ["-c"]
    code = compile(source, "<startup_code>", "exec")
    main = _code_module(saved_at)
    sys.modules["__main__"] = main
    exec(code, main.__dict__)


def _code_module(saved_at):
    """An empty ``__main__`` whose globals hold no ``__file__``, as under ``python -c``.

    The module object answers ``__file__`` all the same: multiprocessing's
    spawn and forkserver methods read it to re-create ``__main__`` in their
    processes, so that functions the code defines reach a ``Pool`` there.
    """

    class CodeModule(types.ModuleType):
        __file__ = property(lambda module: saved_at)

    main = CodeModule("__main__")
    main.__builtins__ = builtins
    return main


def _run_script(path, argv):
    """Run the script at ``path`` as ``python PATH ARGV...`` would.

    ``sys.argv[0]`` is the path as given, ``__file__`` the absolute path, and
    the script's directory comes first on ``sys.path`` (the project directory
    stays next, as the README promises).
    """
    sys.argv = [path, *argv]
    absolute = os.path.abspath(path)
    sys.path.insert(0, os.path.dirname(os.path.realpath(path)))
    with io.open_code(absolute) as file:
        code = compile(file.read(), absolute, "exec")
    main = types.ModuleType("__main__")
    main.__dict__.update(
        __file__=absolute,
        __cached__=None,
        __builtins__=builtins,
        __loader__=importlib.machinery.SourceFileLoader("__main__", absolute),
    )
    sys.modules["__main__"] = main
    exec(code, main.__dict__)


def _report_uncaught(kind, error, trace):
    """Python's own report of an uncaught exception, without this engine's frames."""
    while trace is not None and trace.tb_frame.f_code.co_filename == __file__:
        trace = trace.tb_next
    # Python shows the traceback the exception carries, whatever the argument says.
    sys.__excepthook__(kind, error.with_traceback(trace), trace)


def main(argv):
    fd = int(argv[argv.index("--fd") + 1])
    signal.signal(signal.SIGTERM, _terminate)
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
    # Python itself ends the process after the job, as after `python -c`: it reports an
    # uncaught exception (exit status 1), prints a sys.exit() message, and flushes the
    # standard streams only if the job left them open.
    sys.excepthook = _report_uncaught
    sys.exit(main(sys.argv))
