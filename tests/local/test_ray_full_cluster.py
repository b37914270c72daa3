"""The Ray backend, through the API, on a cluster whose CPUs are all taken.

The session's loopback cluster (``ray_cluster``: 3 nodes of 2 CPUs, no custom
resource) is filled with three ``large`` dashboards (2 CPUs each). A launch
that then finds no room within the server's bound is refused as one past the
quota; one that finds room within it (a dashboard stopped meanwhile) is
placed, and nothing of its output is lost on the console of ``sense run``.
"""

from __future__ import annotations

import contextlib
import io
import threading

import pytest
from conftest import Api, wait_for

from sense.local import LocalServer
from sense.local.console import LogFollower

pytestmark = pytest.mark.timeout(180)


@contextlib.contextmanager
def full_cluster(project_dir, cluster, placement_timeout: float):
    """A server on the Ray backend that waits ``placement_timeout`` seconds for room, whose
    three ``large`` workers take every CPU of the cluster; its API and those workers."""
    with LocalServer(
        project_dir,
        grace=1.0,
        backend="ray",
        ray_address=cluster.address,
        placement_timeout=placement_timeout,
    ) as server:
        server.attach(set_environ=False)
        api = Api(server)
        large = [api.launch(size="large") for _ in range(3)]
        for worker in large:
            api.wait_status(worker["id"], "running", timeout=30)
        yield api, large


def test_ray_a_launch_the_full_cluster_cannot_place_is_refused_with_429_and_nothing_left(
    project_dir, ray_cluster
):
    import ray

    with full_cluster(project_dir, ray_cluster, placement_timeout=1.0) as (api, large):
        answer = api("POST", "/dashboards", json={"master_id": api.server.master["id"]})
        assert answer.status_code == 429
        error = answer.json()["error"]
        assert "the Ray cluster has no room for a dashboard of size 'small' (0.5 CPU)" in error
        assert "its nodes hold 12 of that size" in error
        # Nothing of it is left: no dashboard starting, no placement group but the workers'.
        refused = api.get(large[-1]["id"] + 1)
        assert (refused["status"], refused["exit_code"]) == ("failed", None)
        assert api("GET", "/dashboards", params={"status": "starting"}).json() == []
        groups = [group["state"] for group in ray.util.placement_group_table().values()]
        assert sorted(state for state in groups if state != "REMOVED") == ["CREATED"] * 3


def test_ray_a_launch_waits_for_room_and_the_console_shows_all_of_its_output(
    project_dir, ray_cluster
):
    with full_cluster(project_dir, ray_cluster, placement_timeout=60.0) as (api, large):
        master = api.server.master
        console = io.StringIO()
        follower = LogFollower(api.server.project, console, after=master["id"])
        waiting_id = large[-1]["id"] + 1
        # A log that an earlier store left under the id the new worker gets (a project whose
        # .sense/sense.db was removed): not the worker's output.
        api.server.state.log_path(waiting_id).write_bytes(b"stale\n")
        launched = {}
        body = {"master_id": master["id"], "startup_code": "print('said hello to the master')"}

        def launch():
            launched.update(api("POST", "/dashboards", json=body, timeout=90).json())

        thread = threading.Thread(target=launch)
        thread.start()
        try:
            wait_for(lambda: api("GET", "/dashboards", params={"status": "starting"}).json())
            assert api.logs(waiting_id) == ""
            follower.poll()  # as the console of `sense run` does while the launch waits
            # Room on a node other than the server's, where the worker's output is kept apart.
            freed = next(w for w in large if w["project_ip"] != master["project_ip"])
            api("PUT", f"/dashboards/{freed['id']}/stop")
        finally:
            thread.join()
        assert (launched["id"], launched["project_ip"]) == (waiting_id, freed["project_ip"])
        api.wait_status(waiting_id, "stopped", timeout=30)
        follower.poll()
        assert console.getvalue() == f"[worker {waiting_id}] said hello to the master\n"
        assert api.logs(waiting_id) == "said hello to the master\n"
