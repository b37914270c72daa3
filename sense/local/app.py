"""The REST API of the local server (the routes of docs/rest-api.md) as a FastAPI app.

Routes hold no state: each translates HTTP into one call on the
:class:`~sense.local.project.LocalProject` kept in ``app.state.project``.

Example
-------
>>> hosts = allowed_hosts("127.0.0.1")                               # doctest: +SKIP
>>> app = create_app(project, Credentials(token="t0k3n"), hosts=hosts)  # doctest: +SKIP
>>> uvicorn.run(app, host="127.0.0.1", port=8000)                      # doctest: +SKIP
"""

from __future__ import annotations

import base64
import json
import secrets
import sqlite3
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPBasic
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from sense import __version__, proof
from sense.local.hosts import HostCheck
from sense.local.models import (
    LAUNCH_FORM,
    MAX_ID,
    Dashboard,
    Error,
    LaunchRequest,
    Project,
    Status,
    StopRequest,
)
from sense.local.project import LocalProject, ProjectError
from sense.local.web import install_page
from sense.local.websession import SAFE_METHODS, check_same_origin, logged_in

MAX_BODY = 1024 * 1024
#: The header that tells a log's size.
LOG_SIZE = "X-Log-Size"
_FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")
#: A raw log is what workers printed: never read as HTML, and run as no page if opened as one.
_RAW = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"}
_ERRORS = {status: {"model": Error} for status in (400, 401, 404, 409, 413, 422, 429, 503)}


