"""Launching, listing, stopping and awaiting workers: the exact requests on the wire.

The server is a real HTTP server (pytest-httpserver) that records what
arrives; each test checks the method, path, JSON body and Basic auth header
of every request, and what the client makes of the answers.
"""

from __future__ import annotations

import _thread
import re
import threading
import time

import pytest
from api_data import (
    BASIC_AUTH,
    MASTER_ID,
    PROJECT_PATH,
    LaunchCounter,
    dashboard_json,
    json_response,
    stop_handler,
)

import sense
from sense import workers

DASHBOARDS = f"{PROJECT_PATH}/dashboards"
AUTH = {"Authorization": BASIC_AUTH}


def launch_body(**changes):
    body = {
        "engine": "sense-ipython-engine",
        "size": "small",
        "startup_script": "",
        "startup_code": "",
        "env": {},
        "master_id": MASTER_ID,
    }
    body.update(changes)
    return body


def sent(httpserver, method=None):
    """The requests the server received, as (method, path, JSON body)."""
    return [
        (r.method, r.path, r.get_json(silent=True))
        for r, _ in httpserver.log
        if method is None or r.method == method
    ]


# --- launchWorkers ------------------------------------------------------------------------


def test_launch_sends_one_post_per_worker_with_the_seeds_body_and_basic_auth(
    master_env, httpserver
):
    counter = LaunchCounter()
    httpserver.expect_request(DASHBOARDS, method="POST", headers=AUTH).respond_with_handler(counter)

    launched = sense.launchWorkers(2, "medium", startupCode="import x", env={"ROLE": "worker"})

    assert [w["id"] for w in launched] == [10, 11]
    assert [w["status"] for w in launched] == ["starting", "starting"]
    expected = launch_body(size="medium", startup_code="import x", env={"ROLE": "worker"})
    assert counter.bodies_without_name() == [expected, expected]
    # Both launches of the call carry the same name, by which a lost one is found again.
    (name,) = {body["name"] for body in counter.bodies}
    assert re.fullmatch(r"sense-launch-[0-9a-f]{12}", name)


def test_launch_reads_the_port_mapping_back_as_ints(master_env, httpserver):
    httpserver.expect_request(DASHBOARDS, method="POST").respond_with_handler(LaunchCounter())
    (worker,) = sense.launchWorkers(1)
    assert worker["public_port_mapping"] == {8080: 18010}


def test_launch_workers_alias_takes_the_later_parameter_names(master_env, httpserver):
    counter = LaunchCounter()
    httpserver.expect_request(DASHBOARDS, method="POST").respond_with_handler(counter)
    assert len(sense.launch_workers(1, 2, script="job.py")) == 1
    assert counter.bodies_without_name() == [launch_body(size=2, startup_script="job.py")]


def test_launches_run_concurrently_and_come_back_in_request_order(master_env, httpserver):
    # The server holds every launch until all five have arrived, which only
    # concurrent requests can achieve, then answers the first arrival last.
    n = 5
    everyone_here = threading.Barrier(n, timeout=5)
    counter = LaunchCounter()

    def handler(request):
        position = everyone_here.wait()
        time.sleep(0.05 * position)
        return counter(request)

    httpserver.expect_request(DASHBOARDS, method="POST").respond_with_handler(handler)
    launched = sense.launchWorkers(n)
    # The server numbered them as they arrived: that is the order they come back in.
    assert [w["id"] for w in launched] == list(range(10, 10 + n))


def test_dashboards_whose_ids_are_not_numbers_keep_the_order_of_the_calls():
    dashboards = [{"id": "b"}, {"id": "a"}]
    assert workers.in_request_order(dashboards) == dashboards


def test_results_keep_the_order_of_the_calls_whatever_order_they_finish_in():
    def slow_for_early_items(item):
        time.sleep(0.02 * (5 - item))
        return item * 10

    outcomes = workers.concurrently(slow_for_early_items, [0, 1, 2, 3, 4], pool_size=5)
    assert outcomes == [(0, None), (10, None), (20, None), (30, None), (40, None)]


def test_thread_pool_size_bounds_the_requests_in_flight(master_env, httpserver, monkeypatch):
    monkeypatch.setattr(sense, "THREAD_POOL_SIZE", 2)
    in_flight, most = 0, 0
    lock = threading.Lock()
    counter = LaunchCounter()

    def handler(request):
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
        time.sleep(0.05)
        with lock:
            in_flight -= 1
        return counter(request)

    httpserver.expect_request(DASHBOARDS, method="POST").respond_with_handler(handler)
    assert len(sense.launchWorkers(6)) == 6
    assert most == 2


