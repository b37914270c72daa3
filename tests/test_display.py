"""Progress while awaiting workers, on a terminal and in a pipe; the dashboard table's text."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys

from api_data import MASTER_ID, PROJECT_PATH, dashboard_json
from werkzeug import Response

import sense
from sense import display, workers


def scripted_statuses(*polls):
    """A dashboard-list handler whose workers' statuses move on at each poll."""
    remaining = list(polls)

    def handler(request):
        current = remaining.pop(0) if len(remaining) > 1 else remaining[0]
        body = [dashboard_json(MASTER_ID, master_id=None)]
        body += [dashboard_json(i, status=s) for i, s in current.items()]
        return Response(json.dumps(body), content_type="application/json")

    return handler


def test_await_workers_rewrites_one_progress_line_on_a_terminal(master_env, httpserver):
    httpserver.expect_request(f"{PROJECT_PATH}/dashboards").respond_with_handler(
        scripted_statuses(
            {8: "starting", 9: "starting"},
            {8: "running", 9: "starting"},
            {8: "running", 9: "running"},
        )
    )
    terminal, child_side = pty.openpty()
    code = "import sense\nresult = sense.awaitWorkers([8, 9])\nprint(len(result['workers']))\n"
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=child_side, env=os.environ
    )
    os.close(child_side)
    stdout, _ = child.communicate(timeout=30)
    seen = b""
    while True:
        try:
            chunk = os.read(terminal, 4096)
        except OSError:  # the child side is closed: all has been read
            break
        if not chunk:
            break
        seen += chunk
    os.close(terminal)
    shown = seen.decode()
    assert stdout == b"2\n"
    assert shown.startswith("\rawaiting workers: 0 of 2 running")
    assert "\rawaiting workers: 2 of 2 running" in shown
    assert shown.endswith("\r\n")  # the line is finished once waiting is over
    assert shown.count("\n") == 1


def test_await_workers_prints_nothing_into_a_pipe_or_a_log(
    master_env, httpserver, capfd, monkeypatch
):
    monkeypatch.setattr(workers, "POLL_INTERVAL", 0.01)
    httpserver.expect_request(f"{PROJECT_PATH}/dashboards").respond_with_handler(
        scripted_statuses({8: "starting"}, {8: "running"})
    )
    assert [w["id"] for w in sense.awaitWorkers([8])["workers"]] == [8]
    assert capfd.readouterr() == ("", "")


def test_the_dashboard_table_escapes_what_it_shows():
    table = display.dashboards_html({"id": 1, "status": "<b>odd</b>", "master_id": None})
    assert "<td>&lt;b&gt;odd&lt;/b&gt;</td>" in table
    assert "<b>" not in table


def test_only_dashboards_get_a_table():
    assert display.dashboards_html([]) is None
    assert display.dashboards_html([{"id": 1}]) is None
    assert display.dashboards_html({"workers": [], "failures": []}) is None
