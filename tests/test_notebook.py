"""The notebook experience, in a real IPython kernel driven through jupyter_client."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import nbformat
import psutil
import pytest
from api_data import MASTER_ID, OWNER, PROJECT, PROJECT_PATH, TOKEN, dashboard_json
from frameworks_support import ipyparallel_profile
from kernels import PROJECT_ROOT, NotebookKernel, kernel_manager, throwaway_environment
from nbclient import NotebookClient
from waiting import left_running
from werkzeug import Response
from wheels import build_wheel

pytestmark = pytest.mark.timeout(300)

EXAMPLES = PROJECT_ROOT / "examples"
OFFLINE_PIP = {"PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


@pytest.fixture
def clean_kernel_env(monkeypatch):
    """No pip configuration of this machine's, and no dashboard context."""
    for name in list(os.environ):
        if name.startswith(("PIP_", "SENSE_")):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.fixture
def kernel(tmp_path, httpserver, clean_kernel_env):
    """A kernel in a throwaway environment: a master dashboard of the project at ``httpserver``."""
    python = throwaway_environment(tmp_path / "env")
    dashboard = {
        "SENSE_API_URL": httpserver.url_for("/"),
        "SENSE_OWNER_ID": OWNER,
        "SENSE_PROJECT_ID": PROJECT,
        "SENSE_DASHBOARD_ID": str(MASTER_ID),
        "SENSE_MASTER_ID": "",
        "SENSE_API_TOKEN": TOKEN,
    }
    started = NotebookKernel(python, tmp_path / "kernels", {**OFFLINE_PIP, **dashboard})
    yield started
    started.shutdown()


def serve_package_index(httpserver, wheel, delay):
    """A package index (PEP 503) offering ``wheel``, whose download takes ``delay`` seconds."""
    project = wheel.name.split("-")[0].replace("_", "-")
    httpserver.expect_request(f"/simple/{project}/").respond_with_data(
        f'<html><body><a href="/files/{wheel.name}">{wheel.name}</a></body></html>',
        content_type="text/html",
    )

    def slow_download(request):
        time.sleep(delay)
        return Response(wheel.read_bytes(), content_type="application/octet-stream")

    httpserver.expect_request(f"/files/{wheel.name}").respond_with_handler(slow_download)
    return httpserver.url_for("/simple/")


def test_pip_output_reaches_the_cell_while_pip_runs_and_the_package_imports_next(
    kernel, httpserver, tmp_path
):
    wheel = build_wheel(tmp_path, "sensedemo_stream", source="ANSWER = 42\n")
    index = serve_package_index(httpserver, wheel, delay=2.0)

    cell = kernel.run(
        f"import sense\nsense.install('sensedemo-stream', arguments={{'index-url': {index!r}}})"
    )

    assert cell.error is None, cell.stream("stderr")
    lines = [(at, m["content"]["text"]) for at, m in cell.outputs if m["msg_type"] == "stream"]
    collecting = next(at for at, text in lines if "Collecting sensedemo-stream" in text)
    installed = next(
        at for at, text in lines if "Successfully installed sensedemo-stream-1.0" in text
    )
    # The first lines were in the cell while the download was still being held back.
    assert installed - collecting > 1.0

    next_cell = kernel.run("import sensedemo_stream\nprint(sensedemo_stream.ANSWER)")
    assert next_cell.error is None
    assert next_cell.stream("stdout") == "42\n"


def test_a_failing_install_shows_pips_error_and_raises_in_the_cell(kernel):
    cell = kernel.run("import sense\nsense.install('sense-no-such-package-77', flags=['no-index'])")
    assert cell.error == "InstallError"
    assert "No matching distribution found for sense-no-such-package-77" in cell.stream("stderr")


def test_dashboards_render_as_a_table_and_stay_plain_lists_of_dicts(kernel, httpserver):
    httpserver.expect_request(f"{PROJECT_PATH}/dashboards").respond_with_json(
        [dashboard_json(MASTER_ID, master_id=None), dashboard_json(8)]
    )
    kernel.run("import sense\nworkers = sense.getWorkers()")

    (result,) = kernel.run("workers").of_type("execute_result")
    table = result["data"]["text/html"]
    assert table.startswith("<table>")
    for column in ("id", "status", "size", "project_ip", "started_at"):
        assert f"<th>{column}</th>" in table
    assert "<td>127.0.1.8</td>" in table and "<td>2026-11-25T19:00:01Z</td>" in table
    assert result["data"]["text/plain"].startswith("[{'id': 3,")

    (single,) = kernel.run("workers[1]").of_type("execute_result")
    assert "<td>8</td>" in single["data"]["text/html"]

    types = kernel.run("print(type(workers).__name__, {type(w).__name__ for w in workers})")
    assert types.stream("stdout") == "list {'dict'}\n"

    (plain,) = kernel.run("[1, 2, {'a': 1}]").of_type("execute_result")
    assert "text/html" not in plain["data"]


def test_await_workers_shows_progress_in_the_cell(kernel, httpserver):
    polls = iter([{8: "starting", 9: "starting"}, {8: "running", 9: "starting"}])

    def statuses(request):
        current = next(polls, {8: "running", 9: "running"})
        body = [dashboard_json(MASTER_ID, master_id=None)]
        body += [dashboard_json(i, status=s) for i, s in current.items()]
        return Response(json.dumps(body), content_type="application/json")

    httpserver.expect_request(f"{PROJECT_PATH}/dashboards").respond_with_handler(statuses)
    cell = kernel.run("import sense\nresult = sense.awaitWorkers([8, 9])")
    assert cell.error is None
    shown = cell.of_type("display_data")
    updates = cell.of_type("update_display_data")
    assert shown[0]["data"]["text/plain"].startswith("awaiting workers: 0 of 2 running")
    assert updates[-1]["data"]["text/plain"].startswith("awaiting workers: 2 of 2 running")
    assert {u["transient"]["display_id"] for u in updates} == {shown[0]["transient"]["display_id"]}


