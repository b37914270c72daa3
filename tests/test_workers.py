"""Launching, listing, stopping and awaiting workers: the exact requests on the wire.

The server is a real HTTP server (pytest-httpserver) that records what
arrives; each test checks the method, path, JSON body and Basic auth header
of every request, and what the client makes of the answers.
"""

from __future__ import annotations

import _thread
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from api_data import (
    BASIC_AUTH,
    MASTER_ID,
    PROJECT_PATH,
    LaunchCounter,
    dashboard_json,
    json_response,
    raw_challenge_answer,
    stop_handler,
)

import sense
from sense import rest, workers

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
    assert outcomes.results == [0, 10, 20, 30, 40]


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
    for worker in (8, 9, 10):
        httpserver.expect_request(
            f"{DASHBOARDS}/{worker}", method="PATCH", json={"status": "stopped"}
        ).respond_with_handler(stop_handler)
    stopped = sense.stopWorkers()
    # Every worker of this cluster that has not ended, the one still starting (9) included.
    assert [d["id"] for d in stopped] == [8, 9, 10]
    assert sorted(p for _, p, _ in sent(httpserver, "PATCH")) == [
        f"{DASHBOARDS}/10",
        f"{DASHBOARDS}/8",
        f"{DASHBOARDS}/9",
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


@pytest.fixture
def ctrl_c_raises():
    """Ctrl-C raises KeyboardInterrupt in this process, as in a program run from a terminal:
    a suite started in the background has SIGINT ignored, and ``interrupt_main()`` then does
    nothing."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_during_a_launch_stops_every_worker_that_launched(
    master_env, httpserver, ctrl_c_raises
):
    # Two launches answer at once, the third only after the user pressed Ctrl-C:
    # all three were launched, none was given to the caller, so all three stop.
    # Held long enough for the Ctrl-C to land first on a busy machine too (one generous bound).
    counter = LaunchCounter(hold=(3, 10.0))
    counter.serve(httpserver, stops=True)
    threading.Thread(target=lambda: counter.held.wait(60) and _thread.interrupt_main()).start()
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


# --- right after a launch -----------------------------------------------------------------


def test_stop_workers_right_after_a_launch_stops_the_workers_still_starting(master_env, httpserver):
    counter = LaunchCounter()
    counter.serve(httpserver, stops=True)
    launched = sense.launchWorkers(2)
    assert [w["status"] for w in launched] == ["starting", "starting"]

    stopped = sense.stopWorkers()

    assert [d["id"] for d in stopped] == [10, 11]
    assert sorted(p for _, p, _ in sent(httpserver, "PATCH")) == [
        f"{DASHBOARDS}/10",
        f"{DASHBOARDS}/11",
    ]


# --- list filters -------------------------------------------------------------------------


def queries(httpserver):
    """The query parameters of each GET of the dashboard list, in order."""
    return [
        request.args.to_dict(flat=False)
        for request, _ in httpserver.log
        if request.method == "GET" and request.path == DASHBOARDS
    ]


ACTIVE_OF_THIS_CLUSTER = {"status": ["running", "starting"], "master_id": [str(MASTER_ID)]}


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (sense.getWorkers, [{"status": ["running"]}]),
        (sense.stopWorkers, [ACTIVE_OF_THIS_CLUSTER]),
        (
            lambda: sense.awaitWorkers(timeout_seconds=0),
            [ACTIVE_OF_THIS_CLUSTER, {"master_id": [str(MASTER_ID)]}],
        ),
        (lambda: sense.awaitWorkers([8, 10], timeout_seconds=0), [{"master_id": [str(MASTER_ID)]}]),
    ],
    ids=["getWorkers", "stopWorkers", "awaitWorkers()", "awaitWorkers(ids)"],
)
def test_list_calls_ask_the_server_only_for_the_dashboards_they_need(
    master_env, httpserver, call, expected
):
    # The stand-in ignores the filters and sends the whole project, as an older server
    # would: the client applies them too (other clusters, ended workers stay out).
    httpserver.expect_request(DASHBOARDS, method="GET").respond_with_json(project_dashboards())
    httpserver.expect_request(
        re.compile(rf"{DASHBOARDS}/\d+"), method="PATCH"
    ).respond_with_handler(stop_handler)
    call()
    assert queries(httpserver) == expected


def test_await_workers_finds_dashboards_outside_the_clusters_list(master_env, httpserver):
    # The master itself is nobody's worker: the project's whole list is asked for it.
    httpserver.expect_request(DASHBOARDS, method="GET").respond_with_json(project_dashboards())
    result = sense.awaitWorkers([MASTER_ID, 8], timeout_seconds=0)
    assert [w["id"] for w in result["workers"]] == [MASTER_ID, 8]
    assert queries(httpserver) == [{"master_id": [str(MASTER_ID)]}, {}]


def test_the_clean_up_of_a_failed_launch_looks_for_its_launches_by_name(master_env, httpserver):
    counter = LaunchCounter(fail_on={1})
    counter.serve(httpserver, stops=True)
    with pytest.raises(sense.LaunchError):
        sense.launchWorkers(2)
    (name,) = {body["name"] for body in counter.bodies}
    assert queries(httpserver) == [{"status": ["running", "starting"], "name": [name]}]


# --- huge and over-quota launches ---------------------------------------------------------


def test_past_the_quota_the_first_429_stops_the_sending_and_the_error_sums_up(
    master_env, httpserver
):
    counter = LaunchCounter(quota=5)
    counter.serve(httpserver, stops=True)

    with pytest.raises(sense.LaunchError) as raised:
        sense.launchWorkers(1000)

    posts = len(sent(httpserver, "POST"))
    assert posts <= 5 + sense.THREAD_POOL_SIZE  # the quota, and those already on their way
    error = raised.value
    assert error.status_code == 429
    assert error.not_sent == 1000 - posts
    assert sorted(d["id"] for d in error.stopped) == counter.launched == [10, 11, 12, 13, 14]
    message = str(error)
    assert message.startswith(
        f"{len(error.failures)} of 1000 worker launches failed; {error.not_sent} were not sent"
    )
    assert message.count("quota of 5 running workers reached") == 1  # once, however many met it
    assert len(message.splitlines()) == 3  # the counts, the error, the workers stopped again


def test_two_million_launches_past_the_quota_take_memory_bounded_by_the_pool(
    master_env, httpserver
):
    LaunchCounter(quota=5).serve(httpserver, stops=True)
    # In a process of its own, with its address space capped: a client that made a
    # future per launch up front (gigabytes) fails there at once, not on the machine.
    code = (
        "import resource, sense\n"
        "resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
        "try:\n"
        "    sense.launchWorkers(2_000_000)\n"
        "except sense.LaunchError as error:\n"
        "    print(error.not_sent, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=os.environ
    )
    assert result.returncode == 0, result.stderr[-2000:]
    not_sent, peak_kib = map(int, result.stdout.split())
    assert not_sent >= 2_000_000 - 5 - sense.THREAD_POOL_SIZE
    # The interpreter, requests and a pool's worth of launches: 30 MiB alone, up to about
    # 200 MiB under coverage in a full run. A future per launch would be gigabytes.
    assert peak_kib < 512 * 1024


# --- a dead or silent API -----------------------------------------------------------------


@pytest.fixture
def dying_api(master_env):
    """An API that answers 15 launches, then dies; this process is its master dashboard 3."""
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("dying_api.py")), "15"],
        stdout=subprocess.PIPE,
        text=True,
    )
    port = int(process.stdout.readline())
    master_env.setenv("SENSE_API_URL", f"http://127.0.0.1:{port}")
    yield process
    process.kill()
    process.wait()
    process.stdout.close()


def test_when_the_server_dies_during_a_launch_the_clean_up_gives_up_and_names_what_may_run(
    dying_api, monkeypatch
):
    monkeypatch.setattr(rest, "BACKOFF_FACTOR", 0.01)
    monkeypatch.setattr(workers, "UNDO_SECONDS", 30.0)
    started = time.monotonic()
    with pytest.raises(sense.LaunchError) as raised:
        sense.launchWorkers(100)
    elapsed = time.monotonic() - started

    error = raised.value
    assert dying_api.wait(timeout=10) == 0
    may_run = sorted(i for i, _ in error.not_stopped if i is not None)
    assert may_run == list(range(10, 25))  # the 15 launched, whose stops could not be sent
    assert error.stopped == []
    message = str(error)
    assert "could not be stopped: 10, 11, 12, 13, 14, 15, 16, 17, 18, 19 and 5 more" in message
    assert "may still run" in message
    assert "the API does not answer" in message
    # Once nothing answers, the clean-up stops trying: not 30 s for each wave of stops.
    assert elapsed < workers.UNDO_SECONDS / 2


def answer_only_the_challenge(listener: socket.socket) -> None:
    """Answer the challenge a client asks first (``sense.proof``), then never say a word."""
    kept = []
    while True:
        try:
            connection, _ = listener.accept()
        except OSError:  # the listener is closed: the test is over
            break
        kept.append(connection)  # open, and silent after the challenge's answer
        if answer := raw_challenge_answer(connection.recv(65536)):
            connection.sendall(answer)
    for connection in kept:
        connection.close()


def test_against_a_server_that_never_answers_a_launch_fails_within_about_one_read_timeout(
    master_env, monkeypatch
):
    monkeypatch.setattr(rest, "TIMEOUT", (0.5, 3.0))
    monkeypatch.setattr(workers, "UNDO_SECONDS", 0.3)
    with socket.create_server(("127.0.0.1", 0)) as silent:  # answers the challenge alone
        threading.Thread(target=answer_only_the_challenge, args=(silent,), daemon=True).start()
        master_env.setenv("SENSE_API_URL", f"http://127.0.0.1:{silent.getsockname()[1]}")
        started = time.monotonic()
        with pytest.raises(sense.LaunchError) as raised:
            sense.launchWorkers(2)
        elapsed = time.monotonic() - started
    assert all("no answer within 3.0 s" in str(e) for _, e in raised.value.failures)
    # The clean-up asks once more for the launches whose answers were lost, but does not
    # wait a second read timeout for an API that just let one pass.
    assert elapsed < 1.5 * rest.TIMEOUT[1]
    assert "could not check for launches whose answers were lost" in str(raised.value)


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "env",
    [{"A": "x\0y"}, {"A\0B": "x"}, {"": "x"}, {"A=B": "x"}],
    ids=["NUL in a value", "NUL in a name", "empty name", "= in a name"],
)
def test_an_env_no_process_could_have_is_refused_before_anything_is_sent(
    master_env, httpserver, env
):
    with pytest.raises(ValueError, match="NUL byte"):
        sense.launchWorkers(1, env=env)
    assert httpserver.log == []


@pytest.mark.parametrize("timeout", [math.nan, math.inf, -math.inf])
def test_await_workers_refuses_a_timeout_that_is_not_finite(master_env, httpserver, timeout):
    with pytest.raises(ValueError, match="timeout_seconds must be a finite number"):
        sense.awaitWorkers([8], timeout_seconds=timeout)
    assert httpserver.log == []


@pytest.mark.parametrize("ids", ["8", "12", 8, True, dashboard_json(8), b"8"])
def test_await_workers_refuses_a_single_id_or_dashboard_for_its_list(master_env, httpserver, ids):
    with pytest.raises(ValueError, match=r"awaitWorkers takes a list of ids or dashboards"):
        sense.awaitWorkers(ids)
    assert httpserver.log == []
