"""The web page of the local server: ``GET /``, its login, and the event streams it follows.

The page is static HTML, CSS and JavaScript shipped in ``static/``; it reads
the REST API (logged in by a cookie, see :mod:`sense.local.websession`) and
two server-sent event streams: ``/web/events`` (the dashboards that change,
the quota, the load) and ``/web/dashboards/{id}/output`` (one dashboard's
output as it is written). Without a session, ``/`` is a login form and
nothing else answers.

A login (``/?login=CODE``, ``/?token=TOKEN``, the form) is answered with a
small page that hands the session's key to the page's script and goes on to
``/``, leaving that address: the key is never served again (see
:mod:`sense.local.websession`).

Example
-------
>>> install_page(app)                                      # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import html
import json
import threading
import urllib.parse
from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from sense.local.load import LoadMonitor
from sense.local.models import MAX_ID
from sense.local.store import ACTIVE
from sense.local.watch import (
    BEHIND_LIMIT,
    CHUNK,
    DashboardWatch,
    LogFollow,
    earlier,
    read_log,
    tail_offset,
)
from sense.local.websession import (
    Session,
    Sessions,
    check_same_origin,
    cookie_name,
    page_session,
    session_of,
)

#: Seconds between two looks at the dashboards, the load and an output.
TICK = 0.5
#: The files of ``static/`` that are served, and their types.
ASSETS = {
    "page.js": "text/javascript",
    "page.css": "text/css",
    "bounce.js": "text/javascript",
    "icon.svg": "image/svg+xml",
}
#: Every HTML answer: no script but ours, no framing, no caching, no Referer to another site
#: ("no-referrer" would make the login form's Origin "null", which is refused).
_HTML_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
_MAX_LOGIN_BODY = 4096

LoggedIn = Annotated[Session, Depends(page_session)]
DashboardId = Annotated[int, Path(ge=1, le=MAX_ID)]


class Page:
    """What the page keeps on the server: sessions, the load's history, and whether to close."""

    def __init__(self) -> None:
        self.sessions = Sessions()
        self.load = LoadMonitor()
        self.closing = threading.Event()

    def close(self) -> None:
        """End every event stream (they would hold up the server's shutdown)."""
        self.closing.set()


def install_page(app: FastAPI) -> Page:
    """Serve the web page from ``app``; returns its :class:`Page`."""
    app.state.page = page = Page()
    app.include_router(router)
    return page


def server_html(api_url: str, project_dir: str, login_link: str | None) -> str:
    """The server as a notebook shows it: where it is, and a link to its page.

    ``login_link`` logs in once (see :meth:`Sessions.login_code`); None when the server is
    stopped.
    """
    rows = "".join(
        f"<tr><th style='text-align:left'>{name}</th><td style='text-align:left'>"
        f"{html.escape(value)}</td></tr>"
        for name, value in (("Project", project_dir), ("API", api_url))
    )
    if login_link is None:
        link = "<p>stopped</p>"
    else:
        link = (
            f"<p><a href='{html.escape(login_link)}' target='_blank' rel='noopener noreferrer'>"
            "Open the web page</a> (the link logs in once, within 15 minutes)</p>"
        )
    return f"<div><strong>Local Sense server</strong><table>{rows}</table>{link}</div>"


router = APIRouter(include_in_schema=False)


# -- the page and its login ----------------------------------------------------------------------


@router.get("/")
def home(request: Request, token: str | None = None, login: str | None = None) -> Response:
    """The page when logged in; a login with ``?token=`` or ``?login=``; else the login form."""
    if token is not None:
        if not request.app.state.credentials.accept(token, ""):
            return _login_form("That link's token is not this server's: paste the token.", 401)
        return _open_session(request)
    if login is not None:
        if not request.app.state.page.sessions.use_login_code(login):
            return _login_form(
                "That login link was used already, or is older than 15 minutes: show the "
                "server again in the notebook, or paste the token.",
                401,
            )
        return _open_session(request)
    if session_of(request) is not None:
        return HTMLResponse(_asset("index.html"), headers=_HTML_HEADERS)
    if request.headers.get("sec-fetch-site") == "cross-site":
        # A SameSite=Strict cookie does not come with a link followed from another site
        # (a notebook's): reload once from here, and it does.
        return HTMLResponse(_asset("bounce.html"), headers=_HTML_HEADERS)
    return _login_form()


@router.get("/web/login")
def login_form() -> Response:
    """The login form, whatever the cookie: where a page without its key goes."""
    return _login_form()


@router.post("/web/login")
async def login(request: Request) -> Response:
    """The login form's answer: the token, as a form field."""
    check_same_origin(request)
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_LOGIN_BODY:
            raise HTTPException(413, f"a login form is less than {_MAX_LOGIN_BODY} bytes")
    fields = urllib.parse.parse_qs(body.decode(errors="replace"))
    token = fields.get("token", [""])[0].strip()
    if not request.app.state.credentials.accept(token, ""):
        return _login_form("That is not this server's token.", 401)
    return _open_session(request)


@router.post("/web/logout", status_code=204)
def logout(request: Request, session: LoggedIn) -> Response:
    """End the session; the page then shows the login form."""
    name = cookie_name(request)
    request.app.state.page.sessions.close(request.cookies[name])
    response = Response(status_code=204)
    response.delete_cookie(name, path="/", httponly=True, samesite="strict")
    return response


@router.get("/web/session")
def session_info(request: Request, session: LoggedIn) -> dict:
    """Where the project's API is (never the key: a route answers only with it)."""
    return {"project_url": urllib.parse.urlsplit(request.app.state.project.info.url).path}


