"""Who is logged in to the web page: sessions behind a cookie and a key, and the checks
against forgery.

Logging in with the token (or a one-time login link) opens a session: a
random id, kept in this process's memory only, sent as an HttpOnly,
SameSite=Strict cookie, and a second secret, the session's key (its CSRF
token), handed to the page once, in the answer to the login, where the page
keeps it in its origin's ``localStorage``. Every request of the page's API,
reads, writes and event streams, carries the key (in the ``X-Sense-CSRF``
header, or ``?csrf=`` for an event stream, which cannot set headers): the
cookie alone opens nothing. That matters because browsers send a host's
cookies to all of its ports: a page on another port of ``127.0.0.1`` that
reloads itself receives this cookie, but it cannot read this origin's storage
(see docs/security.md, "The web page"). A request that changes something must
also come from the page's own origin (``Origin``, ``Sec-Fetch-Site``). A
session unused for :data:`IDLE_SECONDS` ends.

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
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import HTTPException, Request

CSRF_HEADER = "X-Sense-CSRF"
#: The query parameter that carries the key where no header can (an ``EventSource``).
CSRF_QUERY = "csrf"
#: How long a session lasts unused (a request, or a tick of an open event stream, uses it).
IDLE_SECONDS = 30 * 60
#: Sessions kept at most; logging in past it ends the oldest.
MAX_SESSIONS = 64
#: How long a one-time login link works.
LOGIN_LINK_SECONDS = 15 * 60
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


@dataclass
class Session:
    """One logged-in browser: the key its page keeps (``csrf``), and when it was last used."""

    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    #: When it was last used, on :attr:`Sessions.clock`.
    used: float = 0.0


class Sessions:
    """The open sessions and the unused one-time login codes of one server, in memory.

    ``clock`` tells the time in seconds (:func:`time.monotonic` unless a test says so).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._sessions: collections.OrderedDict[str, Session] = collections.OrderedDict()
        self._codes: dict[str, float] = {}

    def open(self) -> tuple[str, Session]:
        """A new session and its id (the cookie's value)."""
        session_id = secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[session_id] = session = Session(used=self.clock())
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        return session_id, session

    def find(self, session_id: str | None) -> Session | None:
        """The session of ``session_id``, used now; None if there is none, or it was idle
        for longer than :data:`IDLE_SECONDS` (then it ends)."""
        now = self.clock()
        with self._lock:
            session = self._sessions.get(session_id or "")
            if session is not None and now - session.used > IDLE_SECONDS:
                del self._sessions[session_id]
                return None
            if session is not None:
                session.used = now
            return session

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
        now = self.clock()
        with self._lock:
            self._codes = {c: until for c, until in self._codes.items() if until > now}
            self._codes[code] = now + LOGIN_LINK_SECONDS
        return code

    def use_login_code(self, code: str) -> bool:
        """Whether ``code`` is a valid login code; it is used up either way."""
        with self._lock:
            until = self._codes.pop(code, None)
        return until is not None and until > self.clock()


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
    # Host is one this server answers as: sense.local.hosts refused any other.
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    if fetch_site not in (None, "same-origin") or origin not in (None, own):
        raise HTTPException(403, f"refused: a request from {origin or fetch_site}, not this page")


def has_key(request: Request, session: Session, *, in_query: bool = False) -> bool:
    """Whether the request carries the session's key: in its header, or (``in_query``, for
    an event stream) as ``?csrf=``."""
    sent = request.headers.get(CSRF_HEADER) or ""
    if in_query and not sent:
        sent = request.query_params.get(CSRF_QUERY, "")
    return secrets.compare_digest(sent.encode(), session.csrf.encode())


def logged_in(request: Request) -> bool:
    """Whether the request comes from a logged-in page: the session's cookie and its key.

    A cookie without the key is no login: another port of this host may hold it.
    """
    session = session_of(request)
    return session is not None and has_key(request, session)


def page_session(request: Request) -> Session:
    """The dependency of the page's own routes: the session of the cookie and the key (in
    the header, or ``?csrf=`` for the event streams), else 401; 403 for a change from
    another origin."""
    if request.method not in SAFE_METHODS:
        check_same_origin(request)
    session = session_of(request)
    if session is None or not has_key(request, session, in_query=True):
        raise HTTPException(
            401,
            "not logged in: open the login link that `sense server` prints, or paste the token",
        )
    return session
