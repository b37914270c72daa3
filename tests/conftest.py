"""Fixtures shared by the client's tests: a real HTTP server and a dashboard's environment."""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path

import pytest
from api_data import MASTER_ID, OWNER, PROJECT, TOKEN, challenge_answer
from needs import require
from pytest_httpserver import HTTPServer
from werkzeug import Response

from sense import rest, workers

#: The tests that may use the session's Ray cluster (``ray_cluster``): those of the modules
#: named ``test_ray*.py`` (but for :data:`ONE_WORKER_MODULES`), and the contract suite's on its
#: ``ray`` parameter. One worker runs them all: one cluster (the fixture checks it).
RAY_MODULE = re.compile(r"(^|/)test_ray[^/]*\.py$")
RAY_PARAMETER = re.compile(r"\[ray[\]-]")
#: Modules whose module-scoped fixture is expensive (Ray hosts in namespaces, a browser): one
#: worker runs each, so that it is made once.
ONE_WORKER_MODULES = ("tests/backends/test_ray_hosts.py", "tests/local/test_web.py")


def pytest_xdist_make_scheduler(config, log):
    """Tests spread over the workers one by one, but for those that share an expensive
    set-up (:func:`scope`)."""
    from xdist.scheduler import LoadScopeScheduling

    class SharedSetUps(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scope(nodeid)

    return SharedSetUps(config, log)


def scope(nodeid: str) -> str:
    """What the test of ``nodeid`` runs with on one worker: "ray" (the session's Ray
    cluster), its module (an expensive module fixture), or nothing (itself)."""
    module = nodeid.split("::", 1)[0]
    if module in ONE_WORKER_MODULES:
        return module
    if RAY_MODULE.search(module) or RAY_PARAMETER.search(nodeid):
        return "ray"
    return nodeid


class LocalApi(HTTPServer):
    """A stand-in for the local server on loopback: it proves it knows the token, as the
    local server does before a client sends it (``sense.proof``), and logs every other
    request, so that tests count the requests of the API alone."""

    def application(self, request):
        answer = challenge_answer(request.full_path)
        if answer is None:
            return super().application(request)
        return Response(answer, content_type="application/json")


@pytest.fixture(scope="session")
def make_httpserver():
    # Threaded, unlike pytest-httpserver's default, so concurrent launches really overlap.
    server = LocalApi(host="127.0.0.1", port=0, threaded=True)
    server.start()
    yield server
    server.clear()
    server.stop()


@pytest.fixture(scope="session")
def ray_cluster(request):
    """A real Ray cluster of 3 nodes on 127.0.0.2-4 (see ``ray_cluster.py``), as ``ray start``
    makes them (2 CPUs each, no custom resource), one for the session: Ray takes seconds to
    start on a small machine."""
    # Two workers would each start one, on the same addresses. (The test that asks first.)
    first = request._pyfuncitem.nodeid
    assert scope(first) == "ray", f"{first} uses the Ray cluster: name its module test_ray*.py"
    require(importlib.util.find_spec("ray") is not None, "Ray is not installed (sense[ray])")
    from ray_cluster import loopback_cluster

    with loopback_cluster(3) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def ray_cluster_with_slots():
    """A Ray cluster whose operator caps dashboards per node: a head on 127.0.0.6 with 2
    ``sense_slot`` (and 2 CPUs), and a node on 127.0.0.7 without any (it runs none)."""
    require(importlib.util.find_spec("ray") is not None, "Ray is not installed (sense[ray])")
    from ray_cluster import add_node, loopback_cluster, node_ip

    with loopback_cluster(1, slots=2, first=4) as cluster:
        add_node(cluster, node_ip(5))
        cluster.wait_for_nodes()
        yield cluster


@pytest.fixture
def clean_env(monkeypatch):
    """No SENSE_* variable at all: a process that is not on a dashboard."""
    for name in list(os.environ):
        if name.startswith("SENSE_"):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.fixture
def master_env(clean_env, httpserver):
    """This process is master dashboard 3 of a project served by ``httpserver``."""
    clean_env.setenv("SENSE_API_URL", httpserver.url_for("/"))
    clean_env.setenv("SENSE_OWNER_ID", OWNER)
    clean_env.setenv("SENSE_PROJECT_ID", PROJECT)
    clean_env.setenv("SENSE_DASHBOARD_ID", str(MASTER_ID))
    clean_env.setenv("SENSE_MASTER_ID", "")
    clean_env.setenv("SENSE_API_TOKEN", TOKEN)
    return clean_env


@pytest.fixture
def worker_env(master_env):
    """This process is worker 8 of master 3."""
    master_env.setenv("SENSE_DASHBOARD_ID", "8")
    master_env.setenv("SENSE_MASTER_ID", str(MASTER_ID))
    return master_env


@pytest.fixture
def fast_http(monkeypatch):
    """Short timeouts, back-off and clean-up patience: failure tests take a fraction of a second."""
    monkeypatch.setattr(rest, "TIMEOUT", (1.0, 0.5))
    monkeypatch.setattr(rest, "BACKOFF_FACTOR", 0.01)
    monkeypatch.setattr(workers, "UNDO_SECONDS", 0.3)


@pytest.fixture
def recording_python(tmp_path, monkeypatch):
    """Stands in for the interpreter: a real executable that records its argv, then fails."""
    record = tmp_path / "argv.json"
    fake = tmp_path / "python"
    fake.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        f"open({str(record)!r}, 'w').write(json.dumps(sys.argv[1:]))\nsys.exit(3)\n"
    )
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake))
    return record


@pytest.fixture(autouse=True)
def _processes_unmeasured(request, monkeypatch):
    """The processes a test marked ``processes_unmeasured`` starts run without coverage
    (see ``coverage_files.unmeasured``); the test's own process is still measured."""
    if request.node.get_closest_marker("processes_unmeasured") is not None:
        from coverage_files import SUBPROCESS_VARIABLE

        monkeypatch.delenv(SUBPROCESS_VARIABLE, raising=False)


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtestloop(session):
    # Inside pytest-cov's own wrapper (trylast), so this runs after the tests and before
    # its combine step: see coverage_files.py.
    result = yield
    import coverage

    measuring = coverage.Coverage.current()
    if measuring is not None:
        from coverage_files import discard_unreadable

        discard_unreadable(Path(measuring.config.data_file).absolute())
    return result
