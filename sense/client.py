"""A client of one project's REST API: where it is, whose credentials, how patient, how busy.

As ``requests.Session`` is to ``requests.get``: the module's functions
(``sense.launchWorkers``, ...) call the methods of a default client, built
from the environment and the module settings at every call.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from sense import environment, peers, rest, urls, workers
from sense.rest import Timeout
from sense.status import Status


class Client:
    """The REST API of one Sense project, with its own settings and its own HTTP session.

    Parameters
    ----------
    url : str, optional
        The project's URL, ``{API}/users/{owner}/projects/{project}`` (what
        ``SENSE_PROJECT_URL`` holds). None: this dashboard's project, read from
        the environment at every request.
    auth : (str, str), optional
        (user, password) for HTTP Basic auth: an API token is the user, with an
        empty password. None: the environment's, as :func:`sense.getAuth` reads them,
        at every request.
    timeout : float or (float, float)
        Connect and read timeout of every request, in seconds.
    retries : int
        Retries of a failed connection, or of a 502/503/504 answer to a GET,
        PATCH or PUT (a POST only when it could not be sent).
    pool_size : int
        How many requests ``launchWorkers`` and ``stopWorkers`` send at once.

    Notes
    -----
    The cluster a client works on is always this dashboard's (``SENSE_DASHBOARD_ID``,
    ``SENSE_MASTER_ID``): a client changes where and how requests go, not who asks.
    Settings may be changed on the instance; the next request uses them.

    Examples
    --------
    >>> client = sense.Client(timeout=(2, 10), retries=0, pool_size=32)  # doctest: +SKIP
    >>> workers = client.launchWorkers(64, startupCode="import job")  # doctest: +SKIP
    """

    def __init__(
        self,
        url: str | None = None,
        auth: tuple[str, str] | None = None,
        timeout: Timeout = (5.0, 60.0),
        retries: int = 3,
        pool_size: int = 10,
    ) -> None:
        _check_settings(url, auth, timeout, retries, pool_size)
        #: The project URL; None: the environment's, at every request.
        self.url = None if url is None else url.rstrip("/")
        #: (user, password); None: the environment's credentials, at every request.
        self.auth = auth
        #: Connect and read timeout of every request, in seconds (one number: both).
        self.timeout = timeout
        #: Retries of a failed connection, or of a 502/503/504 to a GET, PATCH or PUT.
        self.retries = retries
        #: Requests sent at once by launchWorkers and stopWorkers.
        self.pool_size = pool_size
        self._session = None
        self._session_settings: tuple | None = None
        self._lock = threading.Lock()
        _CLIENTS.add(self)

    def __repr__(self) -> str:
        url = None if self.url is None else urls.without_userinfo(self.url)
        auth = "None" if self.auth is None else "<hidden>"  # a token is a password
        return (
            f"sense.Client(url={url!r}, auth={auth}, timeout={self.timeout!r}, "
            f"retries={self.retries!r}, pool_size={self.pool_size!r})"
        )

    # --- the HTTP layer ------------------------------------------------------------------

    @property
    def session(self):
        """The ``requests.Session`` this client sends with.

        Made at the first request, and made again after a fork (a child must
        not share its parent's sockets) or a change of ``retries`` or ``pool_size``.
        """
        settings = (self.retries, self.pool_size, rest.BACKOFF_FACTOR)
        with self._lock:
            if self._session is None or self._session_settings != settings:
                # A replaced session closes its connections once the requests using it end.
                self._session = rest.new_session(self.retries, self.pool_size)
                self._session_settings = settings
            return self._session

    def project_url(self) -> str:
        """The project's URL: :attr:`url`, else the environment's."""
        return self.url or environment.project_url()

    def request(
        self,
        method: str,
        path: str = "",
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        timeout: Timeout | None = None,
        stream: bool = False,
    ) -> Any:
        """Send one request to the project's API; return its JSON answer (None when empty).

        ``path`` is relative to the project URL (``""`` for the project itself,
        ``"/dashboards"``, ...). Raises :class:`sense.SenseAPIError` for an error
        answer, :class:`sense.SenseConnectionError` when the API cannot be reached
        or does not answer within the timeout. With ``stream``, the answer's body comes
        back as an iterator of chunks of bytes instead.

        Examples
        --------
        >>> sense.Client().request("GET")["id"]  # doctest: +SKIP
        'cluster-demo'
        """
        credentials = self.getAuth()
        return rest.send(
            self.session,
            method,
            self.project_url() + path,
            auth=(credentials["user"], credentials["pass"]),
            timeout=self.timeout if timeout is None else timeout,
            json=json,
            params=params,
            stream=stream,
        )

    # --- the API of the module ----------------------------------------------------------

    def getAuth(self) -> dict[str, str]:
        """This client's credentials, ``{"user": ..., "pass": ...}``; see :func:`sense.getAuth`."""
        if self.auth is None:
            return environment.auth()
        user, password = self.auth
        return {"user": user, "pass": password}

    def launchWorkers(
        self,
        n: int,
        size: str | int = "small",
        engine: str = "sense-ipython-engine",
        startupScript: str = "",
        startupCode: str = "",
        env: Mapping[str, str] | None = None,
    ) -> list[dict]:
        """Launch ``n`` workers of this dashboard, all or none; see :func:`sense.launchWorkers`."""
        env = {} if env is None else env
        return workers.launch(self, n, size, engine, startupScript, startupCode, env)

    def getWorkers(self) -> list[dict]:
        """The running dashboards of this cluster; see :func:`sense.getWorkers`."""
        return workers.cluster(self)

    def stopWorkers(self, *ids: int | str | dict) -> list[dict]:
        """Stop workers of this cluster (none given: all of them); see :func:`sense.stopWorkers`."""
        return workers.stop(self, ids)

    def getMaster(self) -> dict:
        """The master dashboard of this cluster; see :func:`sense.getMaster`."""
        return workers.master(self)

    def awaitWorkers(
        self,
        ids: Iterable[int | str | dict] | None = None,
        wait_for_completion: bool = False,
        timeout_seconds: float = 60,
    ) -> dict[str, list[dict]]:
        """Wait until workers are running (or have ended); see :func:`sense.awaitWorkers`."""
        return workers.await_(self, ids, wait_for_completion, timeout_seconds)

    def awaitPeers(
        self, n: int | None = None, port: int | None = None, timeout_seconds: float = 60
    ) -> list[dict]:
        """The other workers of this cluster, once each listens; see :func:`sense.awaitPeers`."""
        return peers.await_(self, n, port, timeout_seconds)

    def getDashboards(
        self,
        status: str | Iterable[str] | None = None,
        master_id: int | str | None = None,
        name: str | None = None,
    ) -> list[dict]:
        """The project's dashboards, any cluster, filtered by status, master or name.

        Parameters
        ----------
        status : str or list of str, optional
            ``"starting"``, ``"running"``, ``"stopped"`` or ``"failed"``, or several.
        master_id : int or str, optional
            Only the workers of this master.
        name : str, optional
            Only the dashboards of this name.

        Examples
        --------
        >>> [d["id"] for d in client.getDashboards(["starting", "running"])]  # doctest: +SKIP
        [3, 8, 9]
        """
        statuses = [] if status is None else [status] if isinstance(status, str) else status
        return workers.listing(
            self, statuses=[Status(s) for s in statuses], master_id=master_id, name=name
        )

    def getLogs(self, dashboard_id: int | str, offset: int = 0) -> Iterator[bytes]:
        """A dashboard's output, in chunks of bytes as they arrive, from byte ``offset``.

        A negative ``offset`` counts from the end (``-1000``: the last 1,000 bytes). Streamed:
        a log of any size takes little memory.

        Examples
        --------
        >>> for chunk in client.getLogs(7):  # doctest: +SKIP
        ...     sys.stdout.buffer.write(chunk)
        """
        params = {"offset": offset} if offset else None
        return self.request("GET", f"/dashboards/{dashboard_id}/logs", params=params, stream=True)

    def launch_workers(
        self,
        n: int,
        size: str | int = "small",
        engine: str = "sense-ipython-engine",
        script: str = "",
        code: str = "",
        env: Mapping[str, str] | None = None,
    ) -> list[dict]:
        """:meth:`launchWorkers` with the parameter names of sense 0.1.2 (``script``, ``code``)."""
        return self.launchWorkers(n, size, engine, startupScript=script, startupCode=code, env=env)

    list_workers = getWorkers
    stop_workers = stopWorkers
    get_auth = getAuth
    get_master = getMaster
    await_workers = awaitWorkers
    await_peers = awaitPeers
    list_dashboards = getDashboards
    get_logs = getLogs


def _check_settings(url: Any, auth: Any, timeout: Any, retries: Any, pool_size: Any) -> None:
    if url is not None:
        problem = urls.problem(url) if isinstance(url, str) else "it is not a string"
        if problem is not None:
            shown = urls.without_userinfo(url) if isinstance(url, str) else url
            raise ValueError(f"url {shown!r} is not a project's URL: {problem}")
    if auth is not None and not (
        isinstance(auth, tuple) and len(auth) == 2 and all(isinstance(a, str) for a in auth)
    ):
        raise ValueError("auth must be a (user, password) tuple of two strings")
    seconds = timeout if isinstance(timeout, tuple) else (timeout,)
    if len(seconds) not in (1, 2) or not all(_positive_number(s) for s in seconds):
        raise ValueError(f"timeout must be seconds > 0, or a (connect, read) pair, not {timeout!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be an int >= 0, not {retries!r}")
    if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
        raise ValueError(f"pool_size must be an int >= 1, not {pool_size!r}")


def _positive_number(value: Any) -> bool:
    return (
        not isinstance(value, bool) and isinstance(value, (int, float)) and 0 < value < float("inf")
    )


#: Every client of this process, so that a forked child gives each a session of its own.
_CLIENTS: weakref.WeakSet[Client] = weakref.WeakSet()


def _forget_sessions() -> None:
    # A forked child must not share the parent's sockets, nor a lock another thread held.
    for client in _CLIENTS:
        client._session = None
        client._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_sessions)

_default: Client | None = None


def default() -> Client:
    """The client of the module's functions, with the module settings as they are now.

    Its project and credentials are the environment's, read at every request;
    its settings are ``sense.rest.TIMEOUT``, ``sense.rest.RETRIES`` and
    ``sense.THREAD_POOL_SIZE``, read at every call.
    """
    global _default
    import sense

    if _default is None:
        _default = Client()
    _default.timeout = rest.TIMEOUT
    _default.retries = rest.RETRIES
    _default.pool_size = sense.THREAD_POOL_SIZE
    return _default