# --- with the local server -------------------------------------------------------------


@pytest.fixture
def local_kernel(tmp_path, clean_kernel_env):
    """A kernel with no dashboard context, whose working directory is a new project."""
    project = tmp_path / "project"
    project.mkdir()
    clean_kernel_env.chdir(project)
    started = NotebookKernel(Path(sys.executable), tmp_path / "kernels", {})
    yield started
    started.shutdown()


def descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def test_local_start_makes_the_kernel_a_master_that_runs_a_cluster_from_its_cells(local_kernel):
    started = local_kernel.run("import sense, sense.local\nserver = sense.local.start()")
    assert started.error is None, started.stream("stderr")
    launched = local_kernel.run(
        "workers = sense.launchWorkers(2, startupCode='import time; time.sleep(600)')\n"
        "print(sense.awaitWorkers(workers)['failures'])"
    )
    assert launched.error is None, launched.stream("stderr")
    assert launched.stream("stdout") == "[]\n"

    def answer(code: str):
        return json.loads(
            local_kernel.run(f"import json\nprint(json.dumps({code}))").stream("stdout")
        )

    master = answer("sense.getMaster()['id']")
    worker_ids = answer("[w['id'] for w in workers]")
    assert answer("sorted(w['id'] for w in sense.getWorkers())") == sorted([master, *worker_ids])
    assert answer("[w['id'] for w in sense.list_workers()]")[0] == master

    stopped = local_kernel.run("sense.stopWorkers()\nprint([w['id'] for w in sense.getWorkers()])")
    assert stopped.stream("stdout").strip() == f"[{master}]"


def test_shutting_the_kernel_down_ends_every_worker_it_launched(local_kernel):
    local_kernel.run("import sense, sense.local\nserver = sense.local.start()")
    cell = local_kernel.run(
        "workers = sense.launchWorkers(3, startupCode='import time; time.sleep(600)')\n"
        "print(sense.awaitWorkers(workers)['failures'])"
    )
    assert cell.stream("stdout") == "[]\n", cell.stream("stderr")
    processes = descendants(local_kernel.pid)
    assert len(processes) >= 3

    local_kernel.shutdown()

    alive = left_running(processes, timeout=10)
    assert alive == []


def test_the_cluster_notebook_runs_from_top_to_bottom(tmp_path, clean_kernel_env):
    project = tmp_path / "project"
    project.mkdir()
    notebook = nbformat.read(EXAMPLES / "cluster.ipynb", as_version=4)
    manager = kernel_manager(Path(sys.executable), tmp_path / "kernels")
    client = NotebookClient(
        notebook,
        km=manager,
        timeout=120,
        resources={"metadata": {"path": str(project)}},
    )
    with clean_kernel_env.context() as patch:
        patch.setenv("PYTHONPATH", str(PROJECT_ROOT))
        client.execute()

    outputs = [output for cell in notebook.cells for output in cell.get("outputs", [])]
    text = "".join(output.get("text", "") for output in outputs)
    assert "the cluster summed the squares below 1000000: 333332833333500000" in text
    assert text.count("says hello from 127.") == 4
    tables = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any(table.count("<td>running</td>") >= 4 for table in tables)
    final_ids = notebook.cells[-2]["outputs"][0]["data"]["text/plain"]
    assert final_ids.count(",") == 0  # only the master is left
    assert not (project / ".sense" / "server.json").exists()


def test_dask_and_ipyparallel_clusters_run_from_a_kernels_cells(local_kernel, tmp_path):
    def run(code: str) -> str:
        cell = local_kernel.run(code)
        assert cell.error is None, cell.stream("stderr")
        return cell.stream("stdout")

    run("import sense, sense.local\nserver = sense.local.start()")
    run(
        "from dask.distributed import Client\nfrom sense.dask import SenseCluster\n"
        "cluster = SenseCluster(n_workers=2)\nclient = Client(cluster)"
    )
    assert run("print(sum(client.gather(client.map(lambda x: x * x, range(100)))))") == "328350\n"
    dask_pids = json.loads(
        run("import json, os\nprint(json.dumps(list(client.run(os.getpid).values())))")
    )
    run("client.close()\ncluster.close()")

    with ipyparallel_profile(tmp_path / "ipp") as profile:
        run(
            "import ipyparallel as ipp\n"
            f"engines = ipp.Cluster(engines='sense', n=2, profile_dir={profile!r})\n"
            "rc = engines.start_and_connect_sync()"
        )
        assert run("print(sum(rc[:].map_sync(lambda x: x * x, range(100))))") == "328350\n"
        engine_pids = json.loads(run("print(json.dumps(rc[:].apply_sync(os.getpid)))"))
        run("rc.close()\nengines.stop_cluster_sync()")

    workers = run("print([w['id'] for w in sense.getWorkers() if w['master_id']])")
    assert workers == "[]\n"
    _, alive = psutil.wait_procs(
        [psutil.Process(p) for p in dask_pids + engine_pids if psutil.pid_exists(p)], timeout=10
    )
    assert alive == []
