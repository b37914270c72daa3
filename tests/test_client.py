"""sense.Client: a project's API with settings of its own, and the default client of the module."""

from __future__ import annotations

import math

import pytest
from api_data import BASIC_AUTH, MASTER_ID, OWNER, PROJECT_PATH, TOKEN, dashboard_json

import sense
from sense import client, rest

DASHBOARDS = f"{PROJECT_PATH}/dashboards"


def test_a_client_reaches_the_project_it_is_given_with_the_credentials_it_is_given(
    clean_env, httpserver
):
    # No SENSE_* variable at all: the URL and the credentials are the client's.
    httpserver.expect_request(
        DASHBOARDS, method="GET", headers={"Authorization": BASIC_AUTH}
    ).respond_with_json([dashboard_json(MASTER_ID, master_id=None), dashboard_json(8)])
    project = sense.Client(url=httpserver.url_for(PROJECT_PATH), auth=(TOKEN, ""))
    assert [d["id"] for d in project.getDashboards()] == [MASTER_ID, 8]
    assert project.getAuth() == {"user": TOKEN, "pass": ""}


def test_a_clients_cluster_is_this_dashboards(clean_env, httpserver):
    clean_env.setenv("SENSE_DASHBOARD_ID", str(MASTER_ID))
    httpserver.expect_request(DASHBOARDS, method="GET").respond_with_json(
        [dashboard_json(MASTER_ID, master_id=None), dashboard_json(8), dashboard_json(21, 20)]
    )
    project = sense.Client(url=httpserver.url_for(PROJECT_PATH + "/"), auth=(TOKEN, ""))
    assert [d["id"] for d in project.getWorkers()] == [MASTER_ID, 8]
    assert [d["id"] for d in project.list_workers()] == [MASTER_ID, 8]


def test_get_dashboards_filters_by_status_master_and_name(clean_env, httpserver):
    everything = [
        dashboard_json(MASTER_ID, master_id=None),
        dashboard_json(8),
        dashboard_json(9, status="stopped"),
        dashboard_json(21, master_id=20),
    ]
    httpserver.expect_request(DASHBOARDS, method="GET").respond_with_json(everything)
    project = sense.Client(url=httpserver.url_for(PROJECT_PATH), auth=(TOKEN, ""))

    assert [d["id"] for d in project.getDashboards("stopped")] == [9]
    assert [d["id"] for d in project.getDashboards(["running"], master_id=3)] == [8]
    assert [d["id"] for d in project.getDashboards(name="dashboard 21")] == [21]
    queries = [r.args.to_dict(flat=False) for r, _ in httpserver.log]
    assert queries == [
        {"status": ["stopped"]},
        {"status": ["running"], "master_id": ["3"]},
        {"name": ["dashboard 21"]},
    ]
    with pytest.raises(ValueError, match="'runing' is not a valid Status"):
        project.getDashboards("runing")


def test_a_clients_repr_shows_its_settings_and_never_its_credentials():
    project = sense.Client(
        url="http://bob:pw-31@127.0.0.1:8000/users/bob/projects/p",
        auth=("tok-secret-9", ""),
        timeout=2,
        retries=1,
        pool_size=4,
    )
    shown = repr(project)
    assert shown == (
        "sense.Client(url='http://127.0.0.1:8000/users/bob/projects/p', auth=<hidden>, "
        "timeout=2, retries=1, pool_size=4)"
    )
    assert "tok-secret-9" not in shown and "pw-31" not in shown


def test_a_client_has_the_defaults_of_the_module_settings():
    assert repr(sense.Client()) == (
        "sense.Client(url=None, auth=None, timeout=(5.0, 60.0), retries=3, pool_size=10)"
    )
    assert repr(sense.Client()) == repr(client.default())


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"url": "localhost:8000"}, "must start with http:// or https://"),
        ({"url": "http://[::1"}, "is not a URL"),
        ({"auth": "tok"}, "auth must be a"),
        ({"auth": ("tok",)}, "auth must be a"),
        ({"timeout": 0}, "timeout must be"),
        ({"timeout": math.nan}, "timeout must be"),
        ({"timeout": (1, 2, 3)}, "timeout must be"),
        ({"timeout": "5"}, "timeout must be"),
        ({"retries": -1}, "retries must be"),
        ({"retries": 1.5}, "retries must be"),
        ({"pool_size": 0}, "pool_size must be"),
        ({"pool_size": True}, "pool_size must be"),
    ],
)
def test_bad_settings_are_refused_when_the_client_is_made(settings, message):
    with pytest.raises(ValueError, match=message):
        sense.Client(**settings)


