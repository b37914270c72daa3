"""The worker bootstrap: what runs inside every dashboard process of the local server.

The local backend starts it by file path with the server's Python::

    python .../sense/local/engine.py --fd 5

so that neither ``sense`` nor anything of the server stack is imported: a
worker starts about as fast as bare Python. Standard library only.

Two processes: the guardian and the job
---------------------------------------
Once it has its job, the engine forks. The child runs the job; the parent,
the *guardian*, stays small and answers the server whatever the job does (it
may ignore SIGTERM, hold the GIL, or end by ``os._exit``). On Linux the
guardian is a child subreaper (``prctl(PR_SET_CHILD_SUBREAPER)``): every
process the job starts stays below it, whatever session or process group it
moves to, since orphans come back to the guardian instead of to init. When
the job has ended, the guardian kills every process still below it, reaps
them, and only then exits, with the job's exit status: nothing started by a
dashboard outlives it. Outside Linux, the process group is what the guardian
and the server can reach.

Not covered: a SIGKILL of the guardian itself. The job dies with it
(``PR_SET_PDEATHSIG``) and the server kills the process group, but a
process of the job that left the group lives on.

The channel
-----------
File descriptor ``--fd`` is this end of a socket pair whose other end the
server holds for the dashboard's whole life. Over it the engine

1. says ``R`` (ready), then reads one JSON line: the job
   (``{"code": ...}``, ``{"script": ..., "argv": [...]}`` or
   ``{}`` to idle), and ``"log"`` and ``"log_cap"`` unless the job's output
   goes to a console (when they are given, the guardian copies the job's
   output into that log: see :class:`_Log`);
2. reads orders, one a line: ``stop`` (SIGTERM to the job's own process, so
   that a process that owns others ends them its way), ``term`` (SIGTERM to
   every process of the job) or ``kill`` (SIGKILL to every one), which a stop
   sends one after the other, a grace period apart, until the job has ended
   (see docs/local.md, "Stopping"), and ``interrupt`` (SIGINT, Ctrl-C, to every
   one). End of file means the server is gone (even by SIGKILL): every
   process of the job is killed. An order that comes before the job is forked
   is carried out once it is: none is lost.

The job
-------
It runs as Python would run it: startup code as ``python -c CODE`` (its
own ``__main__`` module, ``sys.argv == ["-c"]``), a script as ``python
SCRIPT`` (``__file__``, its directory first on ``sys.path``), with the
project directory (the working directory) on ``sys.path`` too. It ends as
Python would end it: exit status 0, the job's own ``SystemExit`` status, or
1 after an uncaught exception (its traceback goes to the log); threads joined,
``atexit`` handlers run, files left open flushed (see :func:`_end_as_python`,
which spares the job the teardown of what the engine loaded). Without a
job it idles until stopped. SIGTERM becomes ``SystemExit(143)`` so that
``finally`` blocks and ``atexit`` handlers of the job still run when it is
stopped.
"""

import atexit
import builtins
import contextlib
import gc
import importlib.machinery
import io
import json
import os
import select
import signal
import socket
import sys
import threading
import time
import types
import weakref

STOPPED_BY_SIGTERM = 128 + signal.SIGTERM
#: Signals meant for the job (a stop, Ctrl-C), which the guardian ignores.
JOB_SIGNALS = {signal.SIGTERM, signal.SIGINT}
#: The orders that reach every process of the job (``stop`` reaches the job's own only).
ORDERS = {b"term": signal.SIGTERM, b"kill": signal.SIGKILL, b"interrupt": signal.SIGINT}
#: Whether the guardian reaches every process of the job (prctl and /proc), or its group only.
LINUX = sys.platform.startswith("linux")
# prctl(2) options, from <linux/prctl.h>.
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
#: How much the guardian reads at a time, of the channel or of the job's output.
CHUNK = 64 * 1024
#: Seconds the guardian waits for the last of the output once every process of the job ended.
LAST_OUTPUT_TIMEOUT = 5