def test_when_two_of_five_launches_fail_the_three_launched_are_stopped(master_env, httpserver):
    counter = LaunchCounter(fail_on={1, 3})
    counter.serve(httpserver)
    httpserver.expect_request(
        f"{DASHBOARDS}/10", method="PATCH", json={"status": "stopped"}, headers=AUTH
    ).respond_with_handler(stop_handler)
    httpserver.expect_request(f"{DASHBOARDS}/11", method="PATCH").respond_with_handler(stop_handler)
    httpserver.expect_request(f"{DASHBOARDS}/12", method="PATCH").respond_with_handler(stop_handler)

    with pytest.raises(sense.LaunchError) as raised:
        sense.launchWorkers(5)

    error = raised.value
    assert len(error.failures) == 2
    assert all(e.status_code == 500 for _, e in error.failures)
    assert "2 of 5 worker launches failed" in str(error)
    assert str(error).count("no room for launch") == 2
    assert sorted(d["id"] for d in error.stopped) == counter.launched == [10, 11, 12]
    stops = sorted(path for method, path, _ in sent(httpserver, "PATCH"))
    assert stops == [f"{DASHBOARDS}/{i}" for i in (10, 11, 12)]
    assert isinstance(error, sense.SenseAPIError)


def test_a_launched_worker_that_will_not_stop_is_reported(master_env, httpserver):
    LaunchCounter(fail_on={0}).serve(httpserver)
    httpserver.expect_request(f"{DASHBOARDS}/10", method="PATCH").respond_with_json(
        {"error": "busy"}, status=409
    )
    with pytest.raises(sense.LaunchError) as raised:
        sense.launchWorkers(2)
    assert [dashboard_id for dashboard_id, _ in raised.value.not_stopped] == [10]
    assert "could not be stopped: 10" in str(raised.value)


def test_launch_refuses_on_a_worker_before_sending_anything(worker_env, httpserver):
    with pytest.raises(sense.SenseConfigError, match="only a master launches"):
        sense.launchWorkers(1)
    assert httpserver.log == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, "n must be a positive int"),
        ({"n": -2}, "n must be a positive int"),
        ({"n": "2"}, "n must be a positive int"),
        ({"n": 2.0}, "n must be a positive int"),
        ({"n": True}, "n must be a positive int"),
        ({"n": 1, "startupScript": "a.py", "startupCode": "x = 1"}, "not both"),
        ({"n": 1, "startupCode": b"x = 1"}, "startupCode must be a string"),
        ({"n": 1, "env": {"PORT": 8080}}, "env must map str to str"),
        ({"n": 1, "env": [("A", "b")]}, "env must be a dict"),
        ({"n": 1, "size": None}, "size must be"),
        ({"n": 1, "engine": ""}, "engine must be"),
    ],
)
def test_bad_launch_arguments_raise_value_error_and_send_nothing(
    master_env, httpserver, kwargs, message
):
    with pytest.raises(ValueError, match=message):
        sense.launchWorkers(**kwargs)
    assert httpserver.log == []


def test_launch_uses_the_project_url_of_the_later_generation(master_env, httpserver):
    master_env.delenv("SENSE_OWNER_ID")
    master_env.delenv("SENSE_PROJECT_ID")
    master_env.setenv("SENSE_API_URL", "http://127.0.0.1:9/unused")
    master_env.setenv("SENSE_PROJECT_URL", httpserver.url_for("/v2/projects/p7/"))
    httpserver.expect_request("/v2/projects/p7/dashboards", method="POST").respond_with_handler(
        LaunchCounter()
    )
    assert len(sense.launchWorkers(1)) == 1


def test_sense_api_url_sets_the_root_of_every_path(master_env, httpserver):
    master_env.setenv("SENSE_API_URL", httpserver.url_for("/api/v1"))
    httpserver.expect_request(f"/api/v1{DASHBOARDS}", method="GET").respond_with_json([])
    assert sense.getWorkers() == []


# --- getWorkers, getMaster --------------------------------------------------------------


def project_dashboards():
    return [
        dashboard_json(MASTER_ID, master_id=None),
        dashboard_json(7, status="stopped"),
        dashboard_json(8),
        dashboard_json(9, status="starting"),
        dashboard_json(10),
        dashboard_json(20, master_id=None),  # another cluster's master
        dashboard_json(21, master_id=20),  # and its worker
    ]


