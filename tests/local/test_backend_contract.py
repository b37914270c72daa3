"""The life cycle of a dashboard, as every backend must keep it.

Each test runs once per backend of ``BACKENDS`` (conftest's ``backend``
fixture): a new backend passes this suite by adding one fixture value.
What is specific to one backend (loopback addresses, the ``sense`` command)
is tested beside it, not here. On Ray the tests share one server (it takes
seconds to start), which ends what each test left running; the tests that
need servers of their own are in ``test_backend_contract_servers.py``.
"""

from __future__ import annotations

import json
import signal
import textwrap
import time

import psutil
import pytest
from conftest import dashboard_process, wait_for
from waiting import left_running

pytestmark = pytest.mark.timeout(90)

IDLE = ""  # a dashboard without startup code idles until it is stopped


def test_a_worker_goes_from_starting_to_running_to_stopped_with_exit_code_0(contract_api):
    worker = contract_api.launch(startup_code="import time; time.sleep(0.5)")
    # A worker forked from a prestarted engine may be running by the time the launch answers.
    assert worker["status"] in ("starting", "running")
    running = contract_api.wait_status(worker["id"], "running")
    assert running["started_at"].endswith("Z")
    ended = contract_api.wait_status(worker["id"], "stopped")
    assert ended["exit_code"] == 0
    assert ended["stopped_at"] >= ended["started_at"]


def test_a_worker_sees_itself_running_before_its_code_starts(contract_api):
    code = (
        "import os, json, urllib.request, base64\n"
        "me = os.environ['SENSE_DASHBOARD_ID']\n"
        "url = os.environ['SENSE_PROJECT_URL'] + '/dashboards/' + me\n"
        "token = base64.b64encode((os.environ['SENSE_API_TOKEN'] + ':').encode()).decode()\n"
        "request = urllib.request.Request(url, headers={'Authorization': 'Basic ' + token})\n"
        "print(json.load(urllib.request.urlopen(request))['status'])\n"
    )
    worker = contract_api.launch(startup_code=code)
    contract_api.wait_status(worker["id"], "stopped")
    assert contract_api.logs(worker["id"]).strip() == "running"


def test_output_is_readable_while_it_runs_and_kept_after_it_ends(contract_api):
    code = "import time\nprint('first', flush=True)\ntime.sleep(1.5)\nprint('second')\n"
    worker = contract_api.launch(startup_code=code)
    wait_for(lambda: "first" in contract_api.logs(worker["id"]))
    assert contract_api.get(worker["id"])["status"] == "running"
    contract_api.wait_status(worker["id"], "stopped")
    assert contract_api.logs(worker["id"]) == "first\nsecond\n"


def test_an_uncaught_exception_fails_the_worker_with_its_traceback_in_the_log(contract_api):
    worker = contract_api.launch(startup_code="def f():\n    raise ValueError('boom')\nf()\n")
    failed = contract_api.wait_status(worker["id"], "failed")
    assert failed["exit_code"] == 1
    log = contract_api.logs(worker["id"])
    assert "ValueError: boom" in log
    assert 'File "<startup_code>", line 2, in f' in log
    assert "engine" not in log


@pytest.mark.parametrize(
    ("code", "status", "exit_code", "logged"),
    [
        ("import sys; sys.exit(3)", "failed", 3, ""),
        ("import sys; sys.exit()", "stopped", 0, ""),
        ("import sys; sys.exit('no input files')", "failed", 1, "no input files\n"),
    ],
    ids=["number", "none", "message"],
)
def test_sys_exit_ends_the_worker_as_it_ends_python(contract_api, code, status, exit_code, logged):
    worker = contract_api.launch(startup_code=code)
    assert contract_api.wait_status(worker["id"], status)["exit_code"] == exit_code
    assert contract_api.logs(worker["id"]) == logged


def test_a_worker_without_code_idles_until_it_is_stopped(contract_api):
    worker = contract_api.launch(startup_code=IDLE)
    contract_api.wait_status(worker["id"], "running")
    time.sleep(0.3)
    assert contract_api.get(worker["id"])["status"] == "running"
    stopped = contract_api("PUT", f"/dashboards/{worker['id']}/stop").json()
    assert stopped["status"] == "stopped"
    assert stopped["exit_code"] == 128 + signal.SIGTERM


