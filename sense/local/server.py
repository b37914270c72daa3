"""Serving an app with uvicorn in a background thread of this process.

The socket is bound before uvicorn starts, so that port 0 (any free port)
is known at once, and every dashboard's environment can name the real one.

Example
-------
>>> sock = bind("127.0.0.1", 0)                          # doctest: +SKIP
>>> thread = ServerThread(app, sock); thread.start()     # doctest: +SKIP
>>> thread.url                                           # doctest: +SKIP
'http://127.0.0.1:41234'
"""

from __future__ import annotations

import socket
import threading

import uvicorn

STARTUP_TIMEOUT = 10.0


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
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=shutdown_timeout,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="sense-server", daemon=True
        )

    def start(self) -> None:
        """Serve, and return once requests are answered."""
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
