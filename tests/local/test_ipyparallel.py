"""ipyparallel on sense workers: ``ipyparallel.Cluster(engines="sense")``, real engines."""

from __future__ import annotations

import os
import signal
import sys

import cloudpickle
import ipyparallel as ipp
import psutil
import pytest
from backend_support import sense_run
from conftest import PATIENT
from frameworks_support import ipyparallel_profile, worker_dashboards
from waiting import wait_for

import sense

pytestmark = [pytest.mark.timeout(180), pytest.mark.processes_unmeasured]


def dashboard_id() -> int:
    """What an engine runs to tell its dashboard."""
    return int(os.environ["SENSE_DASHBOARD_ID"])


@pytest.fixture
def profile_dir(tmp_path):
    """An IPython profile of the test's own: ipyparallel keeps its cluster files there."""
    with ipyparallel_profile(tmp_path / "profile") as profile:
        yield profile


@pytest.mark.parametrize("local_master", [PATIENT], indirect=True)
def test_engines_sense_run_map_sync_on_worker_dashboards_and_stop_with_the_cluster(
    local_master, profile_dir
):
    cluster = ipp.Cluster(engines="sense", n=3, profile_dir=profile_dir)
    rc = cluster.start_and_connect_sync()
    # This module is no module the engines can import: send its functions by value, as
    # functions defined in a notebook or a script (__main__) are sent.
    rc[:].use_cloudpickle()
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        assert rc.ids == [0, 1, 2]
        assert rc[:].map_sync(lambda x: x * x, range(100)) == [x * x for x in range(100)]
        ids = sorted(rc[:].apply_sync(dashboard_id))
        assert ids == sorted(d["id"] for d in worker_dashboards())
        pids = rc[:].apply_sync(os.getpid)
        cluster.stop_engines_sync()
        # Stopped when stop_engines returns, and ipyparallel was told.
        assert worker_dashboards() == []
        assert cluster.engines == {}
    finally:
        rc.close()
        cluster.stop_cluster_sync()
    _, alive = psutil.wait_procs([psutil.Process(p) for p in pids if psutil.pid_exists(p)], 10)
    assert alive == []
    ended = sense.Client().getDashboards(master_id=local_master.master["id"])
    assert sorted(d["id"] for d in ended) == ids
    # Each engine stopped on SIGTERM its own way, as a stopped ipengine does: exit status 0.
    assert {(d["status"], d["exit_code"]) for d in ended} == {("stopped", 0)}


def test_engines_shut_down_by_the_client_are_seen_as_ended(local_master, profile_dir):
    cluster = ipp.Cluster(engines="sense", n=2, profile_dir=profile_dir)
    rc = cluster.start_and_connect_sync()
    try:
        [engines] = cluster.engines.values()
        rc.shutdown(targets="all", block=True)
        wait_for(lambda: engines.state == "after", 30, what="the launcher to see the engines end")
        assert worker_dashboards() == []
        # Each engine's exit status, as ipengine ends after a shutdown (1, also without sense).
        assert sorted(engines.stop_data["engines"]) == sorted(engines.start_data)
    finally:
        rc.close()
        cluster.stop_cluster_sync()


def test_a_controller_on_loopback_is_refused_for_engines_elsewhere(
    local_master, profile_dir, monkeypatch
):
    # This dashboard's project address is not loopback (as on a Ray cluster of hosts), and
    # the controller listens on ipyparallel's default, 127.0.0.1: no engine could reach it.
    monkeypatch.setenv("SENSE_PROJECT_IP", "192.0.2.10")
    cluster = ipp.Cluster(engines="sense", n=2, profile_dir=profile_dir)
    try:
        with pytest.raises(Exception, match=r"controller_ip='192\.0\.2\.10'"):
            cluster.start_cluster_sync()
        assert worker_dashboards() == []
        # Stopped only once it answers: ipyparallel's controller writes the connection file
        # before it starts its schedulers and sets its signal handlers after, and one that a
        # SIGTERM ends in between leaves its schedulers running.
        cluster.connect_client_sync(timeout=60).close()
    finally:
        cluster.stop_cluster_sync()


def test_the_ipyparallel_example_runs_under_sense_run(project_dir):
    output = sense_run("ipyparallel_cluster.py", project_dir)
    assert "engines: [0, 1, 2, 3] on worker dashboards [2, 3, 4, 5]" in output
    assert "each engine runs in its dashboard: True" in output
    assert "the sum of 100 squares: 328350" in output
    assert "after stop_engines, worker dashboards: []" in output


def test_a_launcher_restored_from_its_dict_follows_the_same_engines(local_master, profile_dir):
    from ipyparallel.cluster.launcher import LauncherError, NotRunning

    from sense.ipyparallel import SenseEngineSetLauncher

    cluster = ipp.Cluster(engines="sense", n=2, profile_dir=profile_dir)
    rc = cluster.start_and_connect_sync()
    try:
        [engines] = cluster.engines.values()
        restored = SenseEngineSetLauncher.from_dict(engines.to_dict())
        assert restored.dashboards == engines.dashboards
        with pytest.raises(LauncherError, match="cannot be sent signal 2"):
            cluster.signal_engines_sync(signal.SIGINT)
        cluster.signal_engines_sync(signal.SIGTERM)  # a stop, as ipyparallel's own launchers
        assert worker_dashboards() == []
        wait_for(lambda: restored.state == "after", 30, what="the restored launcher to see it")
        with pytest.raises(NotRunning):
            SenseEngineSetLauncher.from_dict(engines.to_dict())
    finally:
        rc.close()
        cluster.stop_cluster_sync()


def test_engines_whose_server_stopped_are_seen_as_ended(local_master, profile_dir):
    cluster = ipp.Cluster(engines="sense", n=1, profile_dir=profile_dir)
    rc = cluster.start_and_connect_sync()
    [engines] = cluster.engines.values()
    pids = rc[:].apply_sync(os.getpid)
    rc.close()
    sense.local.stop()  # the server, and with it every dashboard, ends first
    wait_for(lambda: engines.state == "after", 30, what="the launcher to see the engines end")
    cluster.stop_cluster_sync()
    _, alive = psutil.wait_procs([psutil.Process(p) for p in pids if psutil.pid_exists(p)], 10)
    assert alive == []
