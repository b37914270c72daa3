"""The Ray backend across separate hosts: 3 namespaced hosts, one Ray node each (root only),
started with plain ``ray start`` (no custom resource).

The server (here a driver process standing in for it, ``ray_driver.py``)
runs on the first host, the head, the only one that has the project
folder. See ``hosts.py`` for what each host has of its own. The project
(and so its logs) is shared by the tests: each uses dashboard ids of its own,
as one server's would be.
"""

from __future__ import annotations

import ast
import importlib.util
import re

import pytest
from backend_support import (
    MARK,
    make_project,
    run_the_cluster_example,
    sense_run,
    sigkill_of_the_driver_leaves_nothing,
)
from hosts import Hosts, missing_requirement
from needs import require
from ray_driver import Driver
from waiting import wait_for

pytestmark = pytest.mark.timeout(300)

HOSTS = 3


@pytest.fixture(scope="module")
def project_dir(tmp_path_factory):
    return make_project(tmp_path_factory.mktemp("hosts") / "project")


@pytest.fixture(scope="module")
def hosts(project_dir):
    require(importlib.util.find_spec("ray") is not None, "Ray is not installed (sense[ray])")
    problem = missing_requirement()
    require(problem is None, problem or "")
    with Hosts(HOSTS, project_dir, logs=project_dir.parent) as hosts:
        yield hosts


@pytest.fixture
def driver(hosts, project_dir):
    """The server's stand-in, on the head host."""
    with Driver(
        hosts.address, project_dir, prefix=tuple(hosts[0].enter(cwd=project_dir))
    ) as driver:
        yield driver


def test_hosts_only_the_head_has_the_project_folder(hosts, project_dir):
    assert (hosts[0].path(project_dir) / "kept_module.py").is_file()
    assert not any(host.path(project_dir).exists() for host in hosts.hosts[1:])


def test_hosts_dashboards_spread_over_the_hosts_each_in_its_environment_with_the_project(
    hosts, driver, mark
):
    code = "import os, kept_module; print(os.environ['NODE_MARK'], kept_module.WHERE)"
    launched = [driver.launch(i, code=code, env={MARK: mark}) for i in range(1, HOSTS + 1)]
    assert {dashboard["project_ip"] for dashboard in launched} == {h.ip for h in hosts.hosts}
    for dashboard in launched:
        dashboard_id = dashboard["launched"]
        assert driver.event("exit", dashboard_id)["code"] == 0
        # The node's own environment, and the module from the project shipped to it.
        assert driver.logs(dashboard_id) == f"{dashboard['project_ip']} in the project\n"


def test_hosts_a_worker_reaches_another_on_its_project_ip_and_port_across_hosts(
    hosts, driver, mark
):
    listener_code = (
        "import os, socket\n"
        "address = (os.environ['SENSE_PROJECT_IP'], int(os.environ['SENSE_PORT1']))\n"
        "server = socket.create_server(address)\n"
        "print('listening', flush=True)\n"
        "for _ in range(2):\n"
        "    connection, peer = server.accept()\n"
        "    connection.sendall(b'hello from ' + address[0].encode()); connection.close()\n"
    )
    listener = driver.launch(11, code=listener_code, env={MARK: mark})
    wait_for(lambda: "listening" in driver.logs(11), what="the listener")
    client_code = (
        "import socket\n"
        f"address = ({listener['project_ip']!r}, {listener['port']})\n"
        "print(socket.create_connection(address, timeout=10).recv(100).decode())\n"
    )
    clients = [driver.launch(i, code=client_code, env={MARK: mark}) for i in (12, 13)]
    assert any(client["project_ip"] != listener["project_ip"] for client in clients)
    for client in clients:
        assert driver.event("exit", client["launched"])["code"] == 0
        assert driver.logs(client["launched"]) == f"hello from {listener['project_ip']}\n"
    assert driver.event("exit", 11)["code"] == 0


def test_hosts_sigkill_of_the_server_leaves_no_process_on_any_host(hosts, driver, mark):
    node_ips = {host.ip for host in hosts.hosts}
    sigkill_of_the_driver_leaves_nothing(driver, range(21, 21 + HOSTS), mark, node_ips)


def test_hosts_the_readme_s_cluster_example_runs_unmodified_across_the_hosts(hosts, project_dir):
    # `sense run` on the head host, the only one with the project folder.
    head = tuple(hosts[0].enter(cwd=project_dir))
    # The earlier tests' driver left logs under ids that this run's new store gives its
    # workers again: the console must still show every line of the workers' own.
    output = run_the_cluster_example(hosts.address, project_dir, prefix=head)
    hellos = set(re.findall(r"says hello from (\S+)", output))
    assert hellos <= {host.ip for host in hosts.hosts}


def test_hosts_the_dask_example_runs_a_dask_worker_on_each_host(hosts, project_dir):
    head = tuple(hosts[0].enter(cwd=project_dir))
    address = ("--backend", "ray", "--ray-address", hosts.address)
    output = sense_run("dask_cluster.py", project_dir, *address, prefix=head)
    listening = re.search(r"dask workers listen on (\[.*\])", output)
    assert listening, output
    assert set(ast.literal_eval(listening.group(1))) == {host.ip for host in hosts.hosts}
    assert "the mean of 0 .. 9,999,999: 4999999.5" in output
    assert "after close, worker dashboards: []" in output
