"""The ``sense`` command: run a script as the master of a local project, or serve one.

Examples
--------
::

    sense run examples/cluster.py        # the script is the master; workers print as [worker N]
    sense server --port 8000             # prints the variables that make a shell its master
    sense ps; sense logs 3; sense stop 3
    eval "$(sense env)"                  # in another shell: make it the server's master
"""

from __future__ import annotations

import argparse
import errno
import os
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import NamedTuple

from sense.errors import SenseAPIError, SenseError
from sense.local import LocalServer
from sense.status import ACTIVE

_EXAMPLES = """\
examples:
  sense run examples/cluster.py          run a script as the master dashboard
  sense server --port 8000               serve a project; prints the shell variables
  sense ps                               list the dashboards of the project here
  eval "$(sense env)"                    make this shell the master of the server here
"""


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``sense`` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    if args.command is _run:
        args.args = _script_arguments(argv, args.script, args.args)
    try:
        return args.command(args)
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except Exception as error:  # one line for the user, not a traceback
        import sqlite3

        if not isinstance(error, (SenseError, OSError, sqlite3.Error)):
            raise
        print(f"sense: {_explain(error)}", file=sys.stderr)
        return 1


def _explain(error: Exception) -> str:
    """The error, and what to do about it when it is a full disk."""
    if isinstance(error, SenseAPIError):
        # The server's own words: the request behind them is the command's business.
        return error.message
    full = getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
    if full or "disk is full" in str(error):
        return f"{error}: free some space on that disk and try again"
    return str(error)


def _script_arguments(argv: list[str], script: str, rest: list[str]) -> list[str]:
    """The script's own arguments, as ``python SCRIPT ARGS`` would give them.

    argparse drops a ``--`` that comes right after the script; Python hands it on.
    """
    before = argv[: len(argv) - len(rest)]
    if before[-2:] == [script, "--"]:
        return ["--", *rest]
    return rest


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sense",
        description="A local Sense server: worker dashboards are processes on this machine.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run a script as the master dashboard of a local project",
        description="Start a local project, run SCRIPT as its master dashboard with the full "
        "dashboard environment, show workers' output prefixed by their id, and stop everything "
        "when SCRIPT ends. The exit status is SCRIPT's.",
    )
    run.add_argument("script", metavar="SCRIPT", help="the Python script to run")
    run.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS", help="its arguments")
    _server_options(run, default_port=0)
    run.set_defaults(command=_run)

    server = commands.add_parser(
        "server",
        help="serve a local project until interrupted",
        description="Serve a local project and print the variables that make a shell (or a "
        "notebook started from it) its master dashboard. Ctrl-C stops it and every dashboard.",
    )
    server.add_argument(
        "--host",
        default=None,
        help="address to listen on (default: loopback; with --backend ray, the IP of this "
        "Ray node, where the other nodes reach it)",
    )
    _server_options(server, default_port=0)
    server.set_defaults(command=_serve)

    ps = commands.add_parser("ps", help="list the dashboards of a running local project")
    _client_options(ps)
    ps.add_argument("-a", "--all", action="store_true", help="ended dashboards too")
    ps.set_defaults(command=_ps)

    logs = commands.add_parser("logs", help="print a dashboard's output")
    _client_options(logs)
    logs.add_argument("id", type=int, metavar="ID", help="the dashboard")
    logs.set_defaults(command=_logs)

    stop = commands.add_parser("stop", help="stop dashboards (all of them without IDs)")
    _client_options(stop)
    stop.add_argument("ids", type=int, nargs="*", metavar="ID", help="the dashboards to stop")
    stop.set_defaults(command=_stop)

    env = commands.add_parser(
        "env",
        help="print the export lines that make a shell the master of `sense server`",
        description="Print the `export` lines of the master dashboard of the `sense server` "
        'that serves the project, for `eval "$(sense env)"` in another shell. They hold the '
        "project's token. The SSH variables are left out: only `sense server` prints them.",
    )
    env.add_argument("--project-dir", default=None, help="the project (default: here)")
    env.set_defaults(command=_env)
    return parser