def test_a_clients_settings_are_its_own(master_env, httpserver, fast_http):
    httpserver.expect_request(DASHBOARDS, method="GET").respond_with_json(
        {"error": "restarting"}, status=503
    )
    with pytest.raises(sense.SenseAPIError):
        sense.Client(retries=0).getWorkers()
    assert len(httpserver.log) == 1
    httpserver.clear_log()
    with pytest.raises(sense.SenseAPIError):
        sense.getWorkers()  # the module's settings: sense.rest.RETRIES
    assert len(httpserver.log) == rest.RETRIES + 1


def test_a_setting_changed_on_a_client_applies_to_its_next_request(
    master_env, httpserver, fast_http
):
    httpserver.expect_request(DASHBOARDS, method="GET").respond_with_json(
        {"error": "restarting"}, status=503
    )
    project = sense.Client(retries=2)
    with pytest.raises(sense.SenseAPIError):
        project.getWorkers()
    assert len(httpserver.log) == 3
    httpserver.clear_log()
    project.retries = 0
    with pytest.raises(sense.SenseAPIError):
        project.getWorkers()
    assert len(httpserver.log) == 1


def test_the_module_follows_the_environment_as_it_changes(master_env, httpserver):
    # As after sense.local.start(): the same process, another project.
    httpserver.expect_request(DASHBOARDS, method="GET").respond_with_json([])
    other = f"/users/{OWNER}/projects/other/dashboards"
    httpserver.expect_request(other, method="GET").respond_with_json([dashboard_json(MASTER_ID)])
    assert sense.getWorkers() == []
    master_env.setenv("SENSE_PROJECT_ID", "other")
    assert [d["id"] for d in sense.getWorkers()] == [MASTER_ID]


def test_every_function_of_the_module_is_a_method_of_the_client_with_its_aliases():
    for name in ("launchWorkers", "getWorkers", "stopWorkers", "awaitWorkers", "getMaster"):
        assert callable(getattr(sense.Client, name))
    for alias, name in [
        ("list_workers", "getWorkers"),
        ("stop_workers", "stopWorkers"),
        ("get_auth", "getAuth"),
        ("get_master", "getMaster"),
        ("await_workers", "awaitWorkers"),
        ("list_dashboards", "getDashboards"),
    ]:
        assert getattr(sense.Client, alias) is getattr(sense.Client, name)


def test_launch_workers_of_a_client_takes_the_later_parameter_names(master_env, httpserver):
    from api_data import LaunchCounter

    counter = LaunchCounter()
    httpserver.expect_request(DASHBOARDS, method="POST").respond_with_handler(counter)
    (worker,) = sense.Client().launch_workers(1, code="print(1)")
    assert worker["id"] == 10
    assert counter.bodies[0]["startup_code"] == "print(1)"


def test_the_default_client_reads_the_module_settings_at_every_call(monkeypatch):
    monkeypatch.setattr(rest, "TIMEOUT", (1.0, 2.0))
    monkeypatch.setattr(rest, "RETRIES", 5)
    monkeypatch.setattr(sense, "THREAD_POOL_SIZE", 7)
    assert repr(client.default()) == (
        "sense.Client(url=None, auth=None, timeout=(1.0, 2.0), retries=5, pool_size=7)"
    )


def test_get_logs_streams_a_dashboards_output_from_an_offset(clean_env, httpserver):
    log = b"".join(f"line {i}\n".encode() for i in range(20_000))  # several chunks
    httpserver.expect_request(
        f"{DASHBOARDS}/8/logs", method="GET", query_string="offset=-11"
    ).respond_with_data(log[-11:], content_type="text/plain")
    httpserver.expect_request(
        f"{DASHBOARDS}/8/logs", method="GET", query_string=""
    ).respond_with_data(log, content_type="text/plain")
    project = sense.Client(url=httpserver.url_for(PROJECT_PATH), auth=(TOKEN, ""))
    chunks = list(project.getLogs(8))
    assert b"".join(chunks) == log and len(chunks) > 1
    assert b"".join(project.get_logs(8, offset=-11)) == b"line 19999\n"
    with pytest.raises(sense.SenseAPIError) as raised:
        list(project.getLogs(999))
    assert raised.value.status_code == 500  # pytest-httpserver's answer to an unexpected request