def main(argv):
    fd = int(argv[argv.index("--fd") + 1])
    signal.signal(signal.SIGTERM, _terminate)
    # Ray starts its processes with SIGINT blocked, and a server started in the background
    # (`cmd &` in a script, nohup, some CI runners) has it ignored; a process inherits both,
    # Python then installs no handler, and Ctrl-C (an interrupt) would never reach the job.
    # The job gets SIGINT as `python -c` run from a terminal does.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    channel = socket.socket(fileno=fd)
    channel.sendall(b"R")
    # While the server records this dashboard running (ctypes takes a millisecond or more).
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    line, orders = _receive_job(channel)
    if line is None:
        return 1  # the server went away before handing over the job
    job = json.loads(line)
    log = _Log(job["log"], job["log_cap"]) if "log" in job else None
    guardian = os.getpid()
    # What exists by now is the engine's: the job's garbage collections skip it, so that they
    # do not copy the pages it is on.
    gc.freeze()
    # Blocked across the fork: a stop or a Ctrl-C waits until each process is ready for it.
    signal.pthread_sigmask(signal.SIG_BLOCK, JOB_SIGNALS)
    job_pid = os.fork()
    if job_pid == 0:
        channel.close()
        _be_the_job(job, log, guardian)
    _guard(job_pid, channel, orders, log)


def _receive_job(channel):
    """The job's line, and what came after it (the first orders); None if the server left."""
    received = bytearray()
    while b"\n" not in received:
        chunk = channel.recv(CHUNK)
        if not chunk:
            return None, b""
        received += chunk
    line, _, rest = bytes(received).partition(b"\n")
    return line, rest


def _be_the_job(job, log, guardian):
    """In the forked process: run the job, and end as Python ends after it. Never returns."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != guardian:
        os._exit(1)  # the guardian is gone already: so is the dashboard
    if log is not None:
        log.give_to_job()
    else:
        _whole_lines_to_the_console()
    # The project directory replaces this file's directory as the first import path.
    sys.path[0] = os.getcwd()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, JOB_SIGNALS)
    loaded = dict(sys.modules)
    _end_as_python(_run_as_python(job), loaded)


def _guard(job_pid, channel, orders, log):
    """In the engine's own process: watch over the job, end everything it left, and exit as
    the job did. One thread: it answers the server, copies the job's output and reaps, each
    as it comes (SIGCHLD wakes it)."""
    for signum in JOB_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, JOB_SIGNALS)
    wakeup_read, wakeup_write = os.pipe()
    os.set_blocking(wakeup_write, False)
    signal.set_wakeup_fd(wakeup_write)
    # A Python handler, so that SIGCHLD writes to the wakeup descriptor.
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    watched = select.poll()
    watched.register(wakeup_read, select.POLLIN)
    watched.register(channel, select.POLLIN)
    if log is not None:
        log.keep_reading()
        watched.register(log.read_end, select.POLLIN)
    orders = _obey(orders, job_pid)
    while (status := _reap(job_pid)) is None:
        for fd, _ in watched.poll():
            if fd == wakeup_read:
                os.read(wakeup_read, CHUNK)
            elif fd == channel.fileno():
                received = _receive(channel)
                orders = _obey(orders + received, job_pid)
                if not received:  # the server is gone: so is every process of the job
                    watched.unregister(channel)
                    _signal_descendants(signal.SIGKILL)
            elif not log.copy():
                watched.unregister(fd)
    _end_descendants()
    if log is not None:
        log.finish()
    # What Python runs as a process ends (the engine registers nothing; a sitecustomize may,
    # a coverage tool does); the rest of its teardown would only copy pages the job shared.
    atexit._run_exitfuncs()
    _exit_as(os.waitstatus_to_exitcode(status))


# -- the guardian --------------------------------------------------------------------------------


def _prctl(option, value):
    """Set a process attribute of Linux's prctl(2); nothing elsewhere."""
    if LINUX:
        load_libc().prctl(option, value, 0, 0, 0)


def load_libc():
    """The C library, loaded once (a job is forked with it, as from the prestarted engine)."""
    global _LIBC
    if _LIBC is None:
        import ctypes

        _LIBC = ctypes.CDLL(None, use_errno=True)
    return _LIBC


_LIBC = None


