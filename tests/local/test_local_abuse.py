"""Abuse of the local server (issue 5): fuzzing, no credentials, another owner, the network.

Every test runs a real server on a free loopback port and speaks real HTTP to it.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests
import schemathesis
from conftest import read_exports, sense_command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sense.local import LocalServer

pytestmark = pytest.mark.timeout(60)

P = "/users/{owner_id}/projects/{project_id}"
#: Every operation of the API, as OpenAPI names it (a test checks that the list is complete).
OPERATIONS = [
    ("GET", "/health"),
    ("GET", "/challenge"),
    ("GET", P),
    ("GET", f"{P}/dashboards"),
    ("POST", f"{P}/dashboards"),
    ("GET", f"{P}/dashboards/{{dashboard_id}}"),
    ("PATCH", f"{P}/dashboards/{{dashboard_id}}"),
    ("PUT", f"{P}/dashboards/{{dashboard_id}}/stop"),
    ("GET", f"{P}/dashboards/{{dashboard_id}}/workers"),
    ("GET", f"{P}/dashboards/{{dashboard_id}}/logs"),
]
#: The operations that need no credentials: readiness, and the proof that the server knows
#: the token, which a client asks before it sends the token (README, Settings).
OPEN = OPERATIONS[:2]
#: The project's directory name, and so its id: one that no error message would say by chance.
TARGET = "abuse-target"
#: A startup script of the project: a launch names a file of the project, or is a 422.
SCRIPT = "job.py"


@contextlib.contextmanager
def serving_target(parent: Path) -> Iterator[LocalServer]:
    """A server with a low quota (a successful launch starts a real process), attached."""
    directory = parent / TARGET
    directory.mkdir()
    (directory / SCRIPT).write_text("pass\n")
    with LocalServer(directory, grace=1.0, max_workers=2) as running:
        running.attach(set_environ=False)
        yield running


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    """The server of the module's tests that launch and stop nothing (each checks it, or is
    answered before any launch could happen): a server takes a moment to start."""
    with serving_target(tmp_path_factory.mktemp("abuse")) as running:
        yield running


@pytest.fixture
def own_target(tmp_path):
    """A server of the test's own, for a test that launches."""
    with serving_target(tmp_path) as running:
        yield running


def token_auth(server: LocalServer) -> tuple[str, str]:
    return (server.project.info.token, "")


@pytest.fixture
def auth(target) -> tuple[str, str]:
    return token_auth(target)


