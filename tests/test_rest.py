"""The HTTP layer under faults: retries, timeouts, error answers, credentials kept out of sight."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
from api_data import PROJECT_PATH, TOKEN, dashboard_json, raw_challenge_answer
from werkzeug import Response

import sense
from sense import client, rest

DASHBOARDS = f"{PROJECT_PATH}/dashboards"


def test_a_get_answered_503_twice_then_200_succeeds(master_env, httpserver, fast_http):
    for _ in range(2):
        httpserver.expect_ordered_request(DASHBOARDS, method="GET").respond_with_json(
            {"error": "restarting"}, status=503
        )
    httpserver.expect_ordered_request(DASHBOARDS, method="GET").respond_with_json(
        [dashboard_json(3, master_id=None)]
    )
    assert [d["id"] for d in sense.getWorkers()] == [3]
    assert len(httpserver.log) == 3


def test_a_get_that_keeps_failing_raises_the_last_status(master_env, httpserver, fast_http):
    httpserver.expect_request(DASHBOARDS, method="GET").respond_with_json(
        {"error": "gateway down"}, status=504
    )
    with pytest.raises(sense.SenseAPIError) as raised:
        sense.getWorkers()
    assert raised.value.status_code == 504
    assert len(httpserver.log) == rest.RETRIES + 1


def test_a_post_answered_503_is_sent_once(master_env, httpserver, fast_http):
    httpserver.expect_request(DASHBOARDS, method="POST").respond_with_json(
        {"error": "overloaded"}, status=503
    )
    with pytest.raises(sense.LaunchError) as raised:
        sense.launchWorkers(1)
    assert [r.method for r, _ in httpserver.log].count("POST") == 1
    assert raised.value.status_code == 503
    assert "overloaded" in str(raised.value)


def test_a_502_with_an_html_body_is_an_api_error_not_a_json_error(
    master_env, httpserver, fast_http
):
    page = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
    httpserver.expect_request(f"{DASHBOARDS}/3", method="GET").respond_with_data(
        page, status=502, content_type="text/html"
    )
    with pytest.raises(sense.SenseAPIError) as raised:
        sense.getMaster()
    assert raised.value.status_code == 502
    assert "502 Bad Gateway" in str(raised.value)
    assert not isinstance(raised.value, ValueError)


def test_a_200_whose_body_is_not_json_is_an_api_error(master_env, httpserver):
    httpserver.expect_request(DASHBOARDS, method="GET").respond_with_data("ok", status=200)
    with pytest.raises(sense.SenseAPIError, match="not JSON: ok"):
        sense.getWorkers()


def test_the_servers_error_message_is_in_the_exception(master_env, httpserver):
    httpserver.expect_request(DASHBOARDS, method="POST").respond_with_json(
        {"error": "quota of 8 running workers reached"}, status=429
    )
    httpserver.expect_request(DASHBOARDS, method="GET").respond_with_json([])
    with pytest.raises(sense.LaunchError, match="quota of 8 running workers reached"):
        sense.launchWorkers(1)


def test_a_server_that_never_answers_gives_a_connection_error_within_the_timeout(
    master_env, fast_http
):
    # A socket that accepts connections and never says a word.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        master_env.setenv("SENSE_API_URL", f"http://127.0.0.1:{silent.getsockname()[1]}")
        started = time.monotonic()
        with pytest.raises(sense.SenseConnectionError, match=r"no answer within 0.5 s"):
            sense.getWorkers()
        elapsed = time.monotonic() - started
    assert elapsed < 3 * rest.TIMEOUT[1]  # one wait, not one per retry
    assert isinstance(sense.SenseConnectionError("x"), ConnectionError)


def test_a_refused_connection_is_retried_then_raises_a_connection_error(master_env, fast_http):
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    master_env.setenv("SENSE_API_URL", f"http://127.0.0.1:{port}")  # nothing listens there now
    with pytest.raises(sense.LaunchError, match="could not reach the API") as raised:
        sense.launchWorkers(1)
    ((_, error),) = raised.value.failures
    assert isinstance(error, sense.SenseConnectionError)


def test_a_post_whose_connection_dropped_after_sending_is_not_sent_again(master_env, fast_http):
    # The server reads the request, then hangs up without an answer: the
    # launch may have happened, so sending it again could launch twice.
    with socket.create_server(("127.0.0.1", 0)) as hangs_up:
        hangs_up.settimeout(5)
        master_env.setenv("SENSE_API_URL", f"http://127.0.0.1:{hangs_up.getsockname()[1]}")
        received = []

        def serve():
            while True:
                try:
                    connection, _ = hangs_up.accept()
                except OSError:
                    return
                with connection:
                    request = connection.recv(65536)
                    if answer := raw_challenge_answer(request):
                        connection.sendall(answer)  # and the request follows on it
                        request = connection.recv(65536)
                    received.append(request)

        server = threading.Thread(target=serve, daemon=True)
        server.start()
        with pytest.raises(sense.LaunchError):
            sense.launchWorkers(1)
    posts = [request for request in received if request.startswith(b"POST ")]
    assert len(posts) == 1


def test_one_session_serves_every_call(master_env, httpserver):
    httpserver.expect_request(DASHBOARDS, method="GET").respond_with_json([])
    sense.getWorkers()
    first = client.default().session
    sense.getWorkers()
    assert client.default().session is first


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_makes_its_own_session(master_env, httpserver):
    httpserver.expect_request(DASHBOARDS, method="GET").respond_with_json([])
    sense.getWorkers()
    parent_session = client.default().session
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report whether its session is new, then leave at once
        os.close(read_end)
        fresh = client.default().session is not parent_session
        os.write(write_end, b"fresh" if fresh else b"shared")
        os._exit(0)
    os.close(write_end)
    answer = os.read(read_end, 16)
    os.waitpid(pid, 0)
    os.close(read_end)
    assert answer == b"fresh"
    assert client.default().session is parent_session


def test_credentials_appear_in_no_message_and_no_log(master_env, httpserver, caplog):
    master_env.setenv(
        "SENSE_API_URL", httpserver.url_for("/").replace("http://", "http://alice:pw-77@")
    )
    httpserver.expect_request(DASHBOARDS, method="GET").respond_with_response(
        Response(json.dumps({"error": "nope"}), status=403, content_type="application/json")
    )
    with caplog.at_level(logging.DEBUG), pytest.raises(sense.SenseAPIError) as raised:
        sense.getWorkers()
    shown = [str(raised.value), repr(raised.value), raised.value.url, caplog.text]
    for text in shown:
        assert TOKEN not in text
        assert "pw-77" not in text
    assert "GET http://127.0.0.1" in str(raised.value)


def test_import_sense_loads_neither_requests_nor_ipython_nor_the_server():
    code = (
        "import sys, sense\n"
        "sense.Client('http://127.0.0.1:8000/users/a/projects/p', ('t', ''))  # nor a client\n"
        "heavy = {'requests', 'urllib3', 'IPython', 'fastapi', 'uvicorn', 'pydantic',"
        " 'starlette', 'sense.local'}\n"
        "print(sorted(m for m in sys.modules if m in heavy or m.split('.')[0] in heavy))\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "[]"


def test_requests_loads_at_the_first_rest_call(master_env, httpserver):
    httpserver.expect_request(DASHBOARDS, method="GET").respond_with_json([])
    code = "import sys, sense\nsense.getWorkers()\nprint('requests' in sys.modules)\n"
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ
    ).stdout
    assert output.strip() == "True"


def test_retries_set_after_the_first_call_apply_to_the_next(
    master_env, httpserver, fast_http, monkeypatch
):
    httpserver.expect_request(DASHBOARDS, method="GET").respond_with_json(
        {"error": "restarting"}, status=503
    )
    with pytest.raises(sense.SenseAPIError):
        sense.getWorkers()
    assert len(httpserver.log) == rest.RETRIES + 1
    httpserver.clear_log()
    monkeypatch.setattr(rest, "RETRIES", 0)
    with pytest.raises(sense.SenseAPIError):
        sense.getWorkers()
    assert len(httpserver.log) == 1


# --- proxies ------------------------------------------------------------------------------


@pytest.fixture
def closed_port():
    """A port of 127.0.0.1 that nothing listens on."""
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        return placeholder.getsockname()[1]


@pytest.fixture
def proxy_env(master_env):
    """No proxy exceptions of this machine's: what NO_PROXY would exempt must not blur a test."""
    for name in ("NO_PROXY", "no_proxy"):
        master_env.delenv(name, raising=False)
    return master_env


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
@pytest.mark.parametrize(
    "variables",
    [("HTTP_PROXY",), ("ALL_PROXY",), ("http_proxy", "https_proxy", "all_proxy")],
    ids=["HTTP_PROXY", "ALL_PROXY", "all of them"],
)
def test_a_loopback_api_is_reached_directly_whatever_proxy_the_environment_names(
    proxy_env, httpserver, closed_port, host, variables
):
    # A proxy that would break every request sent through it: nothing listens there.
    for name in variables:
        proxy_env.setenv(name, f"http://127.0.0.1:{closed_port}")
    proxy_env.setenv("SENSE_API_URL", f"http://{host}:{httpserver.port}")
    httpserver.expect_request(DASHBOARDS, method="GET").respond_with_json(
        [dashboard_json(3, master_id=None)]
    )
    assert [d["id"] for d in sense.getWorkers()] == [3]


def test_an_error_from_a_proxy_says_so_and_names_the_proxy_without_credentials(
    proxy_env, closed_port, fast_http
):
    proxy_env.setenv("SENSE_API_URL", "http://sense-api.invalid")  # not loopback: proxied
    proxy_env.setenv("HTTP_PROXY", f"http://bob:pw-99@127.0.0.1:{closed_port}")
    with pytest.raises(sense.SenseConnectionError) as raised:
        sense.getWorkers()
    message = str(raised.value)
    assert f"could not reach the API through the proxy http://127.0.0.1:{closed_port}" in message
    assert "pw-99" not in message and "bob" not in message
    assert raised.value.unreachable
