"""Process faults: SIGKILL a worker, a master, the server. Statuses come out right, nothing is left.

(``no_strays`` in conftest checks after every test that no worker process survives.)
"""

from __future__ import annotations

import os
import signal
import textwrap

import psutil
import pytest
import requests
from conftest import engine_processes, read_exports, sense_command, wait_for

from sense.local import LocalServer

pytestmark = pytest.mark.timeout(60)

IDLE = ""  # a dashboard without startup code idles until it is stopped


def dashboard_process(under, dashboard_id: int) -> psutil.Process:
    """The engine process of one dashboard (which this test's server started), found by the id
    in its environment."""

    def found():
        for process in engine_processes(under):
            try:
                if (
                    process.environ().get("SENSE_DASHBOARD_ID") == str(dashboard_id)
                    and process.ppid() == os.getpid()
                ):
                    return process
            except psutil.Error:
                continue
        return None

    found.__name__ = f"the process of dashboard {dashboard_id}"
    return wait_for(found)


@pytest.mark.parametrize("which", ["job", "engine"])
def test_sigkill_of_a_worker_fails_it_with_the_signal_as_exit_code(api, tmp_path, which):
    worker = api.launch(startup_code=IDLE)
    api.wait_status(worker["id"], "running")
    engine = dashboard_process(tmp_path, worker["id"])
    # The job is the process that runs the worker's code; the engine forked it and watches it.
    [job] = wait_for(engine.children)
    (job if which == "job" else engine).send_signal(signal.SIGKILL)
    failed = api.wait_status(worker["id"], "failed")
    assert failed["exit_code"] == -signal.SIGKILL
    assert failed["stopped_at"].endswith("Z")


def test_sigkill_of_a_master_stops_its_workers(api, tmp_path):
    # A master launched through the API, whose startup code launches two workers.
    master_code = textwrap.dedent(
        """
        import time, sense
        sense.launchWorkers(2)
        time.sleep(600)
        """
    )
    master = api.launch(master_id=None, startup_code=master_code)

    def two_workers_running():
        workers = api("GET", f"/dashboards/{master['id']}/workers").json()
        return workers if len(workers) == 2 else None

    workers = wait_for(two_workers_running, timeout=20)
    dashboard_process(tmp_path, master["id"]).send_signal(signal.SIGKILL)

    assert api.wait_status(master["id"], "failed")["exit_code"] == -signal.SIGKILL
    for worker in workers:
        assert api.wait_status(worker["id"], "stopped")["exit_code"] is not None


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
    _, alive = psutil.wait_procs(engine_processes(tmp_path), timeout=5)
    assert alive == []

    with LocalServer(project_dir) as restarted:
        history = {row["id"]: row for row in restarted.project.dashboards()}
    assert set(history) == {master, *launched}
    # What the killed run left running is over: failed, or stopped for the server's own master.
    assert history[master]["status"] == "stopped"
    assert [history[i]["status"] for i in launched] == ["failed", "failed"]
    assert all(row["stopped_at"] for row in history.values())
    assert not any(
        process.environ().get("SENSE_PROJECT_URL") == url for process in engine_processes(tmp_path)
    )
    assert os.path.exists(project_dir / ".sense" / "token")
