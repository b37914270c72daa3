"""The client and the local server together: clusters as a notebook builds them."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import Api, sense_command, wait_for

import sense
import sense.local

pytestmark = pytest.mark.timeout(60)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy")


@pytest.mark.parametrize("proxies", ["none", "a company's"])
def test_the_cluster_example_runs_a_four_worker_round_trip(project_dir, proxies):
    shutil.copy(EXAMPLES / "cluster.py", project_dir)
    # A proxy that nothing answers on: requests to the local server must not go there.
    dead_proxy = "http://127.0.0.1:9"
    env = {} if proxies == "none" else dict.fromkeys(PROXY_VARIABLES, dead_proxy)
    run = sense_command("run", "cluster.py", cwd=project_dir, env=env)
    output, _ = run.communicate(timeout=45)
    assert run.returncode == 0, output
    hellos = [line for line in output.splitlines() if "says hello from 127." in line]
    assert len(hellos) == 4
    assert "the cluster summed the squares below 1000000: 333332833333500000" in output, output
    assert "cluster: [1, 2, 3, 4, 5]" in output, output
    assert "after stopWorkers(): [1]" in output, output
    assert output.count("said hello to the master") == 4  # the workers' own lines, prefixed


def test_the_rest_api_example_reads_the_project(project_dir):
    shutil.copy(EXAMPLES / "rest_api.py", project_dir)
    run = sense_command("run", "rest_api.py", cwd=project_dir)
    output, _ = run.communicate(timeout=30)
    assert run.returncode == 0, output
    assert "project: project of" in output
    assert "dashboard 1: running" in output


def test_start_makes_this_process_a_master_and_stop_restores_the_environment(project_dir):
    before = dict(os.environ)
    with sense.local.start(project_dir, grace=1.0) as server:
        assert sense.local.start(project_dir) is server
        assert os.environ["SENSE_DASHBOARD_ID"] == str(server.master["id"])
        assert os.environ["SENSE_MASTER_ID"] == ""
        assert sense.getMaster()["id"] == server.master["id"]
        assert sense.networkInfo()["project_ip"] == server.master["project_ip"]
    assert dict(os.environ) == before


def test_start_adds_only_the_masters_context_and_stop_takes_back_only_that(
    project_dir, monkeypatch
):
    for name in [n for n in os.environ if n.startswith("SENSE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("SENSE_API_URL", "https://api.elsewhere.invalid")  # replaced, then back
    monkeypatch.setenv("SENSE_USERNAME", "someone")  # no variable of the master's: left alone
    monkeypatch.setenv("PIP_INDEX_URL", "https://pypi.example.invalid/simple")
    monkeypatch.delenv("SET_MEANWHILE", raising=False)
    before = dict(os.environ)
    with sense.local.start(project_dir, grace=1.0) as server:
        context = server.master_environment()
        changed = {k: v for k, v in os.environ.items() if before.get(k) != v}
        assert changed == context
        assert set(before) <= set(os.environ)
        monkeypatch.setenv("SET_MEANWHILE", "the user's")
        code = "import json, os; print(json.dumps(dict(os.environ)))"
        [worker] = sense.launchWorkers(1, startupCode=code)
        sense.awaitWorkers([worker], wait_for_completion=True)
        seen = json.loads(Api(server).logs(worker["id"]))
    # The worker had the environment of the process at launch, its own context instead of ours.
    for name in ("PATH", "HOME", "PIP_INDEX_URL", "SET_MEANWHILE"):
        assert seen[name] == os.environ[name]
    assert seen["SENSE_API_URL"] == context["SENSE_API_URL"]
    assert "SENSE_USERNAME" not in seen
    assert os.environ.pop("SET_MEANWHILE") == "the user's"
    assert dict(os.environ) == before


def test_start_for_another_project_while_one_runs_is_refused_and_touches_nothing(
    project_dir, tmp_path
):
    other = tmp_path / "other"
    other.mkdir()
    with sense.local.start(project_dir, grace=1.0) as server:
        context = dict(os.environ)
        with pytest.raises(sense.SenseError) as refused:
            sense.local.start(other)
        assert str(project_dir) in str(refused.value)
        assert "sense.local.stop()" in str(refused.value)
        assert list(other.iterdir()) == []
        assert dict(os.environ) == context
        assert sense.getMaster()["id"] == server.master["id"]


def test_get_workers_from_the_master_and_from_a_worker(local_master):
    master = local_master.master["id"]
    code = (
        "import json, sense\n"
        "print(json.dumps(sorted(w['id'] for w in sense.getWorkers())), flush=True)\n"
        "import time; time.sleep(60)\n"
    )
    workers = sense.launchWorkers(2, startupCode=code)
    ids = [w["id"] for w in workers]
    api = Api(local_master)
    # Each worker saw the cluster as it was when it asked: the master, itself, maybe the other.
    for worker_id in ids:
        seen = json.loads(wait_for(lambda w=worker_id: api.logs(w).strip()))
        assert master in seen and worker_id in seen
    assert sorted(w["id"] for w in sense.getWorkers()) == sorted([master, *ids])
    stopped = sense.stopWorkers()
    assert sorted(w["id"] for w in stopped) == sorted(ids)
    assert [w["id"] for w in sense.getWorkers()] == [master]


def test_stop_workers_leaves_only_the_master(local_master):
    workers = sense.launchWorkers(3)
    assert sense.awaitWorkers(workers)["failures"] == []
    assert len(sense.getWorkers()) == 4
    sense.stopWorkers(workers[0]["id"])
    assert len(sense.getWorkers()) == 3
    sense.stopWorkers()
    assert [w["id"] for w in sense.getWorkers()] == [local_master.master["id"]]


def test_a_launch_from_a_worker_is_refused(local_master):
    code = (
        "import sense\n"
        "try:\n"
        "    sense.launchWorkers(1)\n"
        "except sense.SenseError as error:\n"
        "    print('refused:', type(error).__name__)\n"
    )
    [worker] = sense.launchWorkers(1, startupCode=code)
    result = sense.awaitWorkers([worker], wait_for_completion=True)
    assert [w["id"] for w in result["workers"]] == [worker["id"]]
    assert "refused: SenseConfigError" in Api(local_master).logs(worker["id"])


def test_workers_get_their_env_and_the_project_on_their_path(local_master, project_dir):
    (project_dir / "shared.py").write_text("def greet(name):\n    return 'hello ' + name\n")
    code = "import os, shared; print(shared.greet(os.environ['WHO']))"
    [worker] = sense.launchWorkers(1, startupCode=code, env={"WHO": "ada"})
    sense.awaitWorkers([worker], wait_for_completion=True)
    assert Api(local_master).logs(worker["id"]).strip() == "hello ada"


def test_the_quota_turns_an_oversized_launch_into_a_launch_error_with_nothing_left(
    project_dir, monkeypatch
):
    for name in [n for n in os.environ if n.startswith("SENSE_")]:
        monkeypatch.delenv(name)
    with sense.local.start(project_dir, max_workers=2, grace=1.0):
        with pytest.raises(sense.LaunchError) as raised:
            sense.launchWorkers(3)
        assert raised.value.status_code == 429
        wait_for(lambda: len(sense.getWorkers()) == 1)