def _server_options(parser: argparse.ArgumentParser, default_port: int) -> None:
    parser.add_argument(
        "--port", type=_port, default=default_port, help="the API's port (default 0: any free port)"
    )
    parser.add_argument(
        "--ssh-port",
        type=_port,
        default=0,
        help="the dashboards' SSH port (default 0: any free port)",
    )
    parser.add_argument("--project-dir", default=None, help="the project directory (default: here)")
    parser.add_argument(
        "--max-workers",
        type=int,
        default=None,
        help="dashboards allowed to run at once (default: $SENSE_LOCAL_MAX_WORKERS, else "
        "4 per CPU, at least 8)",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=None,
        help="seconds between SIGTERM and SIGKILL when stopping a dashboard (default 3)",
    )
    parser.add_argument(
        "--backend",
        default="local",
        metavar="NAME",
        help="where dashboards run: local (processes on this machine, the default), ray "
        "(across a Ray cluster), or an installed third-party backend",
    )
    parser.add_argument(
        "--no-prestart",
        dest="prestart",
        action="store_false",
        help="start every dashboard in a fresh interpreter, not forked from a prestarted engine "
        "(local and ray backends)",
    )
    parser.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDRESS",
        help="with --backend ray: the cluster to join, as ray.init(address=...) takes it "
        "(HOST:PORT of the head, or auto; not ray://: run the server on a node of the cluster)",
    )
    parser.add_argument(
        "--ray-placement-timeout",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="with --backend ray: how long a launch waits for free CPUs on the cluster before "
        "it is refused (default 10; raise it for a cluster that autoscales)",
    )
    parser.add_argument(
        "--allow-host",
        dest="allow_hosts",
        action="append",
        default=[],
        metavar="NAME",
        help="a name that browsers and clients may reach the server by, besides its address, "
        "localhost and the loopback addresses (repeatable): a request for any other is refused "
        "with 400, against DNS rebinding",
    )
    parser.add_argument(
        "--log-cap",
        type=_mebibytes,
        default=None,
        metavar="MIB",
        help="MiB a dashboard's log holds before it is set aside as <id>.log.1 and starts "
        "anew (default 100; local backend)",
    )


def _client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--project-dir",
        default=None,
        help="the project whose server to ask (default: the one in this shell's SENSE_* "
        "environment, else the one served from here)",
    )


def _open(args) -> LocalServer:
    backend_options = {}
    if args.ray_address is not None:
        if args.backend != "ray":
            raise SenseError("--ray-address goes with --backend ray")
        backend_options["ray_address"] = args.ray_address
    if args.ray_placement_timeout is not None:
        if args.backend != "ray":
            raise SenseError("--ray-placement-timeout goes with --backend ray")
        backend_options["placement_timeout"] = args.ray_placement_timeout
    if not args.prestart:
        if args.backend not in ("local", "ray"):
            raise SenseError("--no-prestart goes with --backend local or ray")
        backend_options["prestart"] = False
    if args.log_cap is not None:
        if args.backend != "local":
            raise SenseError("--log-cap goes with --backend local")
        backend_options["log_cap"] = args.log_cap
    return LocalServer(
        args.project_dir,
        host=getattr(args, "host", None),
        port=args.port,
        ssh_port=args.ssh_port,
        max_workers=args.max_workers,
        grace=args.grace,
        allow_hosts=args.allow_hosts,
        backend=args.backend,
        **backend_options,
    )


def _port(text: str) -> int:
    """``--port``'s value: a TCP port, or 0 for any free one."""
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"should be a port from 0 to 65535, not {text!r}")
    return int(text)


def _seconds(text: str) -> float:
    """``--ray-placement-timeout``'s value: seconds, 0 or more."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"should be a number of seconds, 0 or more: {text!r}")
    return seconds


def _mebibytes(text: str) -> int:
    """``--log-cap``'s value in bytes: a whole number of MiB, at least 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"should be a whole number of MiB, at least 1: {text!r}")
    return int(text) * 1024 * 1024


# -- run and server ------------------------------------------------------------------------------


def _run(args) -> int:
    script = os.path.abspath(args.script)
    if not os.path.isfile(script):
        print(f"sense run: no such script: {args.script}", file=sys.stderr)
        return 2
    ctrl_c = _CtrlC()
    # From the start: a Ctrl-C while the server starts, or before the script is waited for
    # (a while on a busy machine), still reaches the script.
    with _signals({signal.SIGINT: ctrl_c, signal.SIGTERM: _terminate}):
        return _run_master(args, script, ctrl_c)


