"""Dask on sense workers: ``sense.dask.SenseCluster`` with real dask, real worker dashboards."""

from __future__ import annotations

import json
import logging
import os
import signal
import time

import distributed
import psutil
import pytest
from backend_support import sense_run
from conftest import PATIENT, sense_command
from frameworks_support import (
    check_a_map_and_an_array_reduction,
    check_nothing_left,
    dask_worker_hosts,
    wait_until_dashboards_match,
    worker_dashboards,
)
from waiting import wait_for

import sense

pytestmark = [pytest.mark.timeout(180), pytest.mark.processes_unmeasured]


@pytest.fixture
def scratch(tmp_path):
    """The dask workers' scratch space (``local_directory``), to see what they leave there."""
    directory = tmp_path / "scratch"
    directory.mkdir()
    return directory


def cluster_of(n, scratch, **options):
    from sense.dask import SenseCluster

    return SenseCluster(n_workers=n, worker_options={"local_directory": str(scratch)}, **options)


def test_a_map_and_an_array_reduction_run_on_worker_dashboards(local_master, scratch):
    with cluster_of(2, scratch) as cluster, distributed.Client(cluster) as client:
        # The constructor returned with its workers there, each on its dashboard's address.
        dashboards = wait_until_dashboards_match(client, 2, timeout=0)
        assert sorted(d["id"] for d in cluster.dashboards) == sorted(d["id"] for d in dashboards)
        assert cluster.scheduler_address.startswith(f"tcp://{local_master.master['project_ip']}:")
        check_a_map_and_an_array_reduction(client)
        pids = list(client.run(os.getpid).values())
    check_nothing_left(pids, local_master.master["id"])
    assert len(dashboards) == 2
    assert list(scratch.glob("*/worker-*")) == []  # dask's own close cleans its scratch space


def test_scale_up_and_down_and_adapt_keep_the_dashboards_matching(local_master, scratch):
    with cluster_of(1, scratch) as cluster, distributed.Client(cluster) as client:
        cluster.scale(3)
        wait_until_dashboards_match(client, 3)
        pids = list(client.run(os.getpid).values())
        cluster.scale(1)
        wait_until_dashboards_match(client, 1)
        # The two retired workers ended by themselves, the way dask ends a worker.
        assert client.submit(sum, [1, 2]).result() == 3
        cluster.adapt(minimum=2, maximum=2)
        wait_until_dashboards_match(client, 2)
        pids += list(client.run(os.getpid).values())
    check_nothing_left(pids, local_master.master["id"])


def test_a_worker_killed_mid_computation_and_dask_recovers(local_master, scratch):
    with cluster_of(2, scratch) as cluster, distributed.Client(cluster) as client:
        started = distributed.Event("started", client=client)

        def slow(x):
            distributed.Event("started").set()
            time.sleep(0.2)
            return x + 1

        futures = client.map(slow, range(20))
        started.wait(timeout=30)
        pids = client.run(os.getpid)
        victim = next(iter(pids.values()))
        os.kill(victim, signal.SIGKILL)
        assert client.gather(futures) == list(range(1, 21))
        # The killed worker's dashboard failed; the other one computed the rest.
        wait_for(lambda: len(dask_worker_hosts(client)) == 1, 30, what="dask to lose the worker")
        wait_for(lambda: len(worker_dashboards()) == 1, 30, what="the killed dashboard to end")
        failed = sense.Client().getDashboards("failed", master_id=local_master.master["id"])
        assert len(failed) == 1
    check_nothing_left(list(pids.values()), local_master.master["id"], but=1)


def test_bad_arguments_are_refused_before_anything_starts(local_master):
    from sense.dask import SenseCluster

    for arguments, problem in [
        ({"n_workers": -1}, "n_workers"),
        ({"size": None}, "size"),
        ({"size": "huge"}, "size must be 'small', 'medium', 'large' or an int from 0 to 16"),
        ({"env": {"A": 1}}, "env"),
        ({"worker_options": {"plugin": object()}}, "worker_options must be JSON"),
    ]:
        with pytest.raises(ValueError, match=problem):
            SenseCluster(**arguments)
    assert worker_dashboards() == []


def test_a_worker_that_cannot_start_fails_the_cluster_with_its_output(local_master, scratch):
    from sense.dask import SenseCluster

    with pytest.raises(RuntimeError) as raised:
        SenseCluster(n_workers=1, worker_options={"nthreads": "four"})
    message = str(raised.value)
    assert "before its dask worker 0 joined the scheduler" in message
    assert "Traceback" in message  # the end of the dashboard's output: why it failed
    assert worker_dashboards() == []


def test_the_dask_example_runs_under_sense_run(project_dir):
    output = sense_run("dask_cluster.py", project_dir)
    assert "dask workers listen on ['127." in output
    assert "worker dashboards: [2, 3, 4, 5]" in output
    assert "the sum of 100 squares: 328350" in output
    assert "the mean of 0 .. 9,999,999: 4999999.5" in output
    assert "scaled down to 2 workers" in output
    assert "after close, worker dashboards: []" in output
    # Quiet as LocalCluster: none of dask's INFO lines, neither the master's nor the workers'.
    assert " - INFO - " not in output


MASTER_THAT_ENDS = """\
import json, os, sys
from dask.distributed import Client
from sense.dask import SenseCluster

cluster = SenseCluster(n_workers=2, worker_options={"local_directory": sys.argv[1]})
client = Client(cluster)
print("pids:", json.dumps(list(client.run(os.getpid).values())), flush=True)
os._exit(0)  # the master ends at once: no close, no atexit
"""


def test_when_the_master_ends_without_closing_no_dask_worker_is_left(project_dir, scratch):
    (project_dir / "master.py").write_text(MASTER_THAT_ENDS)
    run = sense_command("run", "master.py", str(scratch), cwd=project_dir)
    output, _ = run.communicate(timeout=120)
    assert run.returncode == 0, output
    pids = json.loads(next(line for line in output.splitlines() if line.startswith("pids:"))[5:])
    _, alive = psutil.wait_procs(
        [psutil.Process(pid) for pid in pids if psutil.pid_exists(pid)], 15
    )
    assert alive == []
    # Stopped by the server, each dask worker closed itself as dask's own command does.
    assert list(scratch.glob("*/worker-*")) == []


@pytest.mark.parametrize("local_master", [PATIENT], indirect=True)
def test_a_stop_of_a_worker_dashboard_closes_its_dask_worker_as_dask_does(local_master, scratch):
    with cluster_of(2, scratch) as cluster, distributed.Client(cluster) as client:
        first, second = wait_until_dashboards_match(client, 2)
        [stopped] = sense.stopWorkers(first)
        # SIGTERM closed the worker (as `dask worker` does): it ended by itself, exit code 0.
        assert (stopped["status"], stopped["exit_code"]) == ("stopped", 0)
        wait_for(lambda: dask_worker_hosts(client) == [second["project_ip"]], 30)
        assert client.submit(sum, [1, 2]).result() == 3
    assert list(scratch.glob("*/worker-*")) == []


def test_a_cluster_closed_after_its_server_stopped_closes_quietly(local_master, scratch, caplog):
    cluster = cluster_of(1, scratch)
    with distributed.Client(cluster) as client:
        pids = list(client.run(os.getpid).values())
    sense.local.stop()  # the server, and with it every dashboard, ends first
    _, alive = psutil.wait_procs([psutil.Process(p) for p in pids if psutil.pid_exists(p)], 10)
    assert alive == []
    cluster.close()  # nothing left to stop: no error
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
