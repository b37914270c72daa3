"""Every route of the REST API (as the README lists them) and every error, on a real server."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator

import pytest
import requests
from conftest import Api

from sense.local import LocalServer
from sense.local.app import Credentials
from sense.local.server import bind

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def quiet_api(tmp_path_factory) -> Iterator[Api]:
    """The API of a server shared by the module's tests whose every request is refused or
    only reads: a server takes a moment to start, and none of them changes it."""
    project_dir = tmp_path_factory.mktemp("api") / "project"
    project_dir.mkdir()
    with LocalServer(project_dir, grace=1.0) as running:
        running.attach(set_environ=False)
        yield Api(running)


def test_health_answers_without_credentials(server):
    answer = requests.get(f"{server.url}/health", timeout=10)
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok"}


def test_the_servers_connections_send_small_answers_at_once():
    # With Nagle's algorithm on, an answer's body waits until the client acknowledges its
    # headers, which a client delays by up to 40 ms: every answer took 40 ms more.
    async def accept_one(sock: socket.socket) -> int:
        accepted = asyncio.get_running_loop().create_future()

        def connected(reader, writer):
            connection = writer.get_extra_info("socket")
            accepted.set_result(connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        # As uvicorn serves the socket that the server binds.
        async with await asyncio.start_server(connected, sock=sock):
            _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
            nodelay = await accepted
            writer.close()
        return nodelay

    assert asyncio.run(accept_one(bind("127.0.0.1", 0)))


@pytest.mark.parametrize(
    "auth", [None, ("wrong-token", ""), ("TOKEN", "a-password")], ids=["none", "wrong", "password"]
)
def test_project_routes_need_the_token_as_user_with_an_empty_password(api, auth):
    if auth and auth[0] == "TOKEN":
        auth = (api.auth[0], auth[1])
    answer = api("GET", "/dashboards", auth=auth)
    assert answer.status_code == 401
    assert "error" in answer.json()
    assert answer.headers["WWW-Authenticate"].startswith("Basic")
    assert api.auth[0] not in answer.text


def test_a_configured_username_and_password_are_accepted_too(project_dir):
    with LocalServer(project_dir, username="ada", password="lovelace") as server:
        answer = requests.get(server.project_url, auth=("ada", "lovelace"), timeout=10)
        assert answer.status_code == 200
        wrong = requests.get(server.project_url, auth=("ada", "babbage"), timeout=10)
        assert wrong.status_code == 401


def test_the_project_is_served_at_its_url(api, server):
    project = api("GET").json()
    info = server.project.info
    assert project["id"] == info.project_id == "project"
    assert project["owner_id"] == info.owner_id
    assert project["name"] == "project"


def test_dashboards_are_listed_with_or_without_a_trailing_slash(api, server):
    plain = api("GET", "/dashboards").json()
    slashed = api("GET", "/dashboards/").json()
    assert plain == slashed
    assert [d["id"] for d in plain] == [server.master["id"]]


def test_dashboards_are_filtered_by_status_master_and_name_all_at_once(api, server):
    master = server.master["id"]
    other = api.launch(master_id=None, name="other")["id"]
    api.wait_status(other, "running")
    idle = api.launch(name="idle")["id"]
    done = api.launch(name="done", startup_code="pass")["id"]
    theirs = api.launch(master_id=other, name="idle")["id"]
    api.wait_status(done, "stopped")
    for dashboard_id in (idle, theirs):
        api.wait_status(dashboard_id, "running")

    def ids(**query):
        answer = api("GET", "/dashboards", params=query)
        assert answer.status_code == 200, answer.text
        return [d["id"] for d in answer.json()]

    assert ids() == [master, other, idle, done, theirs]
    assert ids(status="stopped") == [done]
    assert ids(status=["stopped", "running"]) == [master, other, idle, done, theirs]
    assert ids(master_id=master) == [idle, done]
    assert ids(name="idle") == [idle, theirs]
    assert ids(name="idle", master_id=other) == [theirs]
    assert ids(name="idle", status="stopped") == []
    assert ids(status="running", master_id=master, name="idle") == [idle]
    assert ids(master_id=999) == []
    for dashboard_id in (other, idle):
        api("PUT", f"/dashboards/{dashboard_id}/stop")


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ({"status": "sleeping"}, "status"),
        ({"status": ["running", "done"]}, "status"),
        ({"master_id": "three"}, "master_id"),
        ({"master_id": "0"}, "master_id"),
        ({"stauts": "running"}, "'stauts': not a query parameter"),
    ],
    ids=["status", "one-status-of-two", "master-id", "master-id-0", "misspelt"],
)
def test_a_bad_filter_is_refused_naming_the_parameter(quiet_api, query, named):
    answer = quiet_api("GET", "/dashboards", params=query)
    assert answer.status_code == 422
    assert answer.json()["error"].startswith(named)


def test_a_launch_answers_201_with_a_dashboard_shaped_as_the_spec_says(api, server):
    worker = api.launch(startup_code="pass", env={"ROLE": "worker"}, size=2)
    # Forked from the prestarted engine, it may have run, even ended, by the time of the answer.
    assert worker["status"] in ("starting", "running", "stopped")
    assert worker["master_id"] == server.master["id"]
    assert worker["size"] == 2
    assert worker["engine"] == "sense-ipython-engine"
    assert worker["env"] == {"ROLE": "worker"}
    assert worker["public_dns"] == "localhost"
    assert worker["created_at"].endswith("Z")
    ports = worker["public_port_mapping"]
    assert len(ports) == 1 and all(int(k) == v for k, v in ports.items())
    expected = {
        "id",
        "name",
        "project_id",
        "owner_id",
        "engine",
        "size",
        "status",
        "master_id",
        "startup_script",
        "startup_code",
        "env",
        "project_ip",
        "public_dns",
        "public_port_mapping",
        "exit_code",
        "created_at",
        "started_at",
        "stopped_at",
    }
    assert set(worker) == expected
    assert api.get(worker["id"])["id"] == worker["id"]
    api.wait_status(worker["id"], "stopped")


@pytest.mark.parametrize(
    "code_field", ["startup_code", "startupCode", "code"], ids=lambda name: name
)
def test_a_form_encoded_launch_reads_every_spelling_of_the_startup_code(api, server, code_field):
    data = {code_field: "print('formed')", "master_id": str(server.master["id"]), "size": "medium"}
    answer = api("POST", "/dashboards", data=data)
    assert answer.status_code == 201, answer.text
    worker = answer.json()
    assert worker["startup_code"] == "print('formed')"
    assert worker["size"] == "medium"
    api.wait_status(worker["id"], "stopped")
    assert "formed" in api.logs(worker["id"])


@pytest.mark.parametrize("script_field", ["startup_script", "startupScript", "script"])
def test_every_spelling_of_the_startup_script_is_read(api, project_dir, script_field):
    (project_dir / "job.py").write_text("print('scripted')\n")
    worker = api.launch(**{script_field: "job.py"})
    assert worker["startup_script"] == "job.py"
    api.wait_status(worker["id"], "stopped")
    assert "scripted" in api.logs(worker["id"])


def test_a_form_carries_env_as_json_or_as_bracketed_fields(api, server):
    master = str(server.master["id"])
    as_json = api("POST", "/dashboards", data={"master_id": master, "env": '{"A": "1"}'}).json()
    bracketed = api("POST", "/dashboards", data={"master_id": master, "env[B]": "2"}).json()
    assert as_json["env"] == {"A": "1"}
    assert bracketed["env"] == {"B": "2"}
    for worker in (as_json, bracketed):
        api("PUT", f"/dashboards/{worker['id']}/stop")


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"size": "huge"}, "size"),
        ({"size": 17}, "size"),
        ({"startup_code": "a", "startup_script": "b.py"}, "startup_script and startup_code"),
        ({"code": "a", "startupCode": "b"}, "startupCode and code"),
        ({"env": {"SENSE_API_TOKEN": "mine"}}, "SENSE_API_TOKEN"),
        ({"env": {"SENSE_PORT1": "80"}}, "SENSE_PORT1"),
        ({"env": {"A": 1}}, "env"),
        ({"engine": "sense-r-engine"}, "engine"),
        ({"master_id": "three"}, "master_id"),
        ({"colour": "blue"}, "colour"),
    ],
    ids=lambda value: json.dumps(value) if isinstance(value, dict) else value,
)
def test_a_bad_launch_body_is_refused_naming_the_field(quiet_api, body, named):
    answer = quiet_api("POST", "/dashboards", json=body)
    assert answer.status_code == 422
    assert set(answer.json()) == {"error"}
    assert named in answer.json()["error"]


def test_a_body_that_is_not_json_is_a_400(quiet_api):
    answer = quiet_api(
        "POST", "/dashboards", data=b"{not json", headers={"Content-Type": "text/plain"}
    )
    assert answer.status_code == 400
    assert "JSON" in answer.json()["error"]


def test_an_oversized_body_is_a_413(quiet_api):
    answer = quiet_api("POST", "/dashboards", json={"startup_code": "#" * (1024 * 1024 + 1)})
    assert answer.status_code == 413
    assert "larger" in answer.json()["error"]


def test_a_launch_under_a_master_that_is_not_running_is_a_409(api):
    master = api.launch(master_id=None)  # an idle master of its own
    api("PUT", f"/dashboards/{master['id']}/stop")
    answer = api("POST", "/dashboards", json={"master_id": master["id"]})
    assert answer.status_code == 409
    assert "not a running master" in answer.json()["error"]
    assert api("POST", "/dashboards", json={"master_id": 999}).status_code == 409


def test_a_launch_from_a_worker_is_a_409(api):
    worker = api.launch()
    api.wait_status(worker["id"], "running")
    answer = api("POST", "/dashboards", json={"master_id": str(worker["id"])})
    assert answer.status_code == 409
    assert "only a master launches" in answer.json()["error"]
    api("PATCH", f"/dashboards/{worker['id']}", json={"status": "stopped"})


def test_launches_past_the_quota_are_a_429(project_dir):
    with LocalServer(project_dir, max_workers=1, grace=1.0) as server:
        server.attach(set_environ=False)
        api = Api(server)
        first = api.launch()
        answer = api("POST", "/dashboards", json={"master_id": server.master["id"]})
        assert answer.status_code == 429
        assert "--max-workers" in answer.json()["error"]
        api("PUT", f"/dashboards/{first['id']}/stop")
        # Once one has ended, there is room again.
        api("PUT", f"/dashboards/{api.launch()['id']}/stop")


def test_an_unknown_dashboard_is_a_404_on_every_route(quiet_api):
    for method, path in [
        ("GET", "/dashboards/999"),
        ("PATCH", "/dashboards/999"),
        ("PUT", "/dashboards/999/stop"),
        ("GET", "/dashboards/999/workers"),
        ("GET", "/dashboards/999/logs"),
    ]:
        answer = quiet_api(method, path, json={"status": "stopped"})
        assert answer.status_code == 404, (method, path)
        assert "no dashboard 999" in answer.json()["error"]


def test_a_dashboard_id_that_is_not_a_number_is_refused_naming_it(quiet_api):
    answer = quiet_api("GET", "/dashboards/seven")
    assert answer.status_code == 422
    assert answer.json()["error"].startswith("dashboard_id:")


def test_patch_stops_a_dashboard_and_stopping_it_again_is_no_error(api):
    worker = api.launch()
    api.wait_status(worker["id"], "running")
    stopped = api("PATCH", f"/dashboards/{worker['id']}", json={"status": "stopped"})
    assert stopped.status_code == 200
    assert stopped.json()["status"] == "stopped"
    assert stopped.json()["stopped_at"].endswith("Z")
    again = api("PATCH", f"/dashboards/{worker['id']}", data={"status": "stopped"})
    assert again.status_code == 200
    assert again.json() == stopped.json()


def test_patch_accepts_only_the_stopped_status(api):
    worker = api.launch()
    answer = api("PATCH", f"/dashboards/{worker['id']}", json={"status": "running"})
    assert answer.status_code == 422
    assert answer.json()["error"].startswith("status:")
    api("PUT", f"/dashboards/{worker['id']}/stop")


def test_put_stop_is_the_later_generations_stop(api):
    worker = api.launch()
    answer = api("PUT", f"/dashboards/{worker['id']}/stop")
    assert answer.status_code == 200
    assert answer.json()["status"] == "stopped"


def test_the_process_that_runs_the_server_cannot_be_stopped_through_the_api(api, server):
    answer = api("PUT", f"/dashboards/{server.master['id']}/stop")
    assert answer.status_code == 409
    assert "sense.local.stop()" in answer.json()["error"]


def test_workers_lists_the_running_workers_of_a_master(api, server):
    ids = [api.launch()["id"] for _ in range(2)]
    for worker_id in ids:
        api.wait_status(worker_id, "running")
    listed = api("GET", f"/dashboards/{server.master['id']}/workers").json()
    assert sorted(d["id"] for d in listed) == sorted(ids)
    assert api("GET", f"/dashboards/{ids[0]}/workers").json() == []
    api("PUT", f"/dashboards/{ids[0]}/stop")
    listed = api("GET", f"/dashboards/{server.master['id']}/workers").json()
    assert [d["id"] for d in listed] == ids[1:]
    api("PUT", f"/dashboards/{ids[1]}/stop")


def test_logs_serve_a_dashboards_output_as_text(api):
    worker = api.launch(startup_code="import sys; print('out'); print('err', file=sys.stderr)")
    api.wait_status(worker["id"], "stopped")
    answer = api("GET", f"/dashboards/{worker['id']}/logs")
    assert answer.headers["content-type"].startswith("text/plain")
    assert "out\n" in answer.text and "err\n" in answer.text


def test_a_raw_log_is_never_sniffed_as_html_nor_run_as_a_page(api):
    worker = api.launch(startup_code="print('<html><script>alert(1)</script>')")
    api.wait_status(worker["id"], "stopped")
    answer = api("GET", f"/dashboards/{worker['id']}/logs")
    assert "<script>" in answer.text
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    # sandbox: opened as a page all the same, it runs no script and has an origin of its own.
    assert answer.headers["Content-Security-Policy"] == "sandbox"


def test_the_routes_answer_under_the_project_url_of_the_context(api, server):
    project_url = server.master_environment()["SENSE_PROJECT_URL"]
    assert project_url == server.project_url
    assert requests.get(project_url + "/dashboards", auth=api.auth, timeout=10).ok


def test_unknown_routes_answer_with_an_error_object(quiet_api):
    answer = requests.get(f"{quiet_api.server.url}/nowhere", timeout=10)
    assert answer.status_code == 404
    assert set(answer.json()) == {"error"}


def test_openapi_describes_the_routes_and_the_models(quiet_api):
    schema = requests.get(
        f"{quiet_api.server.url}/openapi.json", auth=quiet_api.auth, timeout=10
    ).json()
    paths = schema["paths"]
    prefix = "/users/{owner_id}/projects/{project_id}"
    for path in [
        "/health",
        prefix,
        f"{prefix}/dashboards",
        f"{prefix}/dashboards/{{dashboard_id}}",
        f"{prefix}/dashboards/{{dashboard_id}}/workers",
        f"{prefix}/dashboards/{{dashboard_id}}/stop",
        f"{prefix}/dashboards/{{dashboard_id}}/logs",
    ]:
        assert path in paths
    assert {"Dashboard", "Error"} <= set(schema["components"]["schemas"])
    launch = paths[f"{prefix}/dashboards"]["post"]["requestBody"]["content"]
    assert "startup_code" in launch["application/json"]["schema"]["properties"]
    listing = paths[f"{prefix}/dashboards"]["get"]
    assert {p["name"] for p in listing["parameters"] if p["in"] == "query"} == {
        "status",
        "master_id",
        "name",
    }
    logs = paths[f"{prefix}/dashboards/{{dashboard_id}}/logs"]["get"]
    assert [p["name"] for p in logs["parameters"] if p["in"] == "query"] == ["offset"]
    assert "X-Log-Size" in logs["responses"]["200"]["headers"]


def test_no_documentation_page_loads_scripts_from_elsewhere(quiet_api):
    # Swagger UI and ReDoc would load theirs from a CDN, into the origin of the web page.
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        answer = requests.get(quiet_api.server.url + path, auth=quiet_api.auth, timeout=10)
        assert answer.status_code == 404, path
        assert set(answer.json()) == {"error"}
    assert requests.get(f"{quiet_api.server.url}/openapi.json", auth=quiet_api.auth, timeout=10).ok


def test_the_token_and_the_password_show_in_no_repr(project_dir):
    with LocalServer(project_dir, username="ada", password="lovelace") as server:
        token = server.project.info.token
        credentials = Credentials(token, "ada", "lovelace")
        for shown in (repr(server.project.info), repr(server), repr(credentials)):
            assert token not in shown and "lovelace" not in shown


@pytest.mark.parametrize(
    ("script", "problem"),
    [
        ("missing.py", "is not there"),
        ("tools", "is a directory"),
        ("../outside.py", "is not in the project folder"),
        ("/etc/hostname", "is not in the project folder"),
        ("link.py", "is not in the project folder"),
        (".sense/token", "is in the project's state folder"),
        ("tools/../.sense/sense.db", "is in the project's state folder"),
    ],
)
def test_a_startup_script_that_is_no_file_of_the_project_is_refused_at_launch(
    api, server, project_dir, script, problem
):
    (project_dir / "tools").mkdir()
    (project_dir.parent / "outside.py").write_text("print('outside')\n")
    (project_dir / "link.py").symlink_to(project_dir.parent / "outside.py")
    answer = api("POST", "/dashboards", json={"master_id": server.master["id"], "script": script})
    assert answer.status_code == 422
    assert answer.json()["error"].startswith(f"startup_script: {script!r} {problem}")
    assert [d["id"] for d in api("GET", "/dashboards").json()] == [server.master["id"]]
