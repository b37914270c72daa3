"""The SSH server of the local backend: every running dashboard can be entered over SSH.

User ``sense`` logs in with a dashboard's password (``SENSE_SSH_PASSWORD``);
the connection then belongs to that dashboard, as on the platform, where each
dashboard ran its own SSH daemon. A session is a shell (on a terminal if the
client asks for one) or one command, run with the user's login shell in the
project directory, with the dashboard's environment; SFTP and scp work too.
Everything a session starts is the dashboard's: it is killed when the
dashboard ends, and when the server dies (see ``reaper.py``).

The server runs in a thread of its own with its own asyncio event loop,
not in uvicorn's: uvicorn creates, runs and closes its loop itself and
offers no way in, and a loop of our own starts and stops exactly when this
server does.

Example
-------
>>> ssh = SshServer(Path(".sense/ssh_host_key"), "127.0.0.1", 0)   # doctest: +SKIP
>>> info = Project(..., ssh=ssh.access); project = LocalProject(info, ...)  # doctest: +SKIP
>>> ssh.start(project)                                               # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import posixpath
import pwd
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

from sense.local.backends import dashboard_environment
from sense.local.lobby import Lobby
from sense.local.server import bind
from sense.local.sshd.access import SshAccess
from sense.local.sshd.command import Command
from sense.local.sshd.hostkey import load_or_create_host_key
from sense.local.sshd.throttle import LoginThrottle
from sense.status import Status

#: Seconds to wait for a dashboard's SSH processes to end once they have been killed.
END_TIMEOUT = 10.0
START_TIMEOUT = 10.0
#: Seconds a connection has to log in; connections not logged in yet, at most: past it the
#: oldest is closed (as OpenSSH's ``LoginGraceTime`` and ``MaxStartups``).
LOGIN_TIMEOUT = 60.0
MAX_WAITING = 100


class SshServer:
    """An SSH server for the dashboards of one project, serving from a thread of its own.

    Parameters
    ----------
    host_key_path : Path
        Where the host key is kept (made on first use).
    host : str
        Where to listen: where the API listens.
    port : int
        0 (the default) picks any free port; :attr:`access` tells which.

    Attributes
    ----------
    access : SshAccess
        The port and the dashboards' passwords, for the dashboard context.
    """

    def __init__(self, host_key_path: Path, host: str, port: int = 0) -> None:
        # The key first: a key that cannot be trusted stops everything before it starts.
        self._host_key = load_or_create_host_key(host_key_path)
        try:
            self._sock = bind(host, port)
        except OSError as error:
            raise OSError(error.errno, f"the SSH port {host}:{port}: {error.strerror}") from None
        self.access = SshAccess(self._sock.getsockname()[1])
        # asyncssh logs each connection and command at INFO, into a notebook that shows INFO:
        # as uvicorn's here, its log says only what goes wrong.
        logging.getLogger("asyncssh").setLevel(logging.WARNING)
        self.throttle = LoginThrottle()
        self.lobby = Lobby(MAX_WAITING, LOGIN_TIMEOUT)
        self._project = None
        self._thread: threading.Thread | None = None
        # Set while serving: the loop, which other threads hand work to, and the stop signal.
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._dashboards: dict[int, _Dashboard] = {}
        # Taken to make a connection or command a dashboard's once it is seen running, and to
        # see whether a dashboard that ended has any: each is either seen, or refused.
        self._joining = threading.Lock()
        self._tasks: set[asyncio.Task] = set()

    # -- life cycle (called from the server's threads) ------------------------------------------

    def start(self, project) -> None:
        """Serve ``project``'s dashboards, and end their sessions when they end."""
        self._project = project
        # After the project's own listener: the store says it ended before its sessions close.
        project.backend.subscribe(
            None, lambda dashboard_id, *end: self.dashboard_ended(dashboard_id)
        )
        started = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=asyncio.run, args=(self._main(started),), name="sense-ssh", daemon=True
        )
        self._thread.start()
        started.result(START_TIMEOUT)  # raises what stopped the listener, if anything did

    def dashboard_ended(self, dashboard_id: int) -> None:
        """Close the dashboard's connections and kill its sessions' processes; return once
        they have ended. Its password stops working at once: it is no longer running."""
        with self._joining:
            if dashboard_id not in self._dashboards:
                return  # nothing of it here, the usual case: no need to wake the loop
        with self._lock:
            if self._loop is None:
                return
            ending = asyncio.run_coroutine_threadsafe(self._end(dashboard_id), self._loop)
        # Cancelled: the server stopped meanwhile, and ended every session itself.
        with contextlib.suppress(concurrent.futures.CancelledError):
            ending.result()

    def stop(self) -> None:
        """Stop listening and end every session; the port is free afterwards."""
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is None:
            self._sock.close()  # never served
            return
        loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join()

    def __repr__(self) -> str:
        return f"<SshServer port {self.access.port}>"

    # -- in the event loop ---------------------------------------------------------------------

    async def _main(self, started: concurrent.futures.Future) -> None:
        """Serve until :meth:`stop`, then end every session (``asyncio.run`` cancels the rest)."""
        try:
            acceptor = await asyncssh.listen(
                sock=self._sock,
                server_factory=lambda: _Login(self),
                server_host_keys=[self._host_key],
                process_factory=self._serve,
                sftp_factory=lambda channel: _ProjectFiles(channel, self._project.info.directory),
                allow_scp=True,
                encoding=None,
                line_editor=False,
                agent_forwarding=False,
                x11_forwarding=False,
            )
        except BaseException as error:
            started.set_exception(error)
            return
        self._stopping = asyncio.Event()
        with self._lock:
            self._loop = asyncio.get_running_loop()
        started.set_result(None)
        await self._stopping.wait()
        acceptor.close()
        await acceptor.wait_closed()
        self.lobby.close_all()  # the listener leaves them open, for the loop to drop
        for dashboard_id in list(self._dashboards):
            await self._end(dashboard_id)
        # Sessions too: one cut off by the loop's end leaves asyncssh's clean-up never awaited.
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=END_TIMEOUT)

    def log_in(self, connection, user: str, password: str) -> bool:
        """Whether ``password`` is that of a running dashboard; if so the connection is its."""
        with self._joining:
            running = [row["id"] for row in self._project.store.select(status=Status.RUNNING)]
            dashboard_id = self.access.dashboard_for(user, password, running)
            if dashboard_id is None:
                return False
            connection.set_extra_info(dashboard_id=dashboard_id)
            self._dashboards.setdefault(dashboard_id, _Dashboard()).connections.add(connection)
        return True

    def connection_closed(self, connection) -> None:
        dashboard = self._dashboards.get(connection.get_extra_info("dashboard_id"))
        if dashboard is not None:
            dashboard.connections.discard(connection)

    async def _serve(self, channel: asyncssh.SSHServerProcess) -> None:
        """Run one session: the command asked for, else a shell."""
        self._track(asyncio.current_task())
        try:
            await self._run(channel)
        finally:
            channel.close()
            await channel.wait_closed()  # asyncssh's own clean-up of the streams

    async def _run(self, channel: asyncssh.SSHServerProcess) -> None:
        if channel.subsystem:
            channel.stderr.write(b"no such subsystem here (sftp is)\n")
            channel.exit(1)
            return
        dashboard_id = channel.get_extra_info("dashboard_id")
        row = self._project.get(dashboard_id)
        env = dashboard_environment(os.environ, self._project.context(row), row["env"])
        terminal_size = None
        if channel.term_type:
            env["TERM"] = channel.term_type
            columns, rows = channel.term_size[:2]
            terminal_size = (columns or 80, rows or 24)
        try:
            command, streams = await Command.start(
                _shell_command(channel.command),
                cwd=self._project.info.directory,
                env=env,
                terminal_size=terminal_size,
            )
        except OSError as error:
            channel.stderr.write(f"sense: cannot start a session: {error.strerror}\n".encode())
            channel.exit(1)
            return
        self._adopt(dashboard_id, channel, command)
        await channel.redirect(streams.stdin, streams.stdout, streams.stderr, send_eof=False)
        code = await command.exit_code()
        if code is None:
            return  # ended with its dashboard, which said so on the channel
        await channel.stdout.drain()
        await channel.stderr.drain()
        if code < 0:
            channel.exit_with_signal(signal.Signals(-code).name.removeprefix("SIG"))
        else:
            channel.exit(code)

    def _adopt(self, dashboard_id: int, channel, command: Command) -> None:
        """Make ``command`` (run for ``channel``) the dashboard's: it ends with the dashboard."""
        with self._joining:
            running = self._project.get(dashboard_id)["status"] == Status.RUNNING
            dashboard = self._dashboards.setdefault(dashboard_id, _Dashboard()) if running else None
        if dashboard is None:
            command.end()  # the dashboard ended while the command started
            dashboard = _Dashboard()
        dashboard.channels.add(channel)
        dashboard.commands.add(command)

        async def forget_when_done() -> None:
            await command.wait()
            dashboard.commands.discard(command)
            dashboard.channels.discard(channel)

        self._track(asyncio.create_task(forget_when_done()))

    def _track(self, task: asyncio.Task) -> None:
        """Have :meth:`stop` wait for ``task`` (up to ``END_TIMEOUT``)."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _end(self, dashboard_id: int) -> None:
        dashboard = self._dashboards.pop(dashboard_id, None)
        if dashboard is None:
            return
        reason = f"dashboard {dashboard_id} has ended"
        # Said on each session first: a client may quit on its session's end before it reads
        # why the connection closed.
        for channel in dashboard.channels:
            if not channel.is_closing():
                newline = "\r\n" if channel.term_type else "\n"
                channel.stderr.write(f"sense: {reason}{newline}".encode())
                channel.exit_with_signal("KILL")
        for connection in dashboard.connections:
            connection.disconnect(asyncssh.DISC_BY_APPLICATION, reason)
        for command in dashboard.commands:
            command.end()
        waits = [asyncio.create_task(command.wait()) for command in dashboard.commands]
        if waits:
            await asyncio.wait(waits, timeout=END_TIMEOUT)


@dataclass
class _Dashboard:
    """What one dashboard has over SSH: connections, sessions, and the commands they run.

    A command outlives its session when it leaves processes running in the
    background: they are the dashboard's until it ends.
    """

    connections: set = field(default_factory=set)
    channels: set = field(default_factory=set)
    commands: set = field(default_factory=set)


class _Login(asyncssh.SSHServer):
    """One client connection: password logins only, throttled per source, waiting in the
    server's lobby until logged in."""

    def __init__(self, server: SshServer) -> None:
        self._server = server
        self._connection = None

    def connection_made(self, connection: asyncssh.SSHServerConnection) -> None:
        self._connection = connection
        self._server.lobby.enter(connection, connection.abort)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.lobby.leave(self._connection)
        self._server.connection_closed(self._connection)

    def auth_completed(self) -> None:
        self._server.lobby.leave(self._connection)

    def begin_auth(self, username: str) -> bool:
        return True  # every login needs a password

    def password_auth_supported(self) -> bool:
        return True

    async def validate_password(self, username: str, password: str) -> bool:
        address = self._connection.get_extra_info("peername")[0]
        return await self._server.throttle.attempt(
            address, lambda: self._server.log_in(self._connection, username, password)
        )


