"""What only the Ray backend does, on a real 3-node Ray cluster (nodes on 127.0.0.2-4).

A backend shut down, the quota from the slots an operator gave the nodes, a
node that joins and one lost, Ray Client's addresses refused, and the
server's fate shared by every dashboard on every node. Each test has a backend
of its own (one Ray driver per process at a time); those that need none of
their own, placement over the nodes among them, are in
``test_ray_dashboards.py``, whose tests share one.
"""

from __future__ import annotations

import contextlib
import re
import subprocess

import psutil
import pytest
from backend_support import (
    NODES,
    SENSE,
    Launcher,
    dashboards_with_processes,
    log_of,
    make_backend,
    run_the_cluster_example,
    sigkill_of_the_driver_leaves_nothing,
    subscribed,
)
from ray_cluster import add_node, node_ip
from ray_driver import Driver
from waiting import left_running

pytestmark = pytest.mark.timeout(120)

NODE_IPS = {node_ip(i) for i in range(NODES)}


@contextlib.contextmanager
def ray_backend(cluster, project_dir, mark, **options):
    """A Ray backend of the test's own, with a recorder of its news and a launcher."""
    backend = make_backend("ray", project_dir, ray_address=cluster.address, **options)
    try:
        yield backend, subscribed(backend), Launcher(backend, mark)
    finally:
        backend.shutdown()


def test_backend_shutdown_stops_every_dashboard(ray_cluster, project_dir, mark):
    with ray_backend(ray_cluster, project_dir, mark) as (backend, recorder, launch):
        ids = [launch("import time; time.sleep(60)")[0] for _ in range(NODES)]
        for dashboard_id in ids:
            recorder.wait_running(dashboard_id)
        backend.shutdown()
        assert {i: recorder.exits.get(i) for i in ids} == {i: (143, "stopped") for i in ids}


@pytest.mark.parametrize("given", ["argument", "RAY_ADDRESS"])
def test_ray_a_ray_client_address_is_refused_before_connecting(project_dir, monkeypatch, given):
    import ray

    from sense.errors import SenseConfigError

    address = "ray://127.0.0.1:10001"
    options = {"ray_address": address} if given == "argument" else {}
    if given == "RAY_ADDRESS":
        monkeypatch.setenv("RAY_ADDRESS", address)
    with pytest.raises(SenseConfigError, match="run the server on a node of the cluster"):
        make_backend("ray", project_dir, **options)
    assert not ray.is_initialized()


def sense_run(project_dir, *options: str) -> subprocess.CompletedProcess:
    """``sense run OPTIONS job.py`` in ``project_dir``, its output captured."""
    (project_dir / "job.py").write_text("print('never runs')\n")
    return subprocess.run(
        [*SENSE, "run", *options, "job.py"],
        cwd=project_dir,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_ray_sense_run_through_ray_client_says_in_one_line_where_to_run_instead(project_dir):
    run = sense_run(project_dir, "--backend", "ray", "--ray-address", "ray://127.0.0.1:10001")
    assert run.returncode == 1
    assert run.stdout == ""
    [line] = run.stderr.splitlines()
    assert line.startswith("sense: the ray backend cannot work through Ray Client")
    assert "run the server on a node of the cluster" in line
    assert not (project_dir / ".sense").exists()  # refused before anything was made


@pytest.mark.parametrize(
    ("options", "said"),
    [
        (["--backend", "ray", "--ray-placement-timeout", "-1"], "should be a number of seconds"),
        (["--ray-placement-timeout", "5"], "--ray-placement-timeout goes with --backend ray"),
    ],
    ids=["negative", "local-backend"],
)
def test_ray_a_wrong_placement_timeout_is_refused_naming_it(project_dir, options, said):
    run = sense_run(project_dir, *options)
    assert run.returncode in (1, 2)
    assert said in run.stderr
    assert "never runs" not in run.stdout


def test_ray_slots_cap_each_node_and_a_launch_past_them_is_refused_with_nothing_left(
    ray_cluster_with_slots, project_dir, mark
):
    import ray

    from sense.local.backends import NoRoomError

    slotted = ray_cluster_with_slots
    with ray_backend(slotted, project_dir, mark) as (backend, recorder, launch):
        assert backend.slotted
        assert backend.capacity() == 2  # the head's slots; the other node offers none
        # Size 0 takes a slot and no CPU: the slots are what runs out.
        launched = [launch("import time; time.sleep(60)", size=0) for _ in range(2)]
        assert {placement.project_ip for _, placement in launched} == {node_ip(4)}
        backend.placement_timeout = 1.0  # no room will come: no need to wait long
        with pytest.raises(NoRoomError, match="its nodes hold 2 of that size"):
            launch("print('one too many')", size=0)
        # Only the dashboards that started have processes (each its engine and its job), and
        # only their placement groups are left.
        ids = [dashboard_id for dashboard_id, _ in launched]
        assert dashboards_with_processes(mark) == {str(i) for i in ids}
        groups = [group["state"] for group in ray.util.placement_group_table().values()]
        assert sorted(state for state in groups if state != "REMOVED") == ["CREATED"] * 2
        backend.stop(ids[0])
        # The slot of a dashboard that ended is free again (Ray frees it in the background:
        # a launch waits for room as long as it would by default).
        backend.placement_timeout = 10.0
        dashboard_id, _ = launch("print('in its place')", size=0)
        assert recorder.exit_of(dashboard_id)[0] == 0


def test_ray_a_node_that_joins_gets_dashboards_and_one_lost_fails_them_leaving_no_process(
    ray_cluster, project_dir, mark
):
    extra_ip = node_ip(NODES)
    with ray_backend(ray_cluster, project_dir, mark) as (backend, recorder, launch):
        extra = add_node(ray_cluster, extra_ip)
        try:
            launched = [launch("import time; time.sleep(60)") for _ in range(NODES + 1)]
            on_extra = [i for i, placement in launched if placement.project_ip == extra_ip]
            assert on_extra, "Ray placed nothing on the node that joined"
            for dashboard_id, _ in launched:
                recorder.wait_running(dashboard_id)
            processes = [psutil.Process(p.handle["pid"]) for i, p in launched if i in on_extra]
            ray_cluster.remove_node(extra)
            extra = None
            for dashboard_id in on_extra:
                assert recorder.exit_of(dashboard_id) == (None, "lost")
                assert f"Ray node {extra_ip} was lost" in log_of(backend, dashboard_id)
            alive = left_running(processes, timeout=10)
            assert not alive
            assert all(i not in recorder.exits for i, _ in launched if i not in on_extra)
        finally:
            if extra is not None:
                ray_cluster.remove_node(extra)


def test_ray_sigkill_of_the_server_ends_every_dashboard_and_its_children_on_every_node(
    ray_cluster, project_dir, mark
):
    with Driver(ray_cluster.address, project_dir) as driver:
        sigkill_of_the_driver_leaves_nothing(driver, range(1, NODES + 1), mark, NODE_IPS)


def test_ray_sense_run_of_the_cluster_example_puts_its_workers_on_the_cluster_s_nodes(
    ray_cluster, project_dir
):
    output = run_the_cluster_example(ray_cluster.address, project_dir)
    hellos = set(re.findall(r"says hello from (\S+)", output))
    assert hellos <= NODE_IPS