def _run_master(args, script: str, ctrl_c: _CtrlC) -> int:
    from sense.local.console import LogFollower

    server = _open(args)
    follower = None
    try:
        if sys.stderr.isatty():
            # Not into a pipe or a log file (the link is worth a login for 15 minutes); nor
            # among the script's own output.
            print(f"sense run: the web page is {_page_address(server)}", file=sys.stderr)
        project = server.project
        master = project.run_master(script, args.args)
        ctrl_c.reaches(project, master["id"])
        starting = LogFollower(project, sys.stdout, after=master["id"])
        starting.start()
        follower = starting  # stopped below only once it has started
        while (code := project.wait(master["id"], 0.2)) is None:
            pass
    finally:
        try:
            # Every dashboard ends first, so that the follower shows their last words.
            server.project.shutdown()
            if follower is not None:
                follower.stop()
        finally:
            server.stop()
    return 128 - code if code < 0 else code


class _CtrlC:
    """The handler of Ctrl-C in ``sense run``: passes it on to the master script, once that
    is launched if it came before; a second one means: stop everything now.

    The script has its own session, out of reach of the terminal's Ctrl-C.
    """

    def __init__(self) -> None:
        self.count = 0
        self._master: tuple | None = None
        #: Taken by the one pass-on (``list.pop`` is atomic: this handler may run between
        #: any two steps of :meth:`reaches`).
        self._pass = [True]

    def __call__(self, signum, frame) -> None:
        self.count += 1
        if self.count > 1:
            raise KeyboardInterrupt
        self._pass_on()

    def reaches(self, project, master_id: int) -> None:
        """The master script is launched: pass it the Ctrl-C that came before, if one did."""
        self._master = (project, master_id)
        if self.count:
            self._pass_on()

    def _pass_on(self) -> None:
        if self._master is None:
            return
        try:
            self._pass.pop()
        except IndexError:  # passed on already
            return
        project, master_id = self._master
        project.interrupt(master_id)


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


def _serve(args) -> int:
    with _open(args) as server:
        server.attach(set_environ=False)
        print(f"Local Sense server for {server.project_dir} at {server.url}")
        # The token is shown deliberately below: the user asked for it.
        print(f"Web page: {_page_address(server)}")
        print(
            "To make a shell (or a notebook started from it) its master dashboard, run "
            f'eval "$(sense env --project-dir {shlex.quote(str(server.project_dir))})" '
            "in it, or:\n"
        )
        _print_exports(server.master_environment())
        print("\nCtrl-C stops the server and every dashboard.", flush=True)
        done = threading.Event()

        def finish(signum, frame):
            done.set()

        with _signals({signal.SIGINT: finish, signal.SIGTERM: finish}):
            while not done.wait(0.5):
                pass
    return 0


def _print_exports(environment: dict[str, str]) -> None:
    for name, value in environment.items():
        print(f"export {name}={shlex.quote(value)}")


def _page_address(server: LocalServer) -> str:
    """A link that logs in to the server's web page, and what to do once it is used.

    A one-time code, not the token: a browser's history keeps the addresses it opened.
    """
    return (
        f"{server.page_link()}\n  (it logs in once, within 15 minutes; after that, open "
        f"{server.page_url} and paste the token, {server.state.token_file})"
    )


class _signals:
    """Install signal handlers for the duration of a block."""

    def __init__(self, handlers: dict) -> None:
        self.handlers = handlers
        self.saved: dict = {}

    def __enter__(self) -> None:
        for signum, handler in self.handlers.items():
            self.saved[signum] = signal.signal(signum, handler)

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self.saved.items():
            signal.signal(signum, handler)


# -- ps, logs, stop: a client of a running server -----------------------------------------------


def _ps(args) -> int:
    client = _client(args)
    dashboards = client.getDashboards(status=None if args.all else ACTIVE)
    print(f"{'ID':>4}  {'STATUS':<9} {'MASTER':>6}  {'PROJECT IP':<15} {'EXIT':>4}  NAME")
    for d in dashboards:
        master = "" if d["master_id"] is None else d["master_id"]
        code = "" if d["exit_code"] is None else d["exit_code"]
        print(
            f"{d['id']:>4}  {d['status']:<9} {master:>6}  {d['project_ip']:<15} {code:>4}  "
            f"{d['name']}"
        )
    return 0


def _logs(args) -> int:
    # A chunk at a time, as it comes: a log of any size takes little memory.
    for chunk in _client(args).getLogs(args.id):
        sys.stdout.buffer.write(chunk)
    sys.stdout.flush()
    return 0


