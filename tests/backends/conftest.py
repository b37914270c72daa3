"""Fixtures of the backends' tests: a real Ray cluster, a project, a mark on processes.

The Ray cluster (fixture ``ray_cluster``) is the session's, in the
top-level ``conftest.py``. The helpers the tests share are in ``backend_support.py``.
"""

from __future__ import annotations

import uuid

import pytest
from backend_support import make_project, processes_marked
from waiting import strays


@pytest.fixture
def project_dir(tmp_path):
    return make_project(tmp_path / "project")


@pytest.fixture
def mark():
    """This test's mark; at its end no process carrying it may be left."""
    mark = uuid.uuid4().hex
    yield mark
    alive = strays(processes_marked(mark), timeout=30)
    assert not alive, f"dashboard processes left running: {[p.pid for p in alive]}"
