"""The HTTP layer's side of :mod:`sense.proof`: every new connection to this machine proves,
before any request goes on it, that the server knows the token the request carries.

Imported only at the first REST call: it imports requests and urllib3.

Example
-------
>>> session.mount("http://", ProvingAdapter())                  # doctest: +SKIP
>>> with expecting(token, read_timeout=60):                     # doctest: +SKIP
...     session.get(url, auth=(token, ""))
"""

from __future__ import annotations

import contextlib
import contextvars

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.exceptions import NewConnectionError, ReadTimeoutError

from sense import proof, urls

#: The token of the request being sent in this thread, that a new connection must see proven,
#: and the seconds its answer may take; None: no proof is asked (https, another machine, a
#: username and password).
_EXPECTED: contextvars.ContextVar[tuple[str, float] | None] = contextvars.ContextVar(
    "sense_expected_proof", default=None
)


@contextlib.contextmanager
def expecting(token: str | None, read_timeout: float):
    """Within the block, new connections to this machine prove they know ``token`` within
    ``read_timeout`` seconds (None: nothing is asked)."""
    reset = _EXPECTED.set(None if token is None else (token, read_timeout))
    try:
        yield
    finally:
        _EXPECTED.reset(reset)


class ProvingConnection(HTTPConnection):
    """An HTTP connection that, once connected to this machine, has the server prove it
    knows the token before the request that opened it is sent."""

    def connect(self) -> None:
        super().connect()
        expected = _EXPECTED.get()
        if expected is None or not urls.is_loopback_host(self.host):
            return
        token, read_timeout = expected
        host = f"[{self.host}]" if ":" in self.host else self.host
        connect_timeout = self.sock.gettimeout()
        try:
            self.sock.settimeout(read_timeout)
            kept_open = proof.prove(self.sock, f"{host}:{self.port}", token)
            self.sock.settimeout(connect_timeout)
        except TimeoutError:
            self.close()
            # As a request's own answer that does not come: final, not tried again.
            raise ReadTimeoutError(None, proof.ROUTE, f"no proof within {read_timeout} s") from None
        except OSError as error:
            self.close()
            # The request has not left: as a connection that could not be made, tried again.
            message = f"the connection failed during its proof: {error}"
            raise NewConnectionError(self, message) from error
        except BaseException:
            self.close()
            raise
        if not kept_open:
            # A server that closes every connection after one answer (no keep-alive): the
            # request goes on a connection made the moment after its proof, to the port that
            # it came from (only a server that ended in that moment could lose it to another).
            self.sock.close()
            super().connect()


class ProvingPool(HTTPConnectionPool):
    ConnectionCls = ProvingConnection


class ProvingAdapter(HTTPAdapter):
    """requests' adapter, whose plain-HTTP connections are :class:`ProvingConnection`."""

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        pools = self.poolmanager.pool_classes_by_scheme
        self.poolmanager.pool_classes_by_scheme = {**pools, "http": ProvingPool}
