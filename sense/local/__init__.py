"""A local Sense-compatible server: ``launchWorkers`` starts real processes on this machine.

In a notebook or a script::

    import sense, sense.local
    sense.local.start()                 # this process becomes a master dashboard
    sense.launchWorkers(2, startupCode="print('hello')")
    sense.local.stop()                  # every worker ends; the SENSE_* variables go

or as a context manager: ``with sense.local.start(): ...``. From a shell,
``sense run SCRIPT`` runs a script as the master of a local project.

Importing this package is light: the server's dependencies (FastAPI, uvicorn,
pydantic) are imported by :func:`start`, not here, because the worker engine
lives in this package too.
"""

from __future__ import annotations

import getpass
import os
import re
import threading

__all__ = ["LocalServer", "start", "stop"]

_current: LocalServer | None = None
_current_lock = threading.Lock()


def _slug(text: str) -> str:
    """``text`` made safe for a URL path segment."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "local"


class LocalServer:
    """A local Sense server for one project directory, serving in a background thread.

    Parameters
    ----------
    project_dir : path, optional
        The project: workers run there, and its ``.sense/`` keeps the state. Default: the
        working directory.
    host : str
        Where to listen; loopback by default.
    port : int
        0 (the default) picks any free port; see :attr:`url`.
    max_workers : int, optional
        The quota on dashboards running at once (default: ``SENSE_LOCAL_MAX_WORKERS``, else
        4 per CPU and at least 8).
    grace : float, optional
        Seconds between SIGTERM and SIGKILL when a dashboard is stopped.
    log_cap : int, optional
        Bytes a dashboard's log holds before it is set aside as ``<id>.log.1`` and starts
        anew (default 100 MiB).
    username, password : str, optional
        Credentials accepted besides the token.

    Attributes
    ----------
    url : str
        The API root, e.g. ``http://127.0.0.1:41234``.
    project_url : str
        ``{url}/users/{owner}/projects/{project}``.
    master : dict or None
        The master dashboard that :meth:`attach` made of this process.

    Examples
    --------
    >>> with LocalServer("/tmp/demo") as server:       # doctest: +SKIP
    ...     server.attach()
    ...     sense.launchWorkers(1, startupCode="print(1)")
    """

    def __init__(
        self,
        project_dir=None,
        *,
        host="127.0.0.1",
        port=0,
        max_workers=None,
        grace=None,
        log_cap=None,
        username=None,
        password=None,
    ) -> None:
        from sense.local.app import Credentials, create_app
        from sense.local.context import Project
        from sense.local.project import LocalProject
        from sense.local.server import ServerThread, bind
        from sense.local.statedir import StateDir
        from sense.local.store import Store
        from sense.local.supervisor import (
            DEFAULT_GRACE,
            DEFAULT_LOG_CAP,
            LocalProcessSupervisor,
        )

        self.state = StateDir(project_dir if project_dir is not None else os.getcwd())
        self.state.lock()
        self.master = None
        #: What :meth:`attach` replaced in ``os.environ``: name -> value before (None: unset).
        self._replaced_environ: dict[str, str | None] = {}
        self._thread = None
        sock = self._store = None
        try:
            sock = bind(host, port)
            shown_host = f"[{host}]" if ":" in host else host
            info = Project(
                directory=str(self.state.project_dir),
                owner_id=_slug(getpass.getuser()),
                project_id=_slug(self.state.project_dir.name),
                api_url=f"http://{shown_host}:{sock.getsockname()[1]}",
                token=self.state.token(),
            )

            def supervisor(on_running, on_exit):
                return LocalProcessSupervisor(
                    info.directory,
                    self.state.log_path,
                    self.state.code_path,
                    on_running,
                    on_exit,
                    grace=DEFAULT_GRACE if grace is None else grace,
                    log_cap=DEFAULT_LOG_CAP if log_cap is None else log_cap,
                )

            self._store = Store(self.state.db_path)
            self.project = LocalProject(info, self._store, supervisor, max_workers=max_workers)
            app = create_app(self.project, Credentials(info.token, username, password))
            self._thread = ServerThread(app, sock)
            self._thread.start()
            self.state.write_server_file(info.api_url, info.url)
        except BaseException:
            if self._thread is None:
                for opened in (sock, self._store):
                    if opened is not None:
                        opened.close()
            self.state.unlock()
            raise
        self.url = info.api_url
        self.project_url = info.url
        self.project_dir = info.directory

    def attach(self, *, set_environ: bool = True) -> dict:
        """Make the calling process the project's master dashboard and return it.

        With ``set_environ``, ``os.environ`` gets the dashboard's ``SENSE_*`` context
        (:meth:`master_environment`) until :meth:`stop`; nothing else of it changes.
        """
        self.master = self.project.attach_master()
        self.state.write_server_file(self.url, self.project_url, self.master["id"])
        if set_environ:
            context = self.master_environment()
            self._replaced_environ = {name: os.environ.get(name) for name in context}
            os.environ.update(context)
        return self.master

    def master_environment(self) -> dict[str, str]:
        """The ``SENSE_*`` variables of :attr:`master`, as a shell or notebook needs them."""
        from sense.local.context import context

        return context(self.project.info, self.project.get(self.master["id"]))

    def stop(self) -> None:
        """Stop every dashboard and the server; take back the variables :meth:`attach` set."""
        global _current
        if self._thread is None:
            return
        try:
            self.project.shutdown()
            self._thread.stop()
            self._store.close()
        finally:
            self._thread = None
            self.state.remove_server_file()
            self.state.unlock()
            # Only what attach() set: a variable set since then is the user's, and stays.
            for name, value in self._replaced_environ.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            self._replaced_environ = {}
            with _current_lock:
                if _current is self:
                    _current = None

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self._thread is not None else "stopped"
        return f"<LocalServer {self.project_url} ({state})>"


def start(project_dir=None, **options) -> LocalServer:
    """Start a local server in the background and make this process its master dashboard.

    Adds the master's ``SENSE_*`` variables (every spelling) to ``os.environ``, so that
    ``sense.launchWorkers`` and the rest work as on a Sense dashboard; :func:`stop`
    takes back exactly those and leaves every other variable as it finds it. Calling it
    again for the same project returns the running server. Options are those of
    :class:`LocalServer`.

    Returns
    -------
    LocalServer
        Also a context manager that stops the server at the end of the block.

    Examples
    --------
    >>> with sense.local.start():                               # doctest: +SKIP
    ...     sense.launchWorkers(2, startupCode="print('hi')")
    """
    global _current
    with _current_lock:
        if _current is not None:
            wanted = os.path.realpath(project_dir if project_dir is not None else os.getcwd())
            if wanted == _current.project_dir:
                return _current
            from sense.errors import SenseError

            raise SenseError(
                f"a local server for {_current.project_dir} is running in this process: "
                "call sense.local.stop() first"
            )
        server = LocalServer(project_dir, **options)
        try:
            server.attach()
        except BaseException:
            server.stop()
            raise
        _current = server
        return server


def stop() -> None:
    """Stop the server that :func:`start` started, if any, and every dashboard it runs."""
    with _current_lock:
        server = _current
    if server is not None:
        server.stop()
