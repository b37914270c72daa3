"""The life cycle of a dashboard across its server's own: a quota, a stop and a restart.

The rest of the contract suite (``test_backend_contract.py``), each test once per backend of
``BACKENDS``; apart from it because each of these tests starts servers of its own, while the
Ray tests there share one (a process may hold only one Ray backend at a time).
"""

from __future__ import annotations

import pytest
from conftest import Api, dashboard_process, dashboard_processes
from waiting import left_running

from sense.local import LocalServer

pytestmark = pytest.mark.timeout(90)


def test_the_quota_refuses_a_launch_past_it_until_one_ends(project_dir, backend):
    with LocalServer(project_dir, grace=1.0, max_workers=1, **backend) as server:
        server.attach(set_environ=False)
        api = Api(server)
        first = api.launch()
        answer = api("POST", "/dashboards", json={"master_id": server.master["id"]})
        assert answer.status_code == 429
        api("PUT", f"/dashboards/{first['id']}/stop")
        api("PUT", f"/dashboards/{api.launch()['id']}/stop")


def test_stopping_the_server_ends_every_dashboard_and_a_restart_keeps_the_history(
    project_dir, backend
):
    with LocalServer(project_dir, grace=1.0, **backend) as server:
        server.attach(set_environ=False)
        api = Api(server)
        done = api.launch(startup_code="print('before the restart')")
        api.wait_status(done["id"], "stopped")
        running = [api.launch() for _ in range(2)]
        for worker in running:
            api.wait_status(worker["id"], "running")
        processes = [dashboard_process(api, worker["id"]) for worker in running]
    alive = left_running(processes, timeout=5)
    assert alive == []
    with LocalServer(project_dir, grace=1.0, **backend) as server:
        server.attach(set_environ=False)
        api = Api(server)
        history = api("GET", "/dashboards").json()
        # The first run's master, its three workers, then this run's master: ids go on.
        assert [d["id"] for d in history] == [1, 2, 3, 4, server.master["id"]] == [1, 2, 3, 4, 5]
        assert [d["status"] for d in history[:4]] == ["stopped"] * 4
        assert "before the restart" in api.logs(done["id"])
        api("PUT", f"/dashboards/{api.launch()['id']}/stop")
    assert dashboard_processes(api) == []
