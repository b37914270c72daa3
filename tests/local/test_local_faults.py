"""SIGKILL of the server: a restart recovers the history, and nothing is left.

SIGKILL of a worker and of a master are in the backend contract suite.

(``no_strays`` in conftest checks after every test that no worker process survives.)
"""

from __future__ import annotations

import os
import signal

import pytest
import requests
from conftest import engine_processes, read_exports, sense_command, wait_for
from waiting import left_running

from sense.local import LocalServer

pytestmark = pytest.mark.timeout(60)


def test_a_restart_after_sigkill_of_the_server_recovers_the_history(project_dir, tmp_path):
    server = sense_command("server", "--project-dir", str(project_dir), cwd=project_dir)
    try:
        exports = dict(read_exports(server))
        url, token = exports["SENSE_PROJECT_URL"], exports["SENSE_API_TOKEN"]
        master = int(exports["SENSE_DASHBOARD_ID"])
        launched = [
            requests.post(
                f"{url}/dashboards", json={"master_id": master}, auth=(token, ""), timeout=10
            ).json()["id"]
            for _ in range(2)
        ]
        # Two dashboards: each an engine and the job it forked.
        wait_for(lambda: len(engine_processes(tmp_path)) == 4)
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()
        server.stdout.close()
    alive = left_running(engine_processes(tmp_path), timeout=5)
    assert alive == []

    with LocalServer(project_dir) as restarted:
        history = {row["id"]: row for row in restarted.project.dashboards()}
    assert set(history) == {master, *launched}
    # What the killed run left running is over: failed, or stopped for the server's own master.
    assert history[master]["status"] == "stopped"
    assert [history[i]["status"] for i in launched] == ["failed", "failed"]
    assert all(row["stopped_at"] for row in history.values())
    assert engine_processes(tmp_path) == []
    assert os.path.exists(project_dir / ".sense" / "token")
