"""The project's rules against an in-memory backend, and choosing a backend by name."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from conftest import Api, install_backend, wait_for
from plugins.fake_backend import FakeBackend

from sense.local import LocalServer, backends
from sense.local.backends import UnknownBackendError


@pytest.fixture
def fake_installed(tmp_path, monkeypatch):
    """``FakeBackend`` installed as a third party would: a distribution with an entry point."""
    site = install_backend(tmp_path / "site", "fake", "plugins.fake_backend:FakeBackend")
    monkeypatch.syspath_prepend(str(site))
    FakeBackend.recovered.clear()
    return site


@pytest.fixture
def fake(project_dir, fake_installed):
    """A server on the fake backend, whose master is this test process."""
    with LocalServer(project_dir, backend="fake", grace=0.1) as server:
        server.attach(set_environ=False)
        yield server, server.project.backend, Api(server)


def test_an_installed_backend_is_found_by_its_entry_point_name(fake_installed):
    assert backends.load("fake") is FakeBackend
    assert backends.load("local").name == "local"


def test_an_unknown_backend_is_refused_naming_those_there_are_before_anything_is_made(
    project_dir,
):
    with pytest.raises(UnknownBackendError, match=r"'nope'.*local.*ray"):
        LocalServer(project_dir, backend="nope")
    assert not (project_dir / ".sense").exists()


def test_the_project_stores_where_the_backend_placed_a_dashboard(fake):
    server, backend, api = fake
    worker = api.launch(engine="fake-engine", env={"ROLE": "worker"})
    assert worker["project_ip"] == f"10.0.0.{worker['id'] + 1}"
    assert worker["public_port_mapping"] == {"9000": 19000 + worker["id"]}
    env = backend.environments[worker["id"]]
    assert env["SENSE_PROJECT_IP"] == worker["project_ip"]
    assert env["SENSE_PORT1"] == "9000" and env["SENSE_PUBLIC_PORT1"] == str(19000 + worker["id"])
    assert env["SENSE_MASTER_ID"] == str(server.master["id"])
    assert env["ROLE"] == "worker"
    assert server.master["project_ip"] == "10.0.0.1"


def test_what_the_backend_refuses_is_a_422_with_its_reason(fake):
    _, backend, api = fake
    answer = api("POST", "/dashboards", json={"engine": "sense-ipython-engine"})
    assert answer.status_code == 422
    assert "not fake enough" in answer.json()["error"]
    assert backend.launched == {}


def test_the_quota_is_the_backends_capacity(fake):
    _, backend, api = fake
    for _ in range(3):
        api.launch(engine="fake-engine")
    answer = api("POST", "/dashboards", json={"engine": "fake-engine"})
    assert answer.status_code == 429
    assert "3 dashboards" in answer.json()["error"]
    assert len(backend.launched) == 3


def test_an_exit_code_0_is_stopped_any_other_failed_and_a_lost_node_failed_without_one(fake):
    _, backend, api = fake
    ok, crashed, lost = (api.launch(engine="fake-engine") for _ in range(3))
    backend.finish(ok["id"], 0)
    backend.finish(crashed["id"], 1)
    backend.finish(lost["id"], None, "lost")
    assert api.get(ok["id"])["status"] == "stopped"
    assert (api.get(crashed["id"])["status"], api.get(crashed["id"])["exit_code"]) == ("failed", 1)
    assert (api.get(lost["id"])["status"], api.get(lost["id"])["exit_code"]) == ("failed", None)


def test_a_stopped_dashboard_keeps_the_exit_code_its_backend_reports(fake):
    _, backend, api = fake
    worker = api.launch(engine="fake-engine")
    stopped = api("PUT", f"/dashboards/{worker['id']}/stop").json()
    assert (stopped["status"], stopped["exit_code"]) == ("stopped", 143)
    assert backend.stopped == [worker["id"]]


def test_when_a_master_ends_the_project_stops_its_workers(fake):
    _, backend, api = fake
    master = api.launch(engine="fake-engine", master_id=None)
    backend.report_running(master["id"])
    workers = [api.launch(engine="fake-engine", master_id=master["id"]) for _ in range(2)]
    backend.finish(master["id"], 0)
    wait_for(lambda: sorted(backend.stopped) == sorted(w["id"] for w in workers))
    for worker in workers:
        assert api.wait_status(worker["id"], "stopped")["exit_code"] == 143


def test_logs_come_from_the_backend(fake):
    _, _, api = fake
    worker = api.launch(engine="fake-engine")
    assert api.logs(worker["id"]) == f"log of {worker['id']}\n"


def test_a_restart_hands_each_leftover_handle_to_the_backend_that_made_it(
    project_dir, fake_installed
):
    # A server on the fake backend launches a worker, then dies by SIGKILL.
    crashing = textwrap.dedent(
        f"""
        import json, time
        from sense.local import LocalServer
        from sense.local.models import LaunchRequest
        server = LocalServer({str(project_dir)!r}, backend="fake")
        server.attach(set_environ=False)
        worker = server.project.launch(LaunchRequest(engine="fake-engine"))
        print(json.dumps(worker), flush=True)
        time.sleep(60)
        """
    )
    here = os.path.dirname(__file__)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake_installed), here])}
    with subprocess.Popen(
        [sys.executable, "-c", crashing], env=env, stdout=subprocess.PIPE, text=True
    ) as server:
        worker = json.loads(server.stdout.readline())
        server.send_signal(signal.SIGKILL)
    with LocalServer(project_dir) as restarted:  # on the local backend this time
        assert restarted.project.dashboard(worker["id"])["status"] == "failed"
    assert FakeBackend.recovered == [{"backend": "fake", "slot": worker["id"]}]
