"""What a dashboard on the Ray backend does beyond the shared contract suite
(``tests/local/test_backend_contract.py``, which runs on Ray too): placement
over the nodes, Ctrl-C, the node's own environment, its port reached by another
dashboard, the project's modules and scripts on any node, what is refused, and
the quota of a cluster without custom resources.

One backend serves the whole module: a Ray backend takes seconds to start (a
driver and an agent on each node). Every test ends what it started; its
``mark`` fixture fails it otherwise. The tests that need a backend of their own
are in ``test_ray.py``.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import signal

import pytest
from backend_support import (
    NODES,
    Launcher,
    log_of,
    make_backend,
    make_project,
    subscribed,
    wait_for_log,
)
from ray_cluster import NODE_SENSE_VARIABLE, node_ip

from sense.errors import SenseConfigError

pytestmark = pytest.mark.timeout(120)

NODE_IPS = {node_ip(i) for i in range(NODES)}
#: A script kept in the served project: Ray ships the project to the nodes as the backend starts.
SCRIPT = "import os, sys\nprint(os.environ['NODE_MARK'], sys.argv[1:])\n"


@pytest.fixture(scope="module")
def served(ray_cluster, tmp_path_factory):
    """A Ray backend serving a project, and a recorder of what it reports."""
    project_dir = make_project(tmp_path_factory.mktemp("ray") / "project")
    (project_dir / "job.py").write_text(SCRIPT)
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


def test_ray_the_server_s_node_ip_is_known_and_a_second_backend_in_one_process_is_refused(
    backend, ray_cluster
):
    assert backend.server_ip == node_ip(0)  # the server's node: the head here
    with pytest.raises(SenseConfigError, match="already connected to Ray"):
        make_backend("ray", backend.project_dir, ray_address=ray_cluster.address)


def test_ray_dashboards_spread_over_the_nodes_run_there_and_import_the_project(
    backend, launch, recorder
):
    code = "import os, kept_module; print(os.environ['NODE_MARK'], kept_module.WHERE)"
    launched = [launch(code) for _ in range(NODES)]
    assert {placement.project_ip for _, placement in launched} == NODE_IPS
    for dashboard_id, placement in launched:
        assert recorder.exit_of(dashboard_id)[0] == 0
        # Started by the agent of the node whose address it was given, where the
        # project's module imports from Ray's copy (off the server's node).
        assert log_of(backend, dashboard_id) == f"{placement.project_ip} in the project\n"


def test_ray_dashboards_share_the_nodes_evenly_whether_they_run_on_or_end_at_once(
    backend, launch, recorder
):
    # Each dashboard is a placement group of its own, which Ray's SPREAD does not spread:
    # under load Ray put two of three on one node. The backend steers each to the node
    # that runs the fewest.
    quick = [launch("pass") for _ in range(NODES)]
    for dashboard_id, _ in quick:
        assert recorder.exit_of(dashboard_id)[0] == 0
    assert {placement.project_ip for _, placement in quick} == NODE_IPS
    running = [launch("import time; time.sleep(60)") for _ in range(2 * NODES)]
    on_nodes = collections.Counter(placement.project_ip for _, placement in running)
    for dashboard_id, _ in running:
        backend.stop(dashboard_id)
    for dashboard_id, _ in running:
        recorder.exit_of(dashboard_id)
    assert on_nodes == dict.fromkeys(NODE_IPS, 2)


def test_ray_a_script_in_the_project_runs_on_every_node_with_its_arguments(
    backend, launch, recorder
):
    script = os.path.join(backend.project_dir, "job.py")
    launched = [launch(script=script, argv=["--rank", str(i)]) for i in range(NODES)]
    assert {placement.project_ip for _, placement in launched} == NODE_IPS
    for rank, (dashboard_id, placement) in enumerate(launched):
        assert recorder.exit_of(dashboard_id)[0] == 0
        expected = f"{placement.project_ip} ['--rank', '{rank}']\n"
        assert log_of(backend, dashboard_id) == expected


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