def _obey(orders, job_pid):
    """Carry out the complete orders (one a line) of ``orders``; what is left of an unfinished
    one. ``job_pid`` has not been reaped yet: it cannot name another process."""
    *complete, unfinished = orders.split(b"\n")
    for order in complete:
        if order == b"stop":
            os.kill(job_pid, signal.SIGTERM)
        elif order in ORDERS:
            _signal_descendants(ORDERS[order])
    return unfinished


def _receive(channel):
    """What the server sent next; nothing once it is gone (even by SIGKILL)."""
    try:
        return channel.recv(CHUNK)
    except OSError:  # reset: gone as well
        return b""


def _reap(job_pid):
    """Reap every child that has ended; the job's wait status once it has ended, else None.

    Orphans of the job come back to the guardian: reaping them as they end
    leaves no zombie behind while the job runs.
    """
    while True:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == job_pid:
            return status
        if pid == 0:
            return None


def _end_descendants():
    """SIGKILL every process below this one, and reap them, until none is left.

    A process may start another just before it is killed; that one comes back
    to the guardian when its parent dies, and the next round finds it.
    Outside Linux the server kills the process group once the guardian is gone.
    """
    while LINUX:
        try:
            # As a subreaper, the guardian is the parent of every descendant whose own parent
            # has ended: without children it has no descendants at all, and /proc is not read
            # (the usual end of a job, which leaves nothing).
            if os.waitpid(-1, os.WNOHANG) == (0, 0):
                _signal_descendants(signal.SIGKILL)
                os.waitpid(-1, 0)
        except ChildProcessError:
            return


