"""The HTTP layer: one shared session, a timeout on every request, errors that say what happened.

``requests`` is imported at the first call, not at ``import sense``: a worker
that only reads its environment starts as fast as bare Python.

Settings (module attributes, read at every request)::

    sense.rest.TIMEOUT = (5.0, 60.0)   # (connect, read) seconds
    sense.rest.RETRIES = 3             # retries of a failed connection or a 502/503/504
"""

from __future__ import annotations

import logging
import os
import re
import threading
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sense import environment
from sense.errors import SenseAPIError, SenseConnectionError

log = logging.getLogger("sense")

TIMEOUT: tuple[float, float] = (5.0, 60.0)
RETRIES = 3
BACKOFF_FACTOR = 0.25
#: Connections kept open per host: enough for sense.THREAD_POOL_SIZE requests at once.
POOL_SIZE = 32

_session = None
_session_lock = threading.Lock()


def session():
    """The ``requests.Session`` that every call of this process shares."""
    global _session
    with _session_lock:
        if _session is None:
            _session = _new_session()
        return _session


def _new_session():
    import requests
    from requests.adapters import HTTPAdapter

    from sense.retry import policy

    new = requests.Session()
    adapter = HTTPAdapter(
        max_retries=policy(RETRIES, BACKOFF_FACTOR), pool_connections=4, pool_maxsize=POOL_SIZE
    )
    new.mount("http://", adapter)
    new.mount("https://", adapter)
    new.headers["User-Agent"] = "sense-python"
    return new


def _forget_session() -> None:
    # A forked child must not share the parent's sockets, nor a lock another thread held.
    global _session, _session_lock
    _session = None
    _session_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_session)


def request(method: str, url: str, *, json: Any = None) -> Any:
    """Send one request to the API with the dashboard's credentials; return the JSON answer.

    Raises
    ------
    SenseAPIError
        The server answered with a status other than 2xx, or with a body that is not JSON.
    SenseConnectionError
        The server could not be reached, or did not answer within ``TIMEOUT``.

    Examples
    --------
    >>> project = request("GET", environment.project_url())  # doctest: +SKIP
    """
    import requests

    credentials = environment.auth()
    shown_url = _without_userinfo(url)
    try:
        response = session().request(
            method,
            url,
            json=json,
            auth=(credentials["user"], credentials["pass"]),
            timeout=TIMEOUT,
        )
    except requests.Timeout as error:
        raise SenseConnectionError(f"{method} {shown_url}: {_timeout_reason(error)}") from error
    except requests.RequestException as error:
        raise SenseConnectionError(f"{method} {shown_url}: could not reach the API") from error
    log.debug("%s %s -> %s", method, shown_url, response.status_code)
    if not 200 <= response.status_code < 300:
        raise SenseAPIError(
            _error_message(response),
            status_code=response.status_code,
            method=method,
            url=shown_url,
        )
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


def _timeout_reason(error: Exception) -> str:
    import requests

    connect, read = TIMEOUT
    if isinstance(error, requests.ConnectTimeout):
        return f"could not connect within {connect} s"
    return f"no answer within {read} s"


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


def _without_userinfo(url: str) -> str:
    """The URL with any ``user:password@`` taken out, fit to show."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=host))