def test_stop_kills_a_worker_that_ignores_sigterm_after_the_grace_period(contract_api):
    code = (
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ignoring SIGTERM', flush=True)\ntime.sleep(60)\n"
    )
    worker = contract_api.launch(startup_code=code)
    wait_for(lambda: "ignoring SIGTERM" in contract_api.logs(worker["id"]))
    started = time.monotonic()
    stopped = contract_api("PUT", f"/dashboards/{worker['id']}/stop").json()
    # The fixture's grace is 1 s; the job would sleep 60 s.
    assert 0.9 < time.monotonic() - started < 30
    assert stopped["status"] == "stopped"
    assert stopped["exit_code"] == -signal.SIGKILL


def test_stop_ends_the_whole_process_group_of_a_worker(contract_api):
    code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    worker = contract_api.launch(startup_code=code)
    child = psutil.Process(int(wait_for(lambda: contract_api.logs(worker["id"]).strip())))
    contract_api("PUT", f"/dashboards/{worker['id']}/stop")
    left_running([child], timeout=5)
    assert not child.is_running()


@pytest.mark.parametrize("which", ["job", "engine"])
def test_sigkill_of_a_worker_fails_it_with_the_signal_as_exit_code(contract_api, which):
    worker = contract_api.launch(startup_code=IDLE)
    contract_api.wait_status(worker["id"], "running")
    engine = dashboard_process(contract_api, worker["id"])
    # The job is the process that runs the worker's code; the engine forked it and watches it.
    [job] = wait_for(engine.children)
    (job if which == "job" else engine).send_signal(signal.SIGKILL)
    failed = contract_api.wait_status(worker["id"], "failed")
    assert failed["exit_code"] == -signal.SIGKILL
    assert failed["stopped_at"].endswith("Z")


def test_a_worker_gets_the_context_its_placement_and_the_callers_env(contract_api):
    # helper_module is in every contract server's project (conftest's contract_project).
    code = (
        "import json, os, helper_module\n"
        "print(json.dumps({'env': dict(os.environ), 'helper': helper_module.VALUE}))\n"
    )
    worker = contract_api.launch(startup_code=code, env={"ROLE": "worker"})
    contract_api.wait_status(worker["id"], "stopped")
    seen = json.loads(contract_api.logs(worker["id"]))
    env = seen["env"]
    assert env["SENSE_DASHBOARD_ID"] == str(worker["id"])
    assert env["SENSE_MASTER_ID"] == str(contract_api.server.master["id"])
    assert env["SENSE_PROJECT_URL"] == contract_api.url
    assert env["SENSE_PROJECT_IP"] == worker["project_ip"]
    [(private, public)] = worker["public_port_mapping"].items()
    assert env["SENSE_PORT1"] == private and env["SENSE_PUBLIC_PORT1"] == str(public)
    assert env["ROLE"] == "worker"
    assert seen["helper"] == "from the project"


def test_when_a_master_ends_its_workers_are_stopped(contract_api):
    master = contract_api.launch(master_id=None, startup_code="import time; time.sleep(1.5)")
    contract_api.wait_status(master["id"], "running")
    worker = contract_api.launch(master_id=master["id"])
    contract_api.wait_status(master["id"], "stopped")
    assert contract_api.wait_status(worker["id"], "stopped")["exit_code"] == 128 + signal.SIGTERM


def test_stopping_a_master_stops_its_workers(contract_api):
    master = contract_api.launch(master_id=None)
    contract_api.wait_status(master["id"], "running")
    workers = [contract_api.launch(master_id=master["id"]) for _ in range(2)]
    contract_api("PATCH", f"/dashboards/{master['id']}", json={"status": "stopped"})
    for worker in workers:
        contract_api.wait_status(worker["id"], "stopped")


def test_sigkill_of_a_master_stops_its_workers(contract_api):
    master_code = textwrap.dedent(
        """
        import time, sense
        sense.launchWorkers(2)
        time.sleep(600)
        """
    )
    master = contract_api.launch(master_id=None, startup_code=master_code)

    def two_workers_running():
        workers = contract_api("GET", f"/dashboards/{master['id']}/workers").json()
        return workers if len(workers) == 2 else None

    workers = wait_for(two_workers_running, timeout=30)
    dashboard_process(contract_api, master["id"]).send_signal(signal.SIGKILL)
    assert contract_api.wait_status(master["id"], "failed")["exit_code"] == -signal.SIGKILL
    for worker in workers:
        assert contract_api.wait_status(worker["id"], "stopped")["exit_code"] is not None
