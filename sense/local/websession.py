"""Who is logged in to the web page: sessions behind a cookie, and the checks against forgery.

Logging in with the token (or a one-time login link) opens a session: a
random id, kept in this process's memory only, sent as an HttpOnly,
SameSite=Strict cookie. The cookie is not the token: it grants the page
and the API's routes to this browser until logout or until the server
ends, and tells nothing about the token. Each session has its own CSRF
token, which the page sends in the ``X-Sense-CSRF`` header of every request
that changes something; such a request must also come from the page's own
origin (``Origin``, ``Sec-Fetch-Site``). A form on another site can carry
the cookie (SameSite does not tell ports apart) but neither of those.

Example
-------
>>> sessions = Sessions()
>>> session_id, session = sessions.open()
>>> sessions.find(session_id) is session
True
"""

from __future__ import annotations

import collections
import secrets
import threading
import time
from dataclasses import dataclass, field

from fastapi import HTTPException, Request

CSRF_HEADER = "X-Sense-CSRF"
#: Sessions kept at most; logging in past it ends the oldest.
MAX_SESSIONS = 64
#: How long a one-time login link works.
LOGIN_LINK_SECONDS = 15 * 60
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


@dataclass
class Session:
    """One logged-in browser."""

    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)


class Sessions:
    """The open sessions and the unused one-time login codes of one server, in memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: collections.OrderedDict[str, Session] = collections.OrderedDict()
        self._codes: dict[str, float] = {}

    def open(self) -> tuple[str, Session]:
        """A new session and its id (the cookie's value)."""
        session_id = secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[session_id] = session = Session()
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        return session_id, session

    def find(self, session_id: str | None) -> Session | None:
        """The session of ``session_id``, or None."""
        with self._lock:
            return self._sessions.get(session_id or "")

    def close(self, session_id: str) -> None:
        """Log out."""
        with self._lock:
            self._sessions.pop(session_id, None)

    def login_code(self) -> str:
        """A code that opens one session, once, within :data:`LOGIN_LINK_SECONDS`.

        It lets a link log in without carrying the token: a notebook keeps its outputs,
        and a used or stale code in them opens nothing.
        """
        code = secrets.token_urlsafe(24)
        now = time.monotonic()
        with self._lock:
            self._codes = {c: until for c, until in self._codes.items() if until > now}
            self._codes[code] = now + LOGIN_LINK_SECONDS
        return code

    def use_login_code(self, code: str) -> bool:
        """Whether ``code`` is a valid login code; it is used up either way."""
        with self._lock:
            until = self._codes.pop(code, None)
        return until is not None and until > time.monotonic()


def cookie_name(request: Request) -> str:
    """The session cookie's name, with the server's port in it.

    Browsers keep cookies per host, not per port: two servers on one machine
    would overwrite each other's cookie under a single name.
    """
    return f"sense-session-{request.scope['server'][1]}"


def session_of(request: Request) -> Session | None:
    """The session of the request's cookie, or None."""
    return request.app.state.page.sessions.find(request.cookies.get(cookie_name(request)))


def check_same_origin(request: Request) -> None:
    """Refuse (403) a request that a browser says comes from another origin than the page's."""
    fetch_site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    if fetch_site not in (None, "same-origin") or origin not in (None, own):
        raise HTTPException(403, f"refused: a request from {origin or fetch_site}, not this page")


def check_request(request: Request, session: Session) -> None:
    """Refuse (403) a request that changes something without the session's CSRF token, or
    from another origin; any other request of a session passes."""
    if request.method in SAFE_METHODS:
        return
    check_same_origin(request)
    sent = request.headers.get(CSRF_HEADER, "")
    if not secrets.compare_digest(sent.encode(), session.csrf.encode()):
        raise HTTPException(403, f"refused: no valid {CSRF_HEADER} header (a cross-site request?)")


def logged_in(request: Request) -> bool:
    """Whether the request comes from a logged-in page, and may do what it asks.

    Raises
    ------
    HTTPException
        403 for a request of a session that fails :func:`check_request`.
    """
    session = session_of(request)
    if session is None:
        return False
    check_request(request, session)
    return True


def page_session(request: Request) -> Session:
    """The dependency of the page's own routes: the session, else 401 (403: see
    :func:`check_request`)."""
    session = session_of(request)
    if session is None:
        raise HTTPException(401, "not logged in: open the address that `sense server` prints")
    check_request(request, session)
    return session