def _stop(args) -> int:
    client = _client(args)
    ids = args.ids
    if not ids:
        active = client.getDashboards(status=ACTIVE)
        # The process that runs the server (a shell's, a notebook's) is its master, not a
        # worker: the API refuses to stop it, and it is not asked to.
        attached = _find_server(args.project_dir).attached
        active = [d for d in active if d["id"] != attached]
        # Workers first: stopping the master of `sense run` ends the run, server and all.
        active.sort(key=lambda d: (d["master_id"] is None, d["id"]))
        ids = [d["id"] for d in active]
        if not ids:
            print("no worker is running: nothing to stop")
    status = 0
    for dashboard_id in ids:
        try:
            stopped = client.request(
                "PATCH", f"/dashboards/{dashboard_id}", json={"status": "stopped"}
            )
        except SenseAPIError as error:
            print(f"{dashboard_id}: {error.message}", file=sys.stderr)
            status = 1
        else:
            print(f"{dashboard_id}: {stopped['status']}")
    return status


def _env(args) -> int:
    from sense.local.context import Project, context

    directory = Path(args.project_dir if args.project_dir is not None else os.getcwd())
    server = _served_from(directory)
    if server.attached is None:
        raise SenseError(
            f"the server of {directory.resolve()} has no master of its own (under `sense run`, "
            "the script is the master): `sense env` goes with `sense server`"
        )
    master = _client_of(server).request("GET", f"/dashboards/{server.attached}")
    path = f"/users/{master['owner_id']}/projects/{master['project_id']}"
    project = Project(
        directory=str(directory),
        owner_id=master["owner_id"],
        project_id=master["project_id"],
        api_url=server.project_url.removesuffix(path),
        token=server.auth[0],
    )
    # The token goes to stdout, for the user's eval, as `sense server` shows it; no SSH
    # variables: the password lives in the server's memory only, and is never written.
    _print_exports(context(project, master))
    return 0


def _client(args):
    """A client of the project of ``args``, which answers at once or not at all."""
    return _client_of(_find_server(args.project_dir))


def _client_of(server: _Server):
    import sense

    return sense.Client(url=server.project_url, auth=server.auth, timeout=30, retries=0)


class _Server(NamedTuple):
    project_url: str
    auth: tuple[str, str]
    #: The master dashboard that the server's own process is, if any.
    attached: int | None


def _find_server(project_dir: str | None) -> _Server:
    """Where the server is: from the SENSE_* environment, else from ``.sense/``."""
    url = os.environ.get("SENSE_PROJECT_URL")
    token = os.environ.get("SENSE_API_TOKEN") or os.environ.get("SENSE_API_KEY")
    if project_dir is None and url and token:
        # This shell exported a master's variables, as `sense server` prints them.
        me = os.environ.get("SENSE_DASHBOARD_ID", "")
        return _Server(url, (token, ""), int(me) if me.isdigit() else None)
    return _served_from(Path(project_dir if project_dir is not None else os.getcwd()))


def _served_from(directory: Path) -> _Server:
    """The server of the project in ``directory``, from its ``.sense/``."""
    from sense.local.statedir import DIRECTORY, StateDir

    # Only look: a command that asks a server creates nothing, least of all a token.
    state = StateDir(directory, create=False) if (directory / DIRECTORY).is_dir() else None
    record = state.read_server_file() if state is not None else {}
    if not record:
        raise SenseError(
            f"no local Sense server is running for {directory.resolve()} "
            "(start one with `sense server` or `sense run SCRIPT`)"
        )
    if not state.is_served_by(record.get("pid")):
        # A server killed by SIGKILL leaves its record; its port may be anyone's by now.
        raise SenseError(
            f"no local Sense server runs for {directory.resolve()}: {state.server_file} names "
            f"pid {record.get('pid')} at {record.get('url')}, which no longer serves it (a "
            "server that was killed leaves it); the token was not sent there. Start one with "
            "`sense server` or `sense run SCRIPT`"
        )
    token = state.read_token()
    if token is None:
        raise SenseError(
            f"{state.token_file} is missing or empty: the server of {directory.resolve()} "
            "cannot be asked without it (restart it with `sense server`)"
        )
    return _Server(record["project_url"], (token, ""), record.get("master_id"))
