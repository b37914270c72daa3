"""A real Ray cluster on this machine: nodes on distinct loopback addresses.

Every address of 127.0.0.0/8 reaches this machine on Linux, so each node
(head 127.0.0.2, then .3, .4, ...) has an address of its own, as separate
hosts would. Each node's environment has ``NODE_MARK`` set to its address,
so a dashboard can tell which node's agent started it, and a ``SENSE_*``
variable, as a node that itself runs on a dashboard would: neither the
server's environment nor that variable may reach a dashboard.

Nodes have no custom resource, as ``ray start`` makes them, unless a test
asks for ``slots`` of ``sense_slot`` (an operator's per-node cap). Ray is
slow to start on a small machine (seconds per node): tests share one
cluster for the session, its files in a temporary directory of its own.
It ends with :meth:`Cluster.shutdown`, which ends its processes by pid
(never ``ray stop``, which ends every Ray process on the machine by name).

Example
-------
>>> with loopback_cluster(3) as cluster:           # doctest: +SKIP
...     backend = RayBackend(project_dir, state_dir, grace=1.0, ray_address=cluster.address)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from unittest import mock

from coverage_files import SUBPROCESS_VARIABLE

CPUS_PER_NODE = 2
#: Ray's least object store (75 MiB) and a little: dashboards pass no objects through it.
OBJECT_STORE_BYTES = 80 * 1024 * 1024
#: What a node that itself runs on a dashboard has, and a dashboard must not inherit.
NODE_SENSE_VARIABLE = "SENSE_MASTER_ID"


def node_ip(index: int) -> str:
    """The address of node ``index``: 0 is the head, 127.0.0.2."""
    return f"127.0.0.{2 + index}"


@contextlib.contextmanager
def _node_environment(ip: str, temp_root: str) -> Iterator[None]:
    """The environment a node's processes start with: this one, its mark, usage stats off,
    no coverage, and Ray's files under ``temp_root`` (``RAY_TMPDIR``: Ray writes the address of the
    cluster "current on this machine" there, which must not be the machine's /tmp/ray)."""
    marks = {
        "NODE_MARK": ip,
        NODE_SENSE_VARIABLE: "999",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_TMPDIR": temp_root,
    }
    with mock.patch.dict(os.environ, marks):
        # Not measured by coverage: the nodes run sense from the copy Ray ships to them
        # (``py_modules``), which the measured source is not, so measuring Ray's processes
        # found nothing and cost a third of the Ray tests' CPU.
        os.environ.pop(SUBPROCESS_VARIABLE, None)
        yield


def _resources(slots: int) -> dict[str, int]:
    """A node's custom resources: ``slots`` of ``sense_slot``, or none at all."""
    return {"sense_slot": slots} if slots else {}


def add_node(cluster, ip: str, *, slots: int = 0, cpus: int = CPUS_PER_NODE):
    """Start one more node of ``cluster`` on address ``ip``; return it (for ``remove_node``)."""
    temp_root = os.path.dirname(cluster.head_node.get_temp_dir_path())
    with _node_environment(ip, temp_root):
        return cluster.add_node(
            node_ip_address=ip,
            num_cpus=cpus,
            resources=_resources(slots),
            object_store_memory=OBJECT_STORE_BYTES,
        )


@contextlib.contextmanager
def loopback_cluster(nodes: int = 3, *, cpus: int = CPUS_PER_NODE, slots: int = 0, first: int = 0):
    """A Ray cluster of ``nodes`` nodes on ``node_ip(first)`` onwards (127.0.0.2 by default),
    each with ``cpus`` CPUs and ``slots`` of the resource ``sense_slot`` (0: none)."""
    from ray.cluster_utils import Cluster

    # Ray's sessions (sockets, logs) go here, not to the machine's shared /tmp/ray;
    # the other nodes take the head's.
    temp_root = tempfile.mkdtemp(prefix="sense-ray-")
    temp_dir = os.path.join(temp_root, "ray")
    os.mkdir(temp_dir)
    try:
        with _node_environment(node_ip(first), temp_root):
            cluster = Cluster(
                initialize_head=True,
                shutdown_at_exit=True,
                head_node_args={
                    "node_ip_address": node_ip(first),
                    "num_cpus": cpus,
                    "resources": _resources(slots),
                    "object_store_memory": OBJECT_STORE_BYTES,
                    "include_dashboard": False,
                    "temp_dir": temp_dir,
                },
            )
        try:
            for index in range(first + 1, first + nodes):
                add_node(cluster, node_ip(index), cpus=cpus, slots=slots)
            cluster.wait_for_nodes()
            yield cluster
        finally:
            cluster.shutdown()
    finally:
        shutil.rmtree(temp_root, ignore_errors=True)