def test_get_workers_lists_the_running_master_and_workers_of_this_cluster(master_env, httpserver):
    httpserver.expect_request(DASHBOARDS, method="GET", headers=AUTH).respond_with_json(
        project_dashboards()
    )
    assert [d["id"] for d in sense.getWorkers()] == [MASTER_ID, 8, 10]
    assert [d["id"] for d in sense.list_workers()] == [MASTER_ID, 8, 10]


def test_get_workers_from_a_worker_lists_the_same_cluster(worker_env, httpserver):
    httpserver.expect_request(DASHBOARDS, method="GET").respond_with_json(project_dashboards())
    assert [d["id"] for d in sense.getWorkers()] == [MASTER_ID, 8, 10]


def test_get_master_asks_for_the_master_dashboard(worker_env, httpserver):
    httpserver.expect_request(f"{DASHBOARDS}/{MASTER_ID}", method="GET").respond_with_json(
        dashboard_json(MASTER_ID, master_id=None)
    )
    assert sense.getMaster()["id"] == MASTER_ID
    assert sense.get_master()["master_id"] is None


# --- stopWorkers --------------------------------------------------------------------------


def test_stop_workers_patches_each_given_id_and_returns_the_dashboards(master_env, httpserver):
    httpserver.expect_request(
        f"{DASHBOARDS}/8", method="PATCH", json={"status": "stopped"}, headers=AUTH
    ).respond_with_handler(stop_handler)
    httpserver.expect_request(
        f"{DASHBOARDS}/10", method="PATCH", json={"status": "stopped"}, headers=AUTH
    ).respond_with_handler(stop_handler)
    stopped = sense.stopWorkers(8, "10")
    assert [(d["id"], d["status"]) for d in stopped] == [(8, "stopped"), (10, "stopped")]
    httpserver.check_assertions()


def test_stop_workers_takes_dashboards_as_well_as_ids(master_env, httpserver):
    httpserver.expect_request(f"{DASHBOARDS}/8", method="PATCH").respond_with_handler(stop_handler)
    assert sense.stop_workers(dashboard_json(8))[0]["id"] == 8


def test_stop_workers_without_ids_keeps_the_master(master_env, httpserver):
    httpserver.expect_request(DASHBOARDS, method="GET").respond_with_json(project_dashboards())
    httpserver.expect_request(
        f"{DASHBOARDS}/8", method="PATCH", json={"status": "stopped"}
    ).respond_with_handler(stop_handler)
    httpserver.expect_request(
        f"{DASHBOARDS}/10", method="PATCH", json={"status": "stopped"}
    ).respond_with_handler(stop_handler)
    stopped = sense.stopWorkers()
    assert [d["id"] for d in stopped] == [8, 10]
    assert sorted(p for _, p, _ in sent(httpserver, "PATCH")) == [
        f"{DASHBOARDS}/10",
        f"{DASHBOARDS}/8",
    ]


def test_stopping_an_unknown_worker_raises_with_the_servers_message(master_env, httpserver):
    httpserver.expect_request(f"{DASHBOARDS}/99", method="PATCH").respond_with_json(
        {"error": "no dashboard 99"}, status=404
    )
    with pytest.raises(sense.SenseAPIError) as raised:
        sense.stopWorkers(99)
    assert raised.value.status_code == 404
    assert raised.value.method == "PATCH"
    assert raised.value.url.endswith(f"{DASHBOARDS}/99")
    assert "no dashboard 99" in str(raised.value)


@pytest.mark.parametrize("bad", [[8, 10], "eight", None, 2.5, True])
def test_stop_workers_refuses_what_is_not_an_id_before_sending(master_env, httpserver, bad):
    with pytest.raises(ValueError, match="is not a dashboard id"):
        sense.stopWorkers(bad)
    assert httpserver.log == []


# --- awaitWorkers -------------------------------------------------------------------------


class StatusScript:
    """Answers the dashboard list with statuses that move on at each poll."""

    def __init__(self, *polls):
        self.polls = list(polls)
        self.count = 0

    def __call__(self, request):
        statuses = self.polls[min(self.count, len(self.polls) - 1)]
        self.count += 1
        body = [dashboard_json(MASTER_ID, master_id=None)]
        body += [dashboard_json(i, status=s) for i, s in statuses.items()]
        return json_response(body)


def test_await_workers_polls_until_they_run(master_env, httpserver, monkeypatch):
    monkeypatch.setattr(workers, "POLL_INTERVAL", 0.01)
    script = StatusScript(
        {8: "starting", 9: "starting"}, {8: "running", 9: "starting"}, {8: "running", 9: "running"}
    )
    httpserver.expect_request(DASHBOARDS, method="GET").respond_with_handler(script)
    result = sense.awaitWorkers([8, 9])
    assert [w["id"] for w in result["workers"]] == [8, 9]
    assert result["failures"] == []
    assert script.count == 3


