"""The Ray backend's node agent on its own, in this process: it needs no Ray to run.

On a cluster it is an actor (see test_ray.py); here its dashboards are real
processes all the same.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from unittest import mock

import pytest
from backend_support import MARK
from waiting import wait_for

from sense.local.backends.ray_agent import NodeAgent, node_environment

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def agent(tmp_path, mark):
    project = tmp_path / "project"
    project.mkdir()
    agent = NodeAgent(str(project), grace=1.0, base_env={**os.environ, "SENSE_MASTER_ID": "3"})
    yield agent
    agent.shutdown()


def events_until_exit(agent: NodeAgent, *dashboard_ids: int) -> list[tuple]:
    """The agent's events, collected until every dashboard of ``dashboard_ids`` has ended."""
    seen: list[tuple] = []
    while {event[1] for event in seen if event[0] == "exit"} != set(dashboard_ids):
        news = agent.events(timeout=30)
        assert news, f"no news of dashboards {dashboard_ids} within 30 s: {seen}"
        heard(agent, news)
        seen += news
    return seen


def until_running(agent: NodeAgent, *dashboard_ids: int) -> None:
    """Until every dashboard of ``dashboard_ids`` has reported running, heard as the server
    hears it (its job starts then)."""
    running: set[int] = set()
    while running != set(dashboard_ids):
        news = agent.events(timeout=30)
        assert news, f"no news of dashboards {dashboard_ids} within 30 s"
        heard(agent, news)
        running |= {event[1] for event in news if event[0] == "running"}


def heard(agent: NodeAgent, news: list[tuple]) -> None:
    """Tell the agent that its news of running dashboards was heard, as the server does."""
    for event in news:
        if event[0] == "running":
            agent.heard(event[1])


def test_the_agent_reports_running_then_the_exit_and_serves_the_output(agent, mark):
    agent.launch(1, {"code": "print('from the node')"}, {MARK: mark})
    assert events_until_exit(agent, 1) == [("running", 1), ("exit", 1, 0, "exited")]
    assert agent.log_size(1) == len("from the node\n")
    assert agent.read_log(1) == b"from the node\n"
    assert agent.read_log(1, offset=5, limit=3) == b"the"
    assert agent.read_log(1, offset=-5) == b"node\n"


def test_a_job_starts_only_once_the_server_has_heard_that_it_runs(agent, mark):
    # On Ray the news goes to the server by a poll: a job that started at once could print,
    # or ask for its own status, while the server still said "starting".
    agent.launch(1, {"code": "print('from the node')"}, {MARK: mark})
    assert agent.events(timeout=30) == [("running", 1)]
    assert agent.events(timeout=2) == []  # held: no output, no end
    assert agent.read_log(1) == b""
    agent.heard(1)
    assert events_until_exit(agent, 1) == [("exit", 1, 0, "exited")]
    assert agent.read_log(1) == b"from the node\n"


def test_a_dashboard_has_the_node_s_environment_without_sense_then_its_own(agent, mark):
    code = "import json, os; print(json.dumps(dict(os.environ)))"
    job = {"code": code, "env": {"ROLE": "worker", "HOME": "/elsewhere"}}
    agent.launch(1, job, {MARK: mark, "ROLE": "the context's"})
    events_until_exit(agent, 1)
    env = json.loads(agent.read_log(1))
    assert env["ROLE"] == "worker"
    assert env["HOME"] == "/elsewhere"  # the caller's, over the node's
    assert env["PATH"] == os.environ["PATH"]  # the node's
    assert "SENSE_MASTER_ID" not in env
    assert env["PYTHONUNBUFFERED"] == "1"


def test_stop_all_ends_every_dashboard_and_says_it_was_stopped(agent, mark):
    for dashboard_id in (1, 2):
        agent.launch(dashboard_id, {"code": "import time; time.sleep(60)"}, {MARK: mark})
    until_running(agent, 1, 2)  # once running, SIGTERM is the job's SystemExit(143)
    agent.stop_all()
    events = events_until_exit(agent, 1, 2)
    exits = sorted(event for event in events if event[0] == "exit")
    assert exits == [("exit", i, 128 + signal.SIGTERM, "stopped") for i in (1, 2)]


def test_forget_removes_the_output_kept_on_a_node_other_than_the_server_s(mark):
    agent = NodeAgent(None, grace=1.0)
    try:
        agent.launch(1, {"code": "print('kept')"}, {MARK: mark})
        events_until_exit(agent, 1)
        assert agent.read_log(1) == b"kept\n"
        agent.forget(1)
        assert agent.read_log(1) == b""
        assert agent.log_size(1) == 0
    finally:
        agent.shutdown()


def test_the_agent_s_own_state_directory_goes_with_it_and_the_project_s_stays(tmp_path):
    own = NodeAgent(None, grace=1.0)
    own.shutdown()
    assert not own.state.project_dir.exists()
    project = NodeAgent(str(tmp_path), grace=1.0)
    project.shutdown()
    assert (tmp_path / ".sense" / "logs").is_dir()


def test_an_agent_removes_the_state_directories_of_agents_that_died_without_their_shutdown():
    dead = subprocess.Popen([shutil.which("true")])
    dead.wait()
    left = Path(tempfile.mkdtemp(prefix=f"sense-agent-{dead.pid}-"))
    alive = Path(tempfile.mkdtemp(prefix=f"sense-agent-{os.getpid()}-"))
    try:
        NodeAgent(None, grace=1.0).shutdown()
        assert not left.exists()
        assert alive.is_dir()
    finally:
        shutil.rmtree(left, ignore_errors=True)
        shutil.rmtree(alive, ignore_errors=True)


def test_the_node_s_environment_is_the_one_its_ray_node_started_with():
    raylet = subprocess.Popen([shutil.which("sleep"), "60"], env={"STARTED_WITH": "this"})
    environ = Path(f"/proc/{raylet.pid}/environ")
    # Popen returns as the exec begins (vfork): the new environment shows a moment later.
    wait_for(environ.read_bytes, what="the process to start")
    try:
        with mock.patch.dict(os.environ, {"RAY_RAYLET_PID": str(raylet.pid)}):
            assert node_environment() == {"STARTED_WITH": "this"}
    finally:
        raylet.kill()
        raylet.wait()
    # Not under Ray: this process's own.
    with mock.patch.dict(os.environ, {"RAY_RAYLET_PID": ""}):
        assert node_environment() == dict(os.environ)


def test_interrupt_and_stop_end_a_dashboard_each_their_way(agent, mark):
    code = "import time; print('up', flush=True); time.sleep(60)"
    for dashboard_id in (1, 2):
        agent.launch(dashboard_id, {"code": code}, {MARK: mark})
    until_running(agent, 1, 2)
    # Once its job runs (before, Ctrl-C would interrupt the engine's own start).
    wait_for(lambda: all(agent.read_log(i) == b"up\n" for i in (1, 2)), 30, what="the jobs")
    agent.interrupt(1)
    agent.stop(2)
    exits = sorted(event for event in events_until_exit(agent, 1, 2) if event[0] == "exit")
    assert exits == [
        # As `python` ends of an uncaught KeyboardInterrupt: killed by SIGINT.
        ("exit", 1, -signal.SIGINT, "exited"),
        ("exit", 2, 128 + signal.SIGTERM, "stopped"),
    ]


def test_no_news_is_an_empty_list_after_the_timeout(agent):
    assert agent.events(timeout=0.01) == []


def test_the_free_port_can_be_bound_on_every_address(agent):
    with socket.create_server(("", agent.free_port())):
        pass
    assert agent.pid() == os.getpid()
