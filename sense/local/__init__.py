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
    host : str, optional
        Where to listen: by default loopback, or where the backend's dashboards reach the
        server (with ``"ray"``, the IP of the server's Ray node; the token is required as
        always).
    port : int
        0 (the default) picks any free port; see :attr:`url`.
    max_workers : int, optional
        The quota on dashboards running at once (default: ``SENSE_LOCAL_MAX_WORKERS``, else
        4 per CPU and at least 8).
    grace : float, optional
        Seconds between SIGTERM and SIGKILL when a dashboard is stopped.
    username, password : str, optional
        Credentials accepted besides the token.
    ssh_port : int or None
        The port of the dashboards' SSH server, on ``host``: 0 (the default) picks any free
        port; None serves no SSH (the ``SENSE_*SSH*`` variables are then absent). Only a
        backend whose dashboards run on this machine offers SSH.
    allow_hosts : iterable of str
        Names besides ``host``, ``localhost`` and the loopback addresses that browsers and
        clients may reach the server by (a DNS name, or an IP address); a request naming
        any other in its ``Host`` header is refused with 400 (against DNS rebinding).
    backend : str
        Where dashboards run: ``"local"`` (process groups on this machine, the default),
        ``"ray"`` (across a Ray cluster), or a backend installed under the entry-point group
        ``sense.backends``. Keyword options it takes of its own follow. For ``"local"``:
        ``prestart`` (False: a fresh interpreter for every dashboard, not a fork of a
        prestarted engine) and ``log_cap`` (bytes a dashboard's log holds before it is set
        aside as ``<id>.log.1`` and starts anew; 100 MiB by default). For ``"ray"``:
        ``ray_address`` (what ``ray.init(address=...)`` takes) and ``prestart``.

    Attributes
    ----------
    url : str
        The API root, e.g. ``http://127.0.0.1:41234``.
    project_url : str
        ``{url}/users/{owner}/projects/{project}``.
    master : dict or None
        The master dashboard that :meth:`attach` made of this process.
    project : LocalProject
        The project's rules: launching, stopping, listing dashboards, reading their output.
    page_url : str
        The web page, ``{url}/``: it asks for the token; :meth:`page_link` logs in.

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
        host=None,
        port=0,
        max_workers=None,
        grace=None,
        username=None,
        password=None,
        ssh_port=0,
        allow_hosts=(),
        backend="local",
        **backend_options,
    ) -> None:
        from sense.local import backends
        from sense.local.app import Credentials, create_app
        from sense.local.context import Project
        from sense.local.hosts import allowed_hosts, check_host_name
        from sense.local.project import LocalProject
        from sense.local.server import ServerThread, bind
        from sense.local.statedir import StateDir
        from sense.local.store import Store

        # An unknown backend, or a bad name to allow, is refused before anything is made or
        # locked.
        backend_class = backends.load(backend)
        backend_class.check_options(**backend_options)
        allow_hosts = [check_host_name(name) for name in allow_hosts]
        self.state = StateDir(project_dir if project_dir is not None else os.getcwd())
        self.state.lock()
        self.master = None
        #: What :meth:`attach` replaced in ``os.environ``: name -> value before (None: unset).
        self._replaced_environ: dict[str, str | None] = {}
        self._thread = None
        sock = self._store = self._backend = self._ssh = None
        try:
            self._backend = backend_class(
                str(self.state.project_dir),
                self.state,
                grace=backends.DEFAULT_GRACE if grace is None else grace,
                max_workers=max_workers,
                **backend_options,
            )
            if host is None:
                # A backend whose dashboards run elsewhere says where they reach the server.
                host = self._backend.listen_host() or "127.0.0.1"
            sock = bind(host, port)
            if ssh_port is not None and backend_class.offers_ssh:
                from sense.local.sshd.server import SshServer

                self._ssh = SshServer(self.state.path / "ssh_host_key", host, ssh_port)
            shown_host = f"[{host}]" if ":" in host else host
            info = Project(
                directory=str(self.state.project_dir),
                owner_id=_slug(getpass.getuser()),
                project_id=_slug(self.state.project_dir.name),
                api_url=f"http://{shown_host}:{sock.getsockname()[1]}",
                token=self.state.token(),
                ssh=None if self._ssh is None else self._ssh.access,
            )
            self._store = Store(self.state.db_path)
            self.project = LocalProject(info, self._store, self._backend)
            if self._ssh is not None:
                self._ssh.start(self.project)
            app = create_app(
                self.project,
                Credentials(info.token, username, password),
                hosts=allowed_hosts(host, allow_hosts),
            )
            self._page = app.state.page
            self._thread = ServerThread(app, sock)
            self._thread.start()
            self.state.write_server_file(info.api_url, info.url)
        except BaseException:
            if self._ssh is not None:
                self._ssh.stop()
            if self._thread is None:
                if self._backend is not None:
                    self._backend.shutdown()
                for opened in (sock, self._store):
                    if opened is not None:
                        opened.close()
            self.state.unlock()
            raise
        self.url = info.api_url
        self.page_url = f"{info.api_url}/"
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
        return self.project.context(self.project.get(self.master["id"]))

    def stop(self) -> None:
        """Stop every dashboard and the server; take back the variables :meth:`attach` set."""
        global _current
        if self._thread is None:
            return
        try:
            self.project.shutdown()
            self._page.close()
            if self._ssh is not None:
                self._ssh.stop()
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

    def page_link(self) -> str:
        """A link to the web page that logs a browser in once, within 15 minutes.

        It carries a one-time code, not the token: a notebook keeps its outputs, and
        the code in them is worth nothing once used, stale, or the server gone.

        Examples
        --------
        >>> server.page_link()                      # doctest: +SKIP
        'http://127.0.0.1:41234/?login=5mW...'
        """
        return f"{self.url}/?login={self._page.sessions.login_code()}"

    def _repr_html_(self) -> str:
        # A notebook shows the server with a link to its page, as dask's Client does.
        from sense.local.web import server_html

        link = self.page_link() if self._thread is not None else None
        return server_html(self.url, self.project_dir, link)


def start(project_dir=None, **options) -> LocalServer:
    """Start a local server in the background and make this process its master dashboard.

    Adds the master's ``SENSE_*`` variables (every spelling) to ``os.environ``, so that
    ``sense.launchWorkers`` and the rest work as on a Sense dashboard; :func:`stop`
    takes back exactly those and leaves every other variable as it finds it. Calling it
    again for the same project returns the running server. Options are those of
    :class:`LocalServer` (``prestart=False`` among them).

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