def test_await_workers_without_ids_waits_for_the_unended_workers(master_env, httpserver):
    script = StatusScript({7: "stopped", 8: "running", 9: "running"})
    httpserver.expect_request(DASHBOARDS, method="GET").respond_with_handler(script)
    result = sense.await_workers()
    assert [w["id"] for w in result["workers"]] == [8, 9]


def test_await_workers_reports_failed_and_late_workers(master_env, httpserver, monkeypatch):
    monkeypatch.setattr(workers, "POLL_INTERVAL", 0.01)
    script = StatusScript({8: "running", 9: "failed", 10: "starting"})
    httpserver.expect_request(DASHBOARDS, method="GET").respond_with_handler(script)
    result = sense.awaitWorkers([8, 9, 10, 11], timeout_seconds=0.1)
    assert [w["id"] for w in result["workers"]] == [8]
    assert [(w["id"], w["status"]) for w in result["failures"]] == [
        (9, "failed"),
        (10, "starting"),
        (11, "unknown"),
    ]


def test_await_workers_for_completion_waits_for_them_to_end(master_env, httpserver, monkeypatch):
    monkeypatch.setattr(workers, "POLL_INTERVAL", 0.01)
    script = StatusScript({8: "running", 9: "running"}, {8: "stopped", 9: "failed"})
    httpserver.expect_request(DASHBOARDS, method="GET").respond_with_handler(script)
    result = sense.awaitWorkers([8, 9], wait_for_completion=True)
    assert [w["id"] for w in result["workers"]] == [8]
    assert [w["id"] for w in result["failures"]] == [9]


@pytest.mark.parametrize("timeout", [-1, "10", None])
def test_await_workers_refuses_a_bad_timeout(master_env, httpserver, timeout):
    with pytest.raises(ValueError, match="timeout_seconds"):
        sense.awaitWorkers([8], timeout_seconds=timeout)
    assert httpserver.log == []


def test_get_workers_sends_one_get_of_the_project_dashboards(master_env, httpserver):
    httpserver.expect_request(DASHBOARDS, method="GET").respond_with_json([])
    sense.getWorkers()
    assert sent(httpserver) == [("GET", DASHBOARDS, None)]


def test_ctrl_c_during_a_launch_stops_every_worker_that_launched(master_env, httpserver):
    # Two launches answer at once, the third only after the user pressed Ctrl-C:
    # all three were launched, none was given to the caller, so all three stop.
    counter = LaunchCounter(hold=(3, 0.5))
    counter.serve(httpserver, stops=True)
    threading.Thread(target=lambda: counter.held.wait(5) and _thread.interrupt_main()).start()
    with pytest.raises(KeyboardInterrupt):
        sense.launchWorkers(3)
    stopped = sorted(int(path.rsplit("/", 1)[1]) for _, path, _ in sent(httpserver, "PATCH"))
    assert stopped == counter.launched == [10, 11, 12]


def test_a_launch_whose_answer_was_lost_is_found_by_its_name_and_stopped(
    master_env, httpserver, fast_http
):
    # The second launch happens on the server, but its answer comes after the
    # client's read timeout: only the launch's name can tell the client about it.
    counter = LaunchCounter(hold=(2, 1.0))
    counter.serve(httpserver, stops=True)
    with pytest.raises(sense.LaunchError) as raised:
        sense.launchWorkers(2)
    ((_, lost),) = raised.value.failures
    assert isinstance(lost, sense.SenseConnectionError)
    stopped = sorted(int(path.rsplit("/", 1)[1]) for _, path, _ in sent(httpserver, "PATCH"))
    assert stopped == counter.launched == [10, 11]
    assert sorted(d["id"] for d in raised.value.stopped) == [10, 11]


def test_a_failed_launch_that_cannot_list_the_project_says_so(master_env, httpserver, fast_http):
    counter = LaunchCounter(fail_on={1})  # and no listing: every GET is answered 500
    httpserver.expect_request(DASHBOARDS, method="POST").respond_with_handler(counter)
    httpserver.expect_request(f"{DASHBOARDS}/10", method="PATCH").respond_with_handler(stop_handler)
    with pytest.raises(sense.LaunchError) as raised:
        sense.launchWorkers(2)
    assert [d["id"] for d in raised.value.stopped] == [10]
    ((unknown, error),) = raised.value.not_stopped
    assert unknown is None and error.status_code == 500
    assert "could not check for launches whose answers were lost" in str(raised.value)