@dataclass(frozen=True)
class Credentials:
    """Who may call the API: the token as user with an empty password, or a username/password."""

    token: str = field(repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def accept(self, user: str, password: str) -> bool:
        # compare_digest on both, always, so that timing tells nothing about either.
        by_token = secrets.compare_digest(user.encode(), self.token.encode()) & (password == "")
        by_password = self.username is not None and self.password is not None
        by_password = by_password and secrets.compare_digest(
            f"{user}:{password}".encode(), f"{self.username}:{self.password}".encode()
        )
        return bool(by_token or by_password)


def create_app(
    project: LocalProject,
    credentials: Credentials,
    *,
    hosts: frozenset[str],
    max_body: int = MAX_BODY,
):
    """The app serving ``project`` to callers who present ``credentials``, by the names
    ``hosts`` (:func:`sense.local.hosts.allowed_hosts`)."""
    app = FastAPI(
        title="sense local server",
        version=__version__,
        description="A Sense-compatible REST API whose dashboards are processes on this machine.",
        # Served by the `docs` router below, behind the credentials like every route but /health.
        # No Swagger UI nor ReDoc: both load their scripts from a CDN (see docs/rest-api.md),
        # and nothing of this origin may run a script that is not the package's.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.project = project
    app.state.credentials = credentials
    app.state.max_body = max_body
    # Outermost: no route, nor the same-origin check that reads Host, sees another name.
    app.add_middleware(HostCheck, allowed=hosts)
    _install_error_handlers(app)
    app.include_router(health)
    app.include_router(projects)
    app.include_router(docs)
    install_page(app)
    return app


# -- dependencies ------------------------------------------------------------------------------


class BasicAuth(HTTPBasic):
    """HTTP Basic authentication against the server's credentials, or the web page's session
    cookie (:mod:`sense.local.websession`); 401 otherwise.

    An :class:`~fastapi.security.HTTPBasic`, so that OpenAPI documents the scheme; the
    header is read here, so that no malformed one gets past with anything but a 401.
    """

    async def __call__(self, request: Request) -> None:
        if request.method not in SAFE_METHODS:
            # A browser attaches a Basic login it remembers, or the page's cookie, even to a
            # form posted from another site: what a browser says comes from one is refused.
            check_same_origin(request)
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        user = password = None
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
            except ValueError:  # not base64 (even not ASCII), or not UTF-8 once decoded
                user = None
        if user is not None and request.app.state.credentials.accept(user, password):
            return
        # The web page's session: its cookie and its key (a cookie alone is no login).
        if logged_in(request):
            return
        # A challenge would make a browser pop up a password dialog over the page's requests.
        from_a_page = request.headers.get("sec-fetch-mode", "navigate") != "navigate"
        raise HTTPException(
            401,
            "authentication required: HTTP Basic with the API token as user and an empty "
            "password (sense.getAuth())",
            headers=None if from_a_page else {"WWW-Authenticate": 'Basic realm="sense"'},
        )


require_auth = BasicAuth(description="The API token as user and an empty password.")


# The dependencies are coroutines: FastAPI would run a plain function in a thread of its pool,
# which costs more than what each does.


async def known_query(request: Request) -> None:
    """A 422 for a query parameter the route does not take: a misspelt filter must not be
    silently ignored (``?stauts=running`` would list everything)."""
    route = request.scope.get("route")
    known = {param.alias for param in route.dependant.query_params} if route else set()
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        taken = ", ".join(sorted(known)) or "none"
        raise HTTPException(
            422, f"{', '.join(map(repr, unknown))}: not a query parameter here (it takes: {taken})"
        )


async def this_project(owner_id: str, project_id: str, request: Request) -> LocalProject:
    """The project named in the path; 404 for any other (another owner's included)."""
    project: LocalProject = request.app.state.project
    if (owner_id, project_id) != (project.info.owner_id, project.info.project_id):
        raise HTTPException(404, f"no project {project_id!r} of owner {owner_id!r} here")
    return project


ThisProject = Annotated[LocalProject, Depends(this_project)]
DashboardId = Annotated[int, Path(ge=1, le=MAX_ID)]


async def read_body(request: Request) -> dict | list[tuple[str, str]]:
    """The body as a dict (JSON) or a list of fields (a form), refused past ``max_body`` bytes."""
    limit = request.app.state.max_body
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"the body is larger than {limit} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"the body is larger than {limit} bytes")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in _FORMS:

        async def replay():
            return {"type": "http.request", "body": body, "more_body": False}

        form = await Request(request.scope, replay).form()
        return [(key, value) for key, value in form.multi_items() if isinstance(value, str)]
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
        # Unpaired surrogates (\ud800) parse, but are no text: nothing could store them.
        json.dumps(data, ensure_ascii=False).encode()
    except (ValueError, RecursionError) as error:  # RecursionError: nested too deep
        raise HTTPException(400, f"the body is neither JSON nor a form: {error}") from None
    if not isinstance(data, dict):
        raise HTTPException(422, "the body should be a JSON object")
    return data


# -- routes --------------------------------------------------------------------------------------

health = APIRouter(tags=["health"])


@health.get("/health")
def get_health() -> dict:
    """Ready to serve; needs no credentials."""
    return {"status": "ok"}


@health.get(proof.ROUTE, responses={422: {"model": Error}})
async def get_challenge(
    request: Request, nonce: Annotated[str, Query(pattern=proof.NONCE)]
) -> dict:
    """The proof that this server knows the API token: an HMAC of ``nonce`` keyed by it.

    Needs no credentials: a client asks it before it sends the token to a local address,
    where another program may have taken the port of a server that has ended.
    """
    return {"proof": proof.answer(request.app.state.credentials.token, nonce)}


projects = APIRouter(
    prefix="/users/{owner_id}/projects/{project_id}",
    dependencies=[Depends(require_auth), Depends(known_query)],
    responses=_ERRORS,
    tags=["project"],
)


@projects.get("", response_model=Project)
def get_project(project: ThisProject):
    """The project."""
    info = project.info
    return {
        "id": info.project_id,
        "owner_id": info.owner_id,
        "name": info.project_id,
        "directory": info.directory,
        "dashboards_url": f"{info.url}/dashboards",
    }


@projects.get("/dashboards", response_model=list[Dashboard])
@projects.get("/dashboards/", response_model=list[Dashboard], include_in_schema=False)
def list_dashboards(
    project: ThisProject,
    status: Annotated[
        list[Status] | None,
        Query(description="Only dashboards with this status; repeat it for any of several."),
    ] = None,
    master_id: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="Only the workers of this master.")
    ] = None,
    name: Annotated[str | None, Query(description="Only dashboards of this name.")] = None,
):
    """The project's dashboards, oldest first: every one, or those that match every filter given.

    ``?status=starting&status=running&master_id=3`` lists the workers of master 3 that have
    not ended.
    """
    return project.dashboards(
        status=tuple(status) if status else None, master_id=master_id, name=name
    )


def _body(json_schema: dict, form_schema: dict, *, required: bool) -> dict:
    """OpenAPI's ``requestBody`` of a route that reads JSON or a form (see :func:`read_body`)."""
    return {
        "requestBody": {
            "required": required,
            "content": {
                "application/json": {"schema": json_schema},
                "application/x-www-form-urlencoded": {"schema": form_schema},
            },
        }
    }


@projects.post(
    "/dashboards",
    status_code=201,
    response_model=Dashboard,
    # No body at all launches a master with every default.
    openapi_extra=_body(LaunchRequest.model_json_schema(), LAUNCH_FORM, required=False),
)
@projects.post("/dashboards/", status_code=201, response_model=Dashboard, include_in_schema=False)
async def launch_dashboard(request: Request, project: ThisProject):
    """Launch a dashboard: a worker of ``master_id``, or a master without it.

    Startup fields may be spelled ``startup_script``/``startup_code``,
    ``startupScript``/``startupCode`` or ``script``/``code``; a form carries
    ``env`` as JSON text or as ``env[NAME]`` fields.
    """
    data = await read_body(request)
    if isinstance(data, list):
        try:
            data = LaunchRequest.from_form(data)
        except ValueError as error:
            raise HTTPException(422, str(error)) from None
    launch = LaunchRequest.model_validate(data)
    return await run_in_threadpool(project.launch, launch)