@router.get("/web/static/{name}")
def asset(name: str) -> Response:
    """The page's scripts, styles and icon (nothing of the project: served to anyone)."""
    if name not in ASSETS:
        raise HTTPException(404, f"no file {name!r} here")
    return Response(
        _asset(name),
        media_type=ASSETS[name],
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


def _open_session(request: Request) -> Response:
    session_id, session = request.app.state.page.sessions.open()
    # The key, once, to the page's script (bounce.js), which keeps it and replaces this address
    # (with the code or token in it) by "/".
    key = f'<meta name="sense-csrf" content="{html.escape(session.csrf)}">'
    text = _asset("bounce.html").decode().replace("<!--key-->", key)
    response = HTMLResponse(text, headers=_HTML_HEADERS)
    response.set_cookie(
        cookie_name(request), session_id, path="/", httponly=True, samesite="strict"
    )
    return response


def _login_form(error: str = "", status: int = 200) -> HTMLResponse:
    message = f"<p class='error' role='alert'>{html.escape(error)}</p>" if error else ""
    text = _asset("login.html").decode().replace("<!--error-->", message)
    return HTMLResponse(text, status_code=status, headers=_HTML_HEADERS)


@functools.cache
def _asset(name: str) -> bytes:
    return resources.files("sense.local").joinpath("static", name).read_bytes()


# -- what the page does ----------------------------------------------------------------------------


@router.post("/web/stop-workers")
def stop_workers(request: Request, session: LoggedIn) -> list[dict]:
    """Stop every worker that has not ended, all at once; returns them as they ended."""
    project = request.app.state.project
    ids = [row["id"] for row in project.store.select(status=ACTIVE) if row["master_id"]]
    if not ids:
        return []
    with concurrent.futures.ThreadPoolExecutor(min(len(ids), 32)) as pool:
        return list(pool.map(project.stop, ids))


@router.get("/web/dashboards/{dashboard_id}/output/earlier")
def earlier_output(
    request: Request, dashboard_id: DashboardId, session: LoggedIn, before: int = Query(ge=0)
) -> dict:
    """The piece of a dashboard's output that ends at byte ``before``: ``{"offset", "text"}``."""
    project = request.app.state.project
    project.get(dashboard_id)
    offset, text = earlier(functools.partial(read_log, project, dashboard_id), before)
    return {"offset": offset, "text": text}


# -- event streams -------------------------------------------------------------------------------


@router.get("/web/events")
async def events(request: Request, session: LoggedIn) -> StreamingResponse:
    """Server-sent events: ``dashboards`` (those that changed; all active ones first), ``load``
    (new samples; the history first), and ``logout`` when the session ends."""
    watch = await run_in_threadpool(DashboardWatch, request.app.state.project)
    session_id = request.cookies[cookie_name(request)]
    return _stream(_dashboard_events(request.app.state.page, watch, session_id))


@router.get("/web/dashboards/{dashboard_id}/output")
async def output(
    request: Request,
    dashboard_id: DashboardId,
    session: LoggedIn,
    tail: int = Query(CHUNK, ge=0, le=BEHIND_LIMIT),
) -> StreamingResponse:
    """Server-sent events of one dashboard's output from its last ``tail`` bytes on:
    ``start``, then ``output`` pieces (each event's id: the offset after it, from which a
    reconnecting browser resumes), ``skipped`` when it fell far behind, ``end``."""
    project = request.app.state.project
    await run_in_threadpool(project.get, dashboard_id)
    read = functools.partial(read_log, project, dashboard_id)
    resume = request.headers.get("last-event-id", "")
    offset = int(resume) if resume.isdigit() else await run_in_threadpool(tail_offset, read, tail)
    follow = LogFollow(read, offset)
    page = request.app.state.page
    return _stream(_output_events(page, project, dashboard_id, follow, announce=not resume))


def _stream(events) -> StreamingResponse:
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _event(name: str, data, event_id: int | None = None) -> str:
    head = f"event: {name}\n" + (f"id: {event_id}\n" if event_id is not None else "")
    # One line of JSON: ASCII only, so no newline or line separator can split it.
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n"


async def _dashboard_events(page: Page, watch: DashboardWatch, session_id: str):
    yield "retry: 2000\n\n"
    first = True
    sent_until = 0.0
    while not page.closing.is_set():
        if page.sessions.find(session_id) is None:
            yield _event("logout", {})
            return
        changed = await run_in_threadpool(watch.poll)
        if changed or first:
            yield _event(
                "dashboards", {"dashboards": changed, "quota": watch.quota, "snapshot": first}
            )
        samples = await run_in_threadpool(page.load.update, watch.leaders)
        new = [sample for sample in samples if sample["time"] > sent_until]
        if new:
            yield _event("load", {"samples": new})
            sent_until = new[-1]["time"]
        first = False
        await asyncio.sleep(TICK)


async def _output_events(page: Page, project, dashboard_id: int, follow: LogFollow, announce):
    yield "retry: 2000\n\n"
    if announce:
        yield _event("start", {"offset": follow.position})
    while not page.closing.is_set():
        # The status first: once it has ended and nothing is left to read, all is read.
        status = (await run_in_threadpool(project.get, dashboard_id))["status"]
        start, text, skipped = await run_in_threadpool(follow.read)
        if skipped:
            yield _event("skipped", {"offset": start, "bytes": skipped})
        if text:
            yield _event("output", {"offset": start, "text": text}, follow.position)
        elif status not in ACTIVE:
            yield _event("end", {"status": status})
            return
        else:
            await asyncio.sleep(TICK)