def _signal_descendants(signum):
    """Send ``signum`` to every process below this one (outside Linux: to the process group)."""
    if not LINUX:
        os.killpg(os.getpgrp(), signum)  # the guardian included, unless it ignores signum
        return
    for pid in _descendants():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _descendants():
    """The pids of every process below this one, read from /proc."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                # The command name may hold spaces and parentheses: count fields after its end.
                parent = int(stat.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # it ended meanwhile
        children.setdefault(parent, []).append(int(entry))
    found, below = [], [os.getpid()]
    while below:
        for child in children.get(below.pop(), ()):
            found.append(child)
            below.append(child)
    return found


def _exit_as(code):
    """End this process with ``code`` as ``subprocess`` gives it: an exit status, or minus the
    signal that ends it (the job's, in the guardian)."""
    if code >= 0:
        os._exit(code)
    signum = -code
    import resource

    # Die of the signal, without a core dump of the guardian's own.
    resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    if signum != signal.SIGKILL:  # the one signal that has no handler to reset
        signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
    os.kill(os.getpid(), signum)
    os._exit(128 + signum)  # a signal whose default is not to end the process


class _Log:
    """The job's output (a pipe), copied by the guardian into the log, which the server opened
    as this process's standard output.

    Once the log reaches ``cap`` bytes it is renamed ``<log>.1`` (replacing an
    earlier one) and a new log starts: a dashboard's output never takes more
    than twice its cap on disk, and its latest part is always there. Output
    that cannot be written (a full disk) is dropped; the job goes on.
    """

    def __init__(self, path, cap):
        self.path = path
        self.cap = cap
        self.size = os.fstat(1).st_size
        self.read_end, self.write_end = os.pipe()

    def give_to_job(self):
        """In the job: standard output and error go into the pipe."""
        for fd in (1, 2):
            os.dup2(self.write_end, fd)
        os.close(self.write_end)
        os.close(self.read_end)

    def keep_reading(self):
        """In the guardian: read the pipe only (so that it ends when the job's processes have
        all closed it)."""
        os.close(self.write_end)

    def copy(self):
        """In the guardian: copy what the pipe holds into the log; False once every writer has
        closed it."""
        chunk = os.read(self.read_end, CHUNK)
        try:
            if self.size and self.size + len(chunk) > self.cap:
                self._start_anew()
            os.write(1, chunk)
            self.size += len(chunk)
        except OSError:
            pass  # nowhere to write it: dropped
        return bool(chunk)

    def finish(self):
        """Copy the last of the output (every process of the job has ended by now)."""
        deadline = time.monotonic() + LAST_OUTPUT_TIMEOUT
        pipe = select.poll()
        pipe.register(self.read_end, select.POLLIN)
        while pipe.poll(max(0, deadline - time.monotonic()) * 1000) and self.copy():
            pass

    def _start_anew(self):
        os.replace(self.path, self.path + ".1")
        new = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        fd = os.open(self.path, new, 0o600)
        # Standard error too: whatever the guardian itself has to say goes to the new log.
        for standard in (1, 2):
            os.dup2(fd, standard)
        os.close(fd)
        self.size = 0


# -- the job -------------------------------------------------------------------------------------


def _whole_lines_to_the_console():
    """Have standard output and error write a line at a time, as Python does on a terminal.

    ``PYTHONUNBUFFERED`` (which every dashboard gets, so that its log is never behind) has
    ``print("cluster:", ids)`` make four writes: on the console that ``sense run`` shares
    with its workers' prefixed lines, a worker's line could land inside this one.
    """
    for stream in (sys.stdout, sys.stderr):
        # Not a text file (None, or replaced by the caller's sitecustomize): left as it is.
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(line_buffering=True, write_through=False)


def _terminate(signum, frame):
    sys.exit(STOPPED_BY_SIGTERM)


def _run_as_python(job):
    """Run the job; the exit code Python would end with, once it said what Python says then.

    ``SystemExit`` gives its code (a message is printed, and the code is 1); an uncaught
    exception goes to ``sys.excepthook`` and the code is 1, or minus SIGINT for a
    ``KeyboardInterrupt``: Python then ends by that signal.
    """
    try:
        _run_job(job)
        return 0
    except SystemExit as exit:
        return _exit_code(exit.code)
    except BaseException as error:
        uncaught = error
    # Out of the except clause: what the hook raises is not taken for a consequence of it.
    sys.last_type, sys.last_value, sys.last_traceback = (
        type(uncaught),
        uncaught,
        uncaught.__traceback__,
    )
    try:
        sys.excepthook(type(uncaught), uncaught, uncaught.__traceback__)
    except BaseException as error:
        _say_ignored("Error in sys.excepthook:", error)
        _say_ignored("\nOriginal exception was:", uncaught)
    return -signal.SIGINT if isinstance(uncaught, KeyboardInterrupt) else 1


def _exit_code(code):
    """The exit code of ``sys.exit(code)``, as Python takes it."""
    if code is None:
        return 0
    if isinstance(code, int):
        # What exit(3) keeps of a C long; one that does not fit is -1.
        return code & 0xFF if -(2**63) <= code < 2**63 else 0xFF
    with contextlib.suppress(Exception):  # nowhere to say it: the code is 1 all the same
        print(code, file=sys.stderr if sys.stderr is not None else sys.__stderr__)
    return 1


def _end_as_python(code, loaded):
    """End the job's process as Python ends after the job. Never returns.

    As Python does at its end: wait for the job's threads (but daemon threads), run its
    ``atexit`` handlers, flush the standard streams (exit code 120 if standard output cannot
    be), then finalize the job's ``__main__`` and the modules it imported (their objects'
    ``__del__`` run: files left open are flushed and closed). What
    the engine loaded before the job is not torn down object by object: the kernel frees it
    at once, which spares the job the milliseconds of copying every page it shares with its
    engine (docs/local.md, "The prestarted engine").
    """
    try:
        threading._shutdown()
    except BaseException as error:
        _say_ignored(f"Exception ignored in: {threading!r}", error)
    atexit._run_exitfuncs()
    if not _flush_standard_streams():
        code = 120
    # The main thread keeps the interpreter meanwhile (no switch for a minute, unless it
    # waits): daemon threads see nothing cleared.
    sys.setswitchinterval(60)
    _finalize_job_modules(loaded)
    # What the cleared objects printed: Python's streams flush it as they close, silently.
    _flush_standard_streams(quietly=True)
    _exit_as(code)


def _finalize_job_modules(loaded):
    """Finalize the modules of the job (its ``__main__`` included), in Python's order.

    As Python's end does: they leave ``sys.modules`` and the garbage is collected while their
    globals are whole (what their objects' ``__del__`` use still works), then what is still
    alive is cleared, the last imported first. ``loaded``: the engine's modules, left alone.
    """
    # What would keep the frames of an uncaught exception, and with them the job's globals.
    sys.last_type = sys.last_value = sys.last_traceback = None
    names = [name for name, module in sys.modules.items() if loaded.get(name) is not module]
    # Weak references only, as Python keeps of its modules then; pop() drops the last strong one.
    popped = map(sys.modules.pop, names)
    modules = [weakref.ref(module) for module in popped if isinstance(module, types.ModuleType)]
    gc.collect()
    for module in reversed(modules):
        _clear_module(module())
    gc.collect()


def _flush_standard_streams(quietly=False):
    """Flush ``sys.stdout`` and ``sys.stderr`` unless closed; False if standard output fails
    (and the error is printed, unless ``quietly``)."""
    flushed = True
    for stream in (sys.stdout, sys.stderr):
        if stream is None or getattr(stream, "closed", False):
            continue
        try:
            stream.flush()
        except Exception as error:
            if stream is sys.stdout:
                flushed = False
                if not quietly:
                    _say_ignored(f"Exception ignored in: {stream!r}", error)
    return flushed


def _clear_module(module):
    """Set every global of ``module`` to None, as Python does to each module at its end: names
    with one leading underscore first, then every other but ``__builtins__``."""
    namespace = getattr(module, "__dict__", None)
    if not isinstance(namespace, dict):
        return
    for private_first in (True, False):
        # Names only: a list of the values would keep every one alive until its end.
        for name in list(namespace):
            if not isinstance(name, str) or name == "__builtins__" or namespace[name] is None:
                continue
            if not private_first or (name.startswith("_") and name[1:2] != "_"):
                namespace[name] = None


def _say_ignored(heading, error):
    """Print ``heading`` and ``error`` on standard error, as Python does for an error it
    ignores."""
    with contextlib.suppress(Exception):
        print(heading, file=sys.stderr)
        _report_uncaught(type(error), error, error.__traceback__)


def _run_job(job):
    """Run the job as ``__main__``; its ``SystemExit`` or error propagates."""
    if "code" in job:
        _run_code(job["code"])
    elif "script" in job:
        _run_script(job["script"], job.get("argv", []))
    else:
        while True:
            signal.pause()


def _run_code(source):
    """Run ``source`` as ``python -c SOURCE`` would.

    Its module is ``__main__`` in ``sys.modules`` (pickle finds what it defines), with no
    ``__file__`` and no ``__spec__``, and ``sys.argv`` is ``["-c"]``: the processes that
    multiprocessing's spawn and forkserver methods start do not run it again, as under
    ``python -c``.
    """
    sys.argv = ["-c"]
    code = compile(source, "<startup_code>", "exec")
    main = types.ModuleType("__main__")
    main.__dict__.update(__builtins__=builtins, __loader__=importlib.machinery.BuiltinImporter)
    sys.modules["__main__"] = main
    exec(code, main.__dict__)


def _run_script(path, argv):
    """Run the script at ``path`` as ``python PATH ARGV...`` would.

    ``sys.argv[0]`` is the path as given, ``__file__`` the absolute path, and
    the script's directory comes first on ``sys.path`` (the project directory
    stays next, as docs/local.md, "Workers", promises).
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
    """Python's own report of an uncaught exception, without this engine's frames.

    Nor the prestarted engine's, which runs this file in the dashboards it forks.
    """
    own = (__file__, os.path.join(os.path.dirname(__file__), "forkserver.py"))
    while trace is not None and trace.tb_frame.f_code.co_filename in own:
        trace = trace.tb_next
    # Python shows the traceback the exception carries, whatever the argument says.
    sys.__excepthook__(kind, error.with_traceback(trace), trace)


def run(argv):
    """Be the engine of ``argv``; its exit status (the job's process never returns)."""
    # The job's uncaught exception is reported without the engine's frames.
    sys.excepthook = _report_uncaught
    return main(argv)


if __name__ == "__main__":
    sys.exit(run(sys.argv))
