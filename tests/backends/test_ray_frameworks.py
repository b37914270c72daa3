"""Dask and ipyparallel on sense workers placed by Ray, on the loopback Ray cluster.

The master is this test process (``sense.local.start(backend="ray")``), on the head
node (127.0.0.2); the workers go where Ray places them, each framework worker
listening on its node's address.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import cloudpickle
import distributed
import ipyparallel as ipp
import psutil
import pytest
from backend_support import sense_run
from frameworks_support import (
    check_a_map_and_an_array_reduction,
    check_nothing_left,
    dask_worker_hosts,
    ipyparallel_profile,
    wait_until_dashboards_match,
    worker_dashboards,
)
from ray_cluster import node_ip
from waiting import wait_for

import sense
import sense.local

pytestmark = [pytest.mark.timeout(240), pytest.mark.processes_unmeasured]


@pytest.fixture
def ray_master(ray_cluster, project_dir, monkeypatch):
    """This process: the master of a server whose dashboards Ray places."""
    for name in [n for n in os.environ if n.startswith("SENSE_")]:
        monkeypatch.delenv(name)
    server = sense.local.start(
        project_dir, backend="ray", ray_address=ray_cluster.address, grace=1.0
    )
    yield server
    sense.local.stop()


def test_ray_a_dask_cluster_computes_scales_survives_a_kill_and_leaves_nothing(ray_master):
    from sense.dask import SenseCluster

    assert ray_master.master["project_ip"] == node_ip(0)
    with SenseCluster(n_workers=3) as cluster, distributed.Client(cluster) as client:
        dashboards = wait_until_dashboards_match(client, 3, timeout=0)
        assert len({d["project_ip"] for d in dashboards}) > 1, "every worker on one node"
        assert cluster.scheduler_address.startswith(f"tcp://{node_ip(0)}:")
        check_a_map_and_an_array_reduction(client)
        pids = client.run(os.getpid)

        futures = client.map(lambda x: (time.sleep(0.2), x + 1)[1], range(20))
        wait_for(lambda: client.processing() and any(client.processing().values()), 30)
        os.kill(next(iter(pids.values())), signal.SIGKILL)
        assert client.gather(futures) == list(range(1, 21))
        wait_for(lambda: len(dask_worker_hosts(client)) == 2, 30, what="dask to lose it")

        cluster.scale(1)
        wait_until_dashboards_match(client, 1)
    check_nothing_left(list(pids.values()), ray_master.master["id"], but=1)


def test_ray_ipyparallel_engines_run_on_the_nodes_and_stop(ray_master, tmp_path):
    here = sense.networkInfo()["project_ip"]
    with ipyparallel_profile(tmp_path / "profile") as profile:
        cluster = ipp.Cluster(engines="sense", n=3, controller_ip=here, profile_dir=profile)
        rc = cluster.start_and_connect_sync()
        rc[:].use_cloudpickle()
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
        try:
            assert rc[:].map_sync(lambda x: x * x, range(100)) == [x * x for x in range(100)]
            nodes = rc[:].apply_sync(lambda: os.environ["SENSE_PROJECT_IP"])
            assert sorted(nodes) == sorted(d["project_ip"] for d in worker_dashboards())
            assert len(set(nodes)) > 1, "every engine on one node"
            pids = rc[:].apply_sync(os.getpid)
            cluster.stop_engines_sync()
            assert worker_dashboards() == []
        finally:
            rc.close()
            cluster.stop_cluster_sync()
    _, alive = psutil.wait_procs([psutil.Process(p) for p in pids if psutil.pid_exists(p)], 15)
    assert alive == []


@pytest.mark.parametrize(
    ("example", "line"),
    [
        ("dask_cluster.py", "after close, worker dashboards: []"),
        ("ipyparallel_cluster.py", "after stop_engines, worker dashboards: []"),
    ],
)
def test_ray_the_examples_run_under_sense_run(ray_cluster, project_dir, example, line):
    address = ray_cluster.address
    output = sense_run(example, project_dir, "--backend", "ray", "--ray-address", address)
    assert "the sum of 100 squares: 328350" in output
    assert line in output
