"""What a dashboard on the Ray backend does beyond the shared contract suite
(``tests/local/test_backend_contract.py``, which runs on Ray too): Ctrl-C, the
node's own environment, its port reached by another dashboard, a module of the
project imported on any node, what is refused, and the quota of a cluster
without custom resources.

One backend serves the whole module: a Ray backend takes seconds to start (a
driver and an agent on each node). Every test ends what it started; its
``mark`` fixture fails it otherwise.
"""

from __future__ import annotations

import itertools
import json
import signal

import pytest
from backend_support import (
    Launcher,
    log_of,
    make_backend,
    make_project,
    subscribed,
    wait_for_log,
)
from ray_cluster import NODE_SENSE_VARIABLE

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def served(ray_cluster, tmp_path_factory):
    """A Ray backend serving a project, and a recorder of what it reports."""
    project_dir = make_project(tmp_path_factory.mktemp("ray") / "project")
    backend = make_backend("ray", project_dir, ray_address=ray_cluster.address)
    yield backend, subscribed(backend), itertools.count(1)
    backend.shutdown()


@pytest.fixture
def backend(served):
    return served[0]


@pytest.fixture
def recorder(served):
    return served[1]


@pytest.fixture
def launch(served, mark):
    return Launcher(served[0], mark, served[2])


def test_ray_interrupt_is_ctrl_c(backend, launch, recorder):
    dashboard_id, _ = launch("import time\nprint('up', flush=True)\ntime.sleep(60)\n")
    wait_for_log(backend, dashboard_id, "up\n")
    backend.interrupt(dashboard_id)
    # As `python` ends of an uncaught KeyboardInterrupt: killed by SIGINT, as -9 is by SIGKILL.
    assert recorder.exit_of(dashboard_id)[0] == -signal.SIGINT
    assert "KeyboardInterrupt" in log_of(backend, dashboard_id)


def test_ray_environment_is_the_node_s_then_the_context_then_the_caller_s(
    backend, launch, recorder
):
    code = "import json, os; print(json.dumps(dict(os.environ)))"
    dashboard_id, placement = launch(code, env={"ROLE": "worker", "NODE_MARK": "the caller's"})
    recorder.exit_of(dashboard_id)
    env = json.loads(log_of(backend, dashboard_id))
    assert env["SENSE_PROJECT_IP"] == placement.project_ip
    assert env["SENSE_PORT1"] == str(next(iter(placement.ports)))
    assert env["ROLE"] == "worker"
    assert env["NODE_MARK"] == "the caller's"
    # The node's own SENSE_* variables (it may run on a dashboard itself) stay out.
    assert NODE_SENSE_VARIABLE not in env
    assert env["PYTHONUNBUFFERED"] == "1"


def test_ray_a_dashboard_binds_its_port_on_its_project_ip_and_another_reaches_it(
    backend, launch, recorder
):
    server_code = (
        "import os, socket\n"
        "address = (os.environ['SENSE_PROJECT_IP'], int(os.environ['SENSE_PORT1']))\n"
        "s = socket.create_server(address)\n"
        "print('listening', flush=True)\n"
        "c, _ = s.accept(); c.sendall(b'hello over the project network'); c.close()\n"
    )
    listener_id, placement = launch(server_code)
    wait_for_log(backend, listener_id, "listening")
    (port,) = placement.ports
    client_code = (
        "import socket\n"
        f"print(socket.create_connection(({placement.project_ip!r}, {port})).recv(100).decode())\n"
    )
    client_id, _ = launch(client_code)
    assert recorder.exit_of(client_id)[0] == 0
    assert log_of(backend, client_id) == "hello over the project network\n"
    assert recorder.exit_of(listener_id)[0] == 0


def test_ray_a_module_kept_in_the_project_imports(backend, launch, recorder):
    dashboard_id, _ = launch("import kept_module; print(kept_module.WHERE)")
    assert recorder.exit_of(dashboard_id)[0] == 0
    assert log_of(backend, dashboard_id) == "in the project\n"


def test_ray_refuses_what_it_cannot_run_before_any_side_effect(backend, recorder):
    assert "Python engines only" in backend.refusal("sense-r-engine", "small")
    assert "size should be one of" in backend.refusal("sense-ipython-engine", "huge")
    assert "the most a node has is 2" in backend.refusal("sense-ipython-engine", 4)
    assert backend.refusal("sense-ipython-engine", "medium") is None


def test_ray_a_size_no_node_can_hold_is_refused_before_any_side_effect(backend, launch, recorder):
    reason = backend.refusal("sense-ipython-engine", 16)
    assert reason == (
        "no node of the Ray cluster has 16 CPUs for a dashboard of size 16 "
        "(the most a node has is 2)"
    )
    before = (list(recorder.running), dict(recorder.exits))
    with pytest.raises(ValueError, match="no node of the Ray cluster has 16 CPUs"):
        launch("print('too big')", size=16)
    assert (recorder.running, recorder.exits) == before


def test_ray_on_a_cluster_without_custom_resources_the_quota_is_what_its_cpus_hold(backend):
    assert not backend.slotted
    # 3 nodes of 2 CPUs: 12 small dashboards (0.5 CPU each).
    assert backend.capacity() == 12
    backend.max_workers = 3
    try:
        assert backend.capacity() == 3
    finally:
        backend.max_workers = None