def openapi(target, auth) -> dict:
    answer = requests.get(f"{target.url}/openapi.json", auth=auth, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def operations_of(schema: dict) -> list[tuple[str, str]]:
    return [(method.upper(), path) for path, item in schema["paths"].items() for method in item]


def real_path(path: str, server: LocalServer, **names: str) -> str:
    """``path`` with its parameters naming the server's project and its master dashboard."""
    info = server.project.info
    values = {"owner_id": info.owner_id, "project_id": info.project_id}
    values.update(names, dashboard_id=server.master["id"])
    return path.format(**values)


# -- schemathesis against /openapi.json, with credentials ----------------------------------------


@pytest.fixture
def api_schema(own_target):
    """The served OpenAPI, loaded by schemathesis, aimed at the real project half of the time."""
    target, auth = own_target, token_auth(own_target)
    config = schemathesis.Config.from_dict(
        {"auth": {"basic": {"username": auth[0], "password": ""}}}
    )
    schema = schemathesis.openapi.from_url(
        f"{target.url}/openapi.json", config=config, auth=auth, timeout=10
    )
    info = target.project.info
    master_id = target.master["id"]
    # Dashboards for the routes of one to find: the master, a worker that ended, an idle one.
    launches = [{"master_id": master_id, "startup_code": "pass"}, {"master_id": master_id}]
    url = target.url + real_path(f"{P}/dashboards", target)
    ids = [master_id] + [
        requests.post(url, json=b, auth=auth, timeout=10).json()["id"] for b in launches
    ]

    def flatmap_path_parameters(context, path_parameters):
        # Generated owner and project ids are 404s; the real ones reach the routes themselves.
        if not path_parameters:
            return st.just(path_parameters)
        real = {**path_parameters, "owner_id": info.owner_id, "project_id": info.project_id}
        options = [st.just(path_parameters), st.just(real)]
        if "dashboard_id" in path_parameters:
            options.append(st.sampled_from(ids).map(lambda i: {**real, "dashboard_id": i}))
        return st.one_of(options)

    def flatmap_body(context, body):
        if not isinstance(body, dict):
            return st.just(body)
        # A generated path names no file of the project, which the launch refuses (422); as
        # JSON Schema cannot say so, a path given is the project's script.
        if isinstance(body.get("startup_script"), str) and body["startup_script"]:
            body = {**body, "startup_script": SCRIPT}
        # A generated master_id is a 409; the real master's id launches a worker.
        if "master_id" not in body:
            return st.just(body)
        master = str(master_id) if isinstance(body["master_id"], str) else master_id
        return st.sampled_from([body, {**body, "master_id": master}])

    schema.hook(flatmap_path_parameters)
    schema.hook(flatmap_body)
    return schema


def test_the_fuzzed_operations_are_every_operation_of_the_openapi(target, auth):
    assert sorted(operations_of(openapi(target, auth))) == sorted(OPERATIONS)


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_every_operation_answers_as_documented_and_never_with_a_5xx(api_schema, method, path):
    """Schema-valid and schema-violating requests: no 5xx, every status and body as documented."""
    operation = api_schema[path][method]
    cases = st.one_of(
        [operation.as_strategy(generation_mode=m) for m in schemathesis.GenerationMode]
    )
    statuses = collections.Counter()

    @given(case=cases)
    @settings(
        max_examples=40,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    def answers_as_documented(case):
        response = case.call(timeout=30)
        statuses[response.status_code] += 1
        # not_a_server_error, status_code_conformance, content_type_conformance,
        # response_schema_conformance, negative_data_rejection, ignored_auth, ...
        case.validate_response(response)

    answers_as_documented()
    if path != "/health":
        # Some requests got past the credentials and the project's lookup to the route itself.
        assert statuses.keys() & {200, 201, 409}, statuses


# -- credentials ---------------------------------------------------------------------------------


def _basic(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


#: Authorization headers that are not the token as user with an empty password, given the token.
WRONG_CREDENTIALS = {
    "none": lambda token: {},
    "wrong token": lambda token: {"Authorization": _basic(b"wrong-token:")},
    "token with a password": lambda token: {"Authorization": _basic(f"{token}:pw".encode())},
    "bearer": lambda token: {"Authorization": f"Bearer {token}"},
    "not base64": lambda token: {"Authorization": "Basic !!!not-base64!!!"},
    "not ascii": lambda token: {"Authorization": "Basic \xe9t\xe9"},
    "not utf-8": lambda token: {"Authorization": _basic(b"\xff\xfe:")},
}


#: Routes that OpenAPI leaves out: its own description, and the trailing-slash spellings.
UNDOCUMENTED = [
    ("GET", "/openapi.json"),
    ("GET", f"{P}/dashboards/"),
    ("POST", f"{P}/dashboards/"),
]


@pytest.mark.parametrize("kind", list(WRONG_CREDENTIALS))
def test_no_route_but_health_answers_without_the_right_credentials(target, auth, kind):
    headers = WRONG_CREDENTIALS[kind](auth[0])
    routes = operations_of(openapi(target, auth)) + UNDOCUMENTED
    assert len(routes) == len(OPERATIONS + UNDOCUMENTED)
    for method, path in routes:
        url = target.url + real_path(path, target)
        body = {"status": "stopped"} if method in ("PATCH", "POST") else None
        answer = requests.request(method, url, headers=headers, json=body, timeout=10)
        if (method, path) in OPEN:
            assert answer.status_code == (200 if path == "/health" else 422)  # no nonce
            assert auth[0] not in answer.text
            continue
        assert answer.status_code == 401, (method, path, answer.text)
        assert set(answer.json()) == {"error"}, (method, path)
        assert answer.headers["WWW-Authenticate"].startswith("Basic")
        assert auth[0] not in answer.text
    # Nothing was launched or stopped by any of it.
    assert [d["status"] for d in target.project.dashboards()] == ["running"]


def test_openapi_documents_basic_auth_and_an_error_object_for_every_error(target, auth):
    schema = openapi(target, auth)
    assert {"type": "http", "scheme": "basic"}.items() <= next(
        iter(schema["components"]["securitySchemes"].values())
    ).items()
    error = {"$ref": "#/components/schemas/Error"}
    for method, path in OPERATIONS[len(OPEN) :]:
        operation = schema["paths"][path][method.lower()]
        assert operation["security"], (method, path)
        for status in ("400", "401", "404", "409", "413", "422", "429"):
            content = operation["responses"][status]["content"]
            assert content == {"application/json": {"schema": error}}, (method, path, status)


# -- bodies and ids that once were 500s ----------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b'{"name": "\\ud800"}', 400),  # an unpaired surrogate: JSON, but no text
        (b"[" * 100_000 + b"]" * 100_000, 400),  # nested past the recursion limit
        (b'{"env": {"A": "a\\u0000b"}}', 422),  # execve refuses a NUL
        (b'{"env": {"A=B": "c"}}', 422),  # ... and a name with "="
        (b'{"env": {"": "c"}}', 422),  # ... and an empty one
        (b'{"master_id": 9223372036854775808}', 422),  # past SQLite's integers
        (b'{"master_id": 0}', 422),
    ],
    ids=["surrogate", "nested", "nul", "equals", "empty-name", "huge-master", "zero-master"],
)
def test_a_launch_body_no_process_could_take_is_a_4xx_not_a_500(target, auth, body, status):
    url = target.url + real_path(f"{P}/dashboards", target)
    headers = {"Content-Type": "application/json"}
    answer = requests.post(url, data=body, headers=headers, auth=auth, timeout=10)
    assert answer.status_code == status, answer.text
    assert set(answer.json()) == {"error"}
    assert [d["id"] for d in target.project.dashboards()] == [target.master["id"]]


def test_a_form_launch_is_checked_as_a_json_one_is(target, auth):
    url = target.url + real_path(f"{P}/dashboards", target)
    answer = requests.post(url, data={"env[A=B]": "c"}, auth=auth, timeout=10)
    assert answer.status_code == 422
    assert "'A=B'" in answer.json()["error"]


def test_a_size_that_json_schema_calls_an_integer_is_one(own_target):
    url = own_target.url + real_path(f"{P}/dashboards", own_target)
    body = {"master_id": own_target.master["id"], "size": 2.0, "startup_code": "pass"}
    answer = requests.post(url, json=body, auth=token_auth(own_target), timeout=10)
    assert answer.status_code == 201, answer.text
    assert answer.json()["size"] == 2


@pytest.mark.parametrize("dashboard_id", ["0", "-1", str(2**63), str(2**70)])
@pytest.mark.parametrize("method", ["GET", "PATCH"])
def test_a_dashboard_id_out_of_range_is_a_422_not_a_500(target, auth, method, dashboard_id):
    url = target.url + real_path(f"{P}/dashboards/", target) + dashboard_id
    answer = requests.request(method, url, json={"status": "stopped"}, auth=auth, timeout=10)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"].startswith("dashboard_id:")


# -- another owner's project ---------------------------------------------------------------------

ELSEWHERE = {
    "other owner": {"owner_id": "mallory"},
    "other project": {"project_id": "other-project"},
    "both": {"owner_id": "mallory", "project_id": "other-project"},
}


@pytest.mark.parametrize("where", list(ELSEWHERE))
def test_another_owners_project_is_not_found_on_any_route(target, auth, where):
    for method, path in OPERATIONS[len(OPEN) :]:
        body = {"status": "stopped"} if method == "PATCH" else {"startup_code": "pass"}
        url = target.url + real_path(path, target, **ELSEWHERE[where])
        answer = requests.request(method, url, json=body, auth=auth, timeout=10)
        assert answer.status_code == 404, (method, path, answer.text)
        error = answer.json()["error"]
        assert "no project" in error
        assert target.project_dir not in error and target.url not in error
    # Nothing was launched there, nor stopped here.
    assert [d["status"] for d in target.project.dashboards()] == ["running"]


@pytest.mark.parametrize(
    ("method", "path"),
    OPERATIONS[len(OPEN) :],
    ids=[f"{m} {p}" for m, p in OPERATIONS[len(OPEN) :]],
)
def test_another_owners_project_answers_as_one_that_exists_nowhere(target, auth, method, path):
    """The answer for an owner's project of the served name tells no more than for any name."""

    def ask(project_id):
        url = target.url + real_path(path, target, owner_id="mallory", project_id=project_id)
        return requests.request(method, url, json={"status": "stopped"}, auth=auth, timeout=10)

    existing, nowhere = ask(TARGET), ask("no-such-project")
    assert existing.status_code == nowhere.status_code == 404
    assert existing.json()["error"].replace(TARGET, "no-such-project") == nowhere.json()["error"]
    assert existing.headers["content-type"] == nowhere.headers["content-type"]


# -- the network: loopback unless told otherwise -------------------------------------------------


def listening_addresses(pid: int, port: int) -> list[str]:
    """The local addresses on which process ``pid`` listens on TCP ``port``."""
    return [
        connection.laddr.ip
        for connection in psutil.Process(pid).net_connections(kind="tcp")
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port
    ]


def test_local_server_listens_on_loopback_only(project_dir):
    with LocalServer(project_dir, grace=1.0) as server:
        port = int(server.url.rsplit(":", 1)[1])
        assert server.url == f"http://127.0.0.1:{port}"
        assert listening_addresses(os.getpid(), port) == ["127.0.0.1"]


@pytest.mark.parametrize(
    ("options", "address"),
    [
        ([], "127.0.0.1"),
        pytest.param(
            ["--host", "127.0.0.2"],
            "127.0.0.2",
            marks=pytest.mark.skipif(
                not sys.platform.startswith("linux"), reason="127.0.0.2 is configured on Linux"
            ),
        ),
    ],
    ids=["default", "--host"],
)
def test_sense_server_listens_on_loopback_unless_told_otherwise(project_dir, options, address):
    server = sense_command("server", "--project-dir", str(project_dir), *options, cwd=project_dir)
    try:
        exports = dict(read_exports(server))
        api_url = exports["SENSE_API_URL"]
        port = int(api_url.rsplit(":", 1)[1])
        assert api_url == f"http://{address}:{port}"
        assert listening_addresses(server.pid, port) == [address]
        assert requests.get(f"{api_url}/health", timeout=10).status_code == 200
    finally:
        server.terminate()
        server.communicate(timeout=30)
    assert server.returncode == 0


def test_sense_run_listens_on_loopback_only(project_dir):
    (project_dir / "job.py").write_text(
        "import os, time\nprint(os.environ['SENSE_API_URL'], flush=True)\ntime.sleep(60)\n"
    )
    run = sense_command("run", "job.py", cwd=project_dir)
    try:
        api_url = run.stdout.readline().strip()
        port = int(api_url.rsplit(":", 1)[1])
        assert api_url == f"http://127.0.0.1:{port}"
        assert listening_addresses(run.pid, port) == ["127.0.0.1"]
    finally:
        run.send_signal(signal.SIGINT)
        run.communicate(timeout=30)