class _ProjectFiles(asyncssh.SFTPServer):
    """SFTP over the whole filesystem, as the user's own SSH would give, starting in the project.

    Not confined to the project: the same password gives a shell, which is not,
    so a confined SFTP would only surprise. Relative paths are the project's.
    """

    def __init__(self, channel: asyncssh.SSHServerChannel, project_dir: str) -> None:
        super().__init__(channel)
        self._project_dir = os.fsencode(project_dir)

    def map_path(self, path: bytes) -> bytes:
        return posixpath.join(self._project_dir, path)

    def exit(self) -> None:
        # As OpenSSH's sftp-server does: without an exit status, OpenSSH's scp (which speaks
        # SFTP) reports a transfer that worked as failed. (asyncssh's scp sends its own.)
        if self.channel.get_subsystem() == "sftp":
            self.channel.exit(0)


def _shell_command(command: str | None) -> list[str]:
    """The user's login shell, running ``command``, or interactive when there is none.

    Not started as a login shell (``-l``): a profile may reset ``PATH`` and
    lose the dashboard's environment, which the session is for.
    """
    try:
        shell = pwd.getpwuid(os.getuid()).pw_shell
    except KeyError:
        shell = ""
    if not (shell and os.access(shell, os.X_OK)):
        shell = "/bin/sh"
    return [shell] if command is None else [shell, "-c", command]
