"""Fixtures of the backends' tests: a real Ray cluster, a project, a mark on processes.

The cluster has 3 nodes on 127.0.0.2-4 (see ``ray_cluster.py``), started
once for the session: Ray takes seconds to start on a small machine. The
helpers the tests share are in ``backend_support.py``.
"""

from __future__ import annotations

import importlib.util
import uuid

import psutil
import pytest
from backend_support import NODES, make_project, processes_marked
from needs import require
from ray_cluster import loopback_cluster


@pytest.fixture(scope="session")
def ray_cluster():
    require(importlib.util.find_spec("ray") is not None, "Ray is not installed (sense[ray])")
    with loopback_cluster(NODES) as cluster:
        yield cluster


@pytest.fixture
def project_dir(tmp_path):
    return make_project(tmp_path / "project")


@pytest.fixture
def mark():
    """This test's mark; at its end no process carrying it may be left."""
    mark = uuid.uuid4().hex
    yield mark
    _, alive = psutil.wait_procs(processes_marked(mark), timeout=10)
    for process in alive:
        process.kill()
    assert not alive, f"dashboard processes left running: {[p.pid for p in alive]}"
