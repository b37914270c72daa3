"""The HTTP layer: sessions with retries, a timeout on every request, errors that say what happened.

``requests`` is imported at the first call, not at ``import sense``: a worker
that only reads its environment starts as fast as bare Python. The session
and the settings belong to a :class:`sense.Client`; the module's functions
(``sense.launchWorkers``, ...) use these module settings, read at every call::

    sense.rest.TIMEOUT = (5.0, 60.0)   # (connect, read) seconds
    sense.rest.RETRIES = 3             # retries of a failed connection or a 502/503/504
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from sense import proof, urls
from sense.errors import SenseAPIError, SenseConnectionError

log = logging.getLogger("sense")

#: (connect, read) seconds, or one number for both.
Timeout = float | tuple[float, float]

TIMEOUT: Timeout = (5.0, 60.0)
RETRIES = 3
BACKOFF_FACTOR = 0.25

#: Per-request proxies that override the environment's (HTTP_PROXY, ALL_PROXY, ...): none.
NO_PROXY = {"http": None, "https": None, "all": None}
#: Bytes of a streamed answer handed over at a time.
STREAM_CHUNK = 64 * 1024


def new_session(retries: int, pool_size: int):
    """A ``requests.Session`` that retries as :func:`sense.retry.policy` says.

    It keeps up to ``pool_size`` connections open, one for each request a
    client sends at once.
    """
    import requests
    from requests.adapters import HTTPAdapter

    from sense.proving import ProvingAdapter
    from sense.retry import policy

    session = requests.Session()
    for prefix, adapter_class in (("http://", ProvingAdapter), ("https://", HTTPAdapter)):
        adapter = adapter_class(
            max_retries=policy(retries, BACKOFF_FACTOR),
            pool_connections=4,
            pool_maxsize=max(1, pool_size),
        )
        session.mount(prefix, adapter)
    session.headers["User-Agent"] = "sense-python"
    return session


def send(
    session,
    method: str,
    url: str,
    *,
    auth: tuple[str, str] | None,
    timeout: Timeout,
    json: Any = None,
    params: Mapping[str, Any] | None = None,
    stream: bool = False,
) -> Any:
    """Send one request to the API; return the JSON answer (None for an empty one).

    With ``stream``, the answer's body as it comes instead, in chunks of bytes (a log of
    any size then takes little memory).

    A request to this machine (localhost, 127.0.0.0/8, ::1) never goes
    through a proxy, whatever the environment's proxy variables say: a
    proxy elsewhere cannot reach this machine's loopback. Over plain HTTP, a
    token goes only on a connection whose server proved it knows it (:mod:`sense.proof`).

    Raises
    ------
    SenseAPIError
        The server answered with a status other than 2xx, or with a body that is not JSON.
    SenseConnectionError
        The server could not be reached, or did not answer within ``timeout``.

    Examples
    --------
    >>> send(new_session(3, 10), "GET", url, auth=("tok", ""), timeout=(5, 60))  # doctest: +SKIP
    """
    import requests

    from sense import proving

    timeout = timeout_pair(timeout)
    shown_url = urls.without_userinfo(url)
    if params:
        shown_url += "?" + urlencode(params, doseq=True)
    try:
        if urls.is_loopback(url) and url.lower().startswith("http://"):
            request = requests.Request(method.upper(), url, json=json, params=params, auth=auth)
            token = auth[0] if proof.needed(url, auth) else None
            with proving.expecting(token, read_timeout=timeout[1]):
                response = _send_here(session, request, timeout=timeout, stream=stream)
        else:
            response = session.request(
                method,
                url,
                json=json,
                params=params,
                auth=auth,
                timeout=timeout,
                stream=stream,
                # A copy: requests adds the environment's settings into the dict it is given.
                proxies=dict(NO_PROXY) if urls.is_loopback(url) else None,
            )
    except proof.Unproven as error:
        # Not "unreachable": a proxy's garbage is an answer that a clean-up may try again.
        raise SenseConnectionError(f"{method} {shown_url}: {error}") from None
    except requests.RequestException as error:
        raise SenseConnectionError(
            f"{method} {shown_url}: {_connection_failure(error, url, timeout)}",
            unreachable=_could_not_connect(error),
        ) from error
    log.debug("%s %s -> %s", method, shown_url, response.status_code)
    if not 200 <= response.status_code < 300:
        raise SenseAPIError(
            _error_message(response),
            status_code=response.status_code,
            method=method,
            url=shown_url,
        )
    if stream:
        return response.iter_content(STREAM_CHUNK)
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        raise SenseAPIError(
            f"the answer is not JSON: {_excerpt(response.text)}",
            status_code=response.status_code,
            method=method,
            url=shown_url,
        ) from None


def _send_here(session, request, *, timeout: tuple[float, float], stream: bool):
    """Send a plain-HTTP ``request`` to this machine as ``session.request`` would, without
    reading the environment for proxies, certificates and ``.netrc``: no proxy reaches this
    machine's loopback (see :data:`NO_PROXY`), plain HTTP has no certificates and every
    request carries its credentials. Reading them took a fifth of each request's CPU."""
    return session.send(
        session.prepare_request(request),
        timeout=timeout,
        stream=stream,
        allow_redirects=True,
        proxies=NO_PROXY,
        verify=session.verify,
        cert=session.cert,
    )


def timeout_pair(timeout: Timeout) -> tuple[float, float]:
    """(connect, read) seconds of a timeout given as a pair, or as one number for both."""
    return tuple(timeout) if isinstance(timeout, tuple) else (timeout, timeout)


def _connection_failure(error: Exception, url: str, timeout: tuple[float, float]) -> str:
    """What went wrong on the way to the API, in a few words."""
    import requests

    connect, read = timeout
    if isinstance(error, requests.ConnectTimeout):
        return f"could not connect within {connect} s"
    if isinstance(error, requests.Timeout):
        return f"no answer within {read} s"
    if isinstance(error, requests.exceptions.ProxyError):
        proxy = requests.utils.select_proxy(url, requests.utils.get_environ_proxies(url))
        return f"could not reach the API through the proxy {urls.without_userinfo(proxy or '')}"
    return "could not reach the API"


def _could_not_connect(error: Exception) -> bool:
    """Whether no connection to the API (or to its proxy) could be made: the request never left."""
    import requests
    from urllib3.exceptions import ConnectTimeoutError  # a refused connection is one too

    if isinstance(error, (requests.ConnectTimeout, requests.exceptions.ProxyError)):
        return True
    reason = getattr(error.args[0], "reason", None) if error.args else None
    return isinstance(reason, ConnectTimeoutError)


def _error_message(response) -> str:
    """The server's own words for what went wrong, whatever the shape of its answer."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key in ("error", "message", "detail"):
            if body.get(key):
                return str(body[key])
    excerpt = _excerpt(response.text)
    return f"{response.reason}: {excerpt}" if excerpt else str(response.reason)


def _excerpt(text: str, limit: int = 200) -> str:
    """A short, single-line rendering of a body, HTML tags taken out."""
    plain = " ".join(re.sub(r"<[^>]*>", " ", text).split())
    return plain if len(plain) <= limit else plain[: limit - 1] + "…"
