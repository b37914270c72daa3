"""Serving an app with uvicorn in a background thread of this process.

The socket is bound before uvicorn starts, so that port 0 (any free port)
is known at once, and every dashboard's environment can name the real one.

uvicorn has no timeout for a request to arrive (``timeout_keep_alive`` counts
only between requests), so a client that opens connections and sends half a
request would hold them all, until the process runs out of file descriptors
and answers no one: each connection waits in a
:class:`~sense.local.lobby.Lobby` until its request has arrived whole.

Example
-------
>>> sock = bind("127.0.0.1", 0)                          # doctest: +SKIP
>>> thread = ServerThread(app, sock); thread.start()     # doctest: +SKIP
>>> thread.url                                           # doctest: +SKIP
'http://127.0.0.1:41234'
"""

from __future__ import annotations

import functools
import resource
import socket
import threading

import uvicorn
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from sense.local.lobby import Lobby

STARTUP_TIMEOUT = 10.0
#: Seconds for a request (head and body) to arrive once its connection is open or idle.
REQUEST_TIMEOUT = 10.0
#: Connections whose request has not yet arrived whole, at most: past it the oldest is closed.
MAX_WAITING = 512
#: Requests served at once, at most: past it the answer is 503.
MAX_CONCURRENCY = 1024


def bind(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (0: any free port)."""
    # IPPROTO_TCP by name: asyncio turns Nagle's algorithm off only on connections of such
    # sockets, and with it on, an answer's body waits for the client to acknowledge its
    # headers, which a client delays by up to 40 ms.
    sock = socket.socket(
        socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP
    )
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


class ServerThread:
    """uvicorn serving ``app`` on ``sock`` in a daemon thread.

    Parameters
    ----------
    app : ASGI app
    sock : socket.socket
        A bound, listening socket (see :func:`bind`).
    shutdown_timeout : float
        Seconds that requests still running get when the server stops.
    """

    def __init__(self, app, sock: socket.socket, *, shutdown_timeout: float = 10.0) -> None:
        self.sock = sock
        host, port = sock.getsockname()[:2]
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        config = uvicorn.Config(
            app,
            http=functools.partial(_TimedHTTP, lobby=Lobby(MAX_WAITING, REQUEST_TIMEOUT)),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=shutdown_timeout,
            limit_concurrency=MAX_CONCURRENCY,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="sense-server", daemon=True
        )

    def start(self) -> None:
        """Serve, and return once requests are answered."""
        raise_open_file_limit()
        self._thread.start()
        for _ in range(int(STARTUP_TIMEOUT / 0.01)):
            if self._server.started or not self._thread.is_alive():
                break
            self._thread.join(0.01)
        if not self._server.started:
            raise RuntimeError(f"the local Sense server did not start on {self.url}")

    def stop(self) -> None:
        """Stop serving and wait for the thread to end."""
        self._server.should_exit = True
        self._thread.join()
        self.sock.close()


def raise_open_file_limit() -> None:
    """Allow this process as many open files as the system lets it (the hard limit).

    Many systems set a soft limit of 1024 for the sake of ``select()``, which
    the server does not use; the lobbies bound what clients can hold anyway.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class _TimedHTTP(AutoHTTPProtocol):
    """uvicorn's HTTP protocol, in which a connection waits in the lobby while its request
    has not arrived whole: from when it opens, and again from each answer on."""

    def __init__(self, *args, lobby: Lobby, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._lobby = lobby
        self._answered = None  # the request last answered (a new one is another)

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._lobby.enter(self, transport.close)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._leave_once_arrived()

    def on_response_complete(self) -> None:
        if not self.transport.is_closing():
            self._answered = self.cycle
            self._lobby.enter(self, self.transport.close)
        super().on_response_complete()  # may start on a request sent meanwhile
        self._leave_once_arrived()

    def connection_lost(self, exc) -> None:
        self._lobby.leave(self)
        super().connection_lost(exc)

    def _leave_once_arrived(self) -> None:
        if self.cycle is not None and self.cycle is not self._answered and not self.cycle.more_body:
            self._lobby.leave(self)