@projects.get("/dashboards/{dashboard_id}", response_model=Dashboard)
def get_dashboard(dashboard_id: DashboardId, project: ThisProject):
    """One dashboard."""
    return project.dashboard(dashboard_id)


@projects.patch(
    "/dashboards/{dashboard_id}",
    response_model=Dashboard,
    openapi_extra=_body(
        StopRequest.model_json_schema(), StopRequest.model_json_schema(), required=True
    ),
)
async def patch_dashboard(dashboard_id: DashboardId, request: Request, project: ThisProject):
    """Stop a dashboard with ``{"status": "stopped"}``; returns it once it has ended."""
    data = await read_body(request)
    StopRequest.model_validate(dict(data) if isinstance(data, list) else data)
    return await run_in_threadpool(project.stop, dashboard_id)


@projects.put("/dashboards/{dashboard_id}/stop", response_model=Dashboard)
def stop_dashboard(dashboard_id: DashboardId, project: ThisProject):
    """Stop a dashboard (the later generation's call); returns it once it has ended."""
    return project.stop(dashboard_id)


@projects.get("/dashboards/{dashboard_id}/workers", response_model=list[Dashboard])
def list_workers(dashboard_id: DashboardId, project: ThisProject):
    """The running workers of master ``dashboard_id``."""
    return project.workers(dashboard_id)


# `Response`, not `PlainTextResponse`, as the class: with it OpenAPI would say that errors are
# text too; they are JSON, as everywhere.
@projects.get(
    "/dashboards/{dashboard_id}/logs",
    response_class=Response,
    responses={
        200: {
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "headers": {
                LOG_SIZE: {
                    "description": "The log's size in bytes when it was read: the offset "
                    "from which to ask for what comes next.",
                    "schema": {"type": "integer"},
                }
            },
        }
    },
)
def get_logs(
    dashboard_id: DashboardId,
    project: ThisProject,
    offset: Annotated[
        int,
        Query(
            description="The first byte to send: from the start if 0 or more, from the end if "
            "negative (-1000: the last 1,000 bytes).",
        ),
    ] = 0,
) -> Response:
    """The dashboard's output so far, as text, streamed from where its backend keeps it.

    A follower asks again with ``offset`` set to the last ``X-Log-Size``, and gets
    only what is new.
    """
    size, chunks = project.read_logs(dashboard_id, offset)
    return StreamingResponse(
        chunks, media_type="text/plain; charset=utf-8", headers={LOG_SIZE: str(size), **_RAW}
    )


docs = APIRouter(dependencies=[Depends(require_auth)], include_in_schema=False)


@docs.get("/openapi.json")
def get_openapi(request: Request) -> JSONResponse:
    """The OpenAPI description of this API, saying which engines its backend runs."""
    description = request.app.openapi()
    pattern = request.app.state.project.backend.engine_pattern
    if pattern is not None:
        launch = description["paths"]["/users/{owner_id}/projects/{project_id}/dashboards"]
        for body in launch["post"]["requestBody"]["content"].values():
            body["schema"]["properties"]["engine"]["pattern"] = pattern
    return JSONResponse(description)


# -- errors: always {"error": "..."} -------------------------------------------------------------


def describe(errors: list[dict]) -> str:
    """Validation errors as one line that names each field."""
    parts = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ()) if part not in ("body", "path", "query")]
        message = error.get("msg", "").removeprefix("Value error, ")
        parts.append(f"{'.'.join(loc)}: {message}" if loc else message)
    return "; ".join(parts)


def _install_error_handlers(app: FastAPI) -> None:
    def answer(status: int, message: str, headers=None) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, error):
        return answer(error.status_code, str(error.detail), getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def request_invalid(request, error):
        return answer(422, describe(error.errors()))

    @app.exception_handler(ValidationError)
    async def body_invalid(request, error):
        return answer(422, describe(error.errors()))

    @app.exception_handler(ProjectError)
    async def refused(request, error):
        return answer(error.status, str(error))

    @app.exception_handler(sqlite3.OperationalError)
    async def store_failed(request, error):
        # Mostly a full disk: the server itself is sound, and says what is wrong.
        return answer(503, f"the dashboards' database cannot be written: {error}")

    @app.exception_handler(Exception)
    async def crashed(request, error):
        return answer(500, f"internal error: {type(error).__name__}: {error}")
