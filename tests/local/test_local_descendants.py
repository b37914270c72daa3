"""Every process a dashboard starts ends with it, whatever session or process group it moved to.

Each job here starts two processes that leave its process group: one with
``Popen(start_new_session=True)``, and a daemon made the classic way (fork,
``setsid``, fork again, the middle one exits). The tests check with psutil
that both end when the dashboard ends, however it ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys

import psutil
import pytest
import requests
from conftest import Api, dashboard_process, read_exports, sense_command, wait_for
from waiting import left_running

import sense

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a child subreaper is Linux's"),
]

#: Starts the two escapees and prints their pids as a JSON list, on one line of its own.
ESCAPE = """
import json, os, subprocess, sys

def escape():
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    session = subprocess.Popen(sleeper, start_new_session=True).pid
    read, write = os.pipe()
    if os.fork() == 0:
        os.setsid()
        os.write(write, str(subprocess.Popen(sleeper).pid).encode())
        os._exit(0)
    os.close(write)
    os.wait()
    daemon = int(os.read(read, 32))
    print(json.dumps([session, daemon]), flush=True)
    return [session, daemon]

escape()
"""

STAY = "\nimport time\ntime.sleep(60)\n"


@pytest.fixture
def escapees():
    """Collects the processes that tests expect to end; kills any that did not."""
    found: list[psutil.Process] = []
    yield found
    for process in found:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()


def take(escapees: list, pids: list[int]) -> list[psutil.Process]:
    """The escapees' processes, running and in a session of their own."""
    processes = [psutil.Process(pid) for pid in pids]
    escapees.extend(processes)
    for process in processes:
        assert process.is_running()
        assert os.getsid(process.pid) != os.getsid(0)
    return processes


def escapees_of(api: Api, dashboard_id: int, escapees: list) -> list[psutil.Process]:
    """The processes that dashboard ``dashboard_id`` printed, once it has printed them."""

    def printed():
        lines = [line for line in api.logs(dashboard_id).splitlines() if line.startswith("[")]
        return json.loads(lines[0]) if lines else None

    printed.__name__ = f"dashboard {dashboard_id} to print its escapees"
    return take(escapees, wait_for(printed))


def assert_all_end(processes: list[psutil.Process]) -> None:
    alive = left_running(processes, timeout=5)
    assert not alive, f"left running: {alive}"


@pytest.mark.parametrize(
    "ending",
    ["", "import os; os._exit(0)", "raise SystemExit(3)"],
    ids=["returns", "os._exit", "sys.exit"],
)
def test_what_a_job_left_behind_ends_when_it_ends(api, escapees, ending):
    worker = api.launch(startup_code=ESCAPE + "\nimport time; time.sleep(0.5)\n" + ending)
    processes = escapees_of(api, worker["id"], escapees)
    api.wait_status(worker["id"], "stopped", "failed")
    assert_all_end(processes)


def test_stop_workers_ends_what_they_left_behind(local_master, escapees):
    workers = sense.launchWorkers(2, startupCode=ESCAPE + STAY)
    api = Api(local_master)
    processes = [p for w in workers for p in escapees_of(api, w["id"], escapees)]
    sense.stopWorkers()
    assert_all_end(processes)


def test_a_job_that_ignores_sigterm_loses_what_it_started_with_it(api, escapees):
    code = "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n" + ESCAPE + STAY
    worker = api.launch(startup_code=code)
    processes = escapees_of(api, worker["id"], escapees)
    stopped = api("PUT", f"/dashboards/{worker['id']}/stop").json()
    assert stopped["exit_code"] == -signal.SIGKILL
    assert_all_end(processes)


#: A job that owns a child: on SIGTERM, it closes the child's standard input and waits for it,
#: as dask's Nanny closes its worker. The child says which came first, its parent or a SIGTERM.
OWNS_A_CHILD = """
import subprocess, sys, time
CHILD = '''
import signal, sys
signal.signal(signal.SIGTERM, lambda *_: (print("child: SIGTERM", flush=True), sys.exit(1)))
print("child: ready", flush=True)
sys.stdin.read()
print("child: closed by its parent", flush=True)
'''
child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE)
{main}
try:
    print("parent: ready", flush=True)
    time.sleep(60)
finally:
    child.stdin.close()
    print("parent: child ended with", child.wait(), flush=True)
"""


def stop_once_ready(api: Api, code: str) -> tuple[dict, str]:
    """Launch ``code``, stop it once both its processes are ready: the stopped dashboard, and
    its log."""
    worker = api.launch(startup_code=code)

    def ready():
        log = api.logs(worker["id"])
        return "child: ready" in log and "parent: ready" in log

    ready.__name__ = f"dashboard {worker['id']} to be ready"
    wait_for(ready)
    stopped = api("PUT", f"/dashboards/{worker['id']}/stop").json()
    return stopped, api.logs(worker["id"])


def test_a_stop_lets_the_jobs_own_process_end_what_it_owns_its_way(api):
    stopped, log = stop_once_ready(api, OWNS_A_CHILD.format(main=""))
    assert (stopped["status"], stopped["exit_code"]) == ("stopped", 128 + signal.SIGTERM), log
    assert "child: closed by its parent\nparent: child ended with 0\n" in log
    assert "child: SIGTERM" not in log


def test_when_the_jobs_own_process_ignores_sigterm_the_rest_gets_it_then_sigkill(api):
    ignores = "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)"
    stopped, log = stop_once_ready(api, OWNS_A_CHILD.format(main=ignores))
    assert (stopped["status"], stopped["exit_code"]) == ("stopped", -signal.SIGKILL), log
    assert "child: SIGTERM" in log and "closed by its parent" not in log


def test_when_a_master_ends_what_its_workers_started_ends(api, escapees, project_dir):
    release = project_dir / "release"
    master = api.launch(
        master_id=None,
        startup_code=f"import os, time\nwhile not os.path.exists({str(release)!r}):\n"
        "    time.sleep(0.05)\n",
    )
    api.wait_status(master["id"], "running")
    worker = api.launch(master_id=master["id"], startup_code=ESCAPE + STAY)
    processes = escapees_of(api, worker["id"], escapees)
    release.touch()
    api.wait_status(master["id"], "stopped")
    api.wait_status(worker["id"], "stopped")
    assert_all_end(processes)


def test_an_orphan_that_ends_while_the_job_runs_leaves_no_zombie(api, tmp_path):
    code = (
        "import os, subprocess, sys, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    subprocess.Popen([sys.executable, '-c', 'pass'])\n"
        "    os._exit(0)\n"
        "os.wait()\n"
        "print('forked', flush=True)\n" + STAY
    )
    worker = api.launch(startup_code=code)
    wait_for(lambda: "forked" in api.logs(worker["id"]))
    engine = dashboard_process(api, worker["id"])

    def only_the_job_is_left():
        return [child.status() for child in engine.children()] == [psutil.STATUS_SLEEPING]

    wait_for(only_the_job_is_left)
    api("PUT", f"/dashboards/{worker['id']}/stop")


def test_what_sense_run_started_ends_when_it_exits(project_dir, escapees):
    (project_dir / "worker.py").write_text(ESCAPE + "open('worker.ready', 'w').close()\n" + STAY)
    (project_dir / "job.py").write_text(
        ESCAPE.replace("escape()\n", "") + "import os, sense, time\n"
        "sense.launchWorkers(1, startupScript='worker.py')\n"
        "while not os.path.exists('worker.ready'):\n"
        "    time.sleep(0.05)\n"
        "escape()\n"
        "input()\n"
    )
    run = sense_command("run", "job.py", cwd=project_dir, stdin=subprocess.PIPE)
    pids = []
    for line in run.stdout:
        line = line.removeprefix("[worker 2] ")
        pids += json.loads(line) if line.startswith("[") else []
        if len(pids) == 4:
            break
    processes = take(escapees, pids)
    run.stdin.write("\n")
    run.stdin.flush()
    run.communicate(timeout=30)
    assert run.returncode == 0
    assert_all_end(processes)


def test_what_workers_started_ends_when_the_server_is_sigkilled(project_dir, escapees):
    server = sense_command("server", "--project-dir", str(project_dir), cwd=project_dir)
    try:
        exports = dict(read_exports(server))
        url, auth = exports["SENSE_PROJECT_URL"], (exports["SENSE_API_TOKEN"], "")
        body = {"master_id": exports["SENSE_DASHBOARD_ID"], "startup_code": ESCAPE + STAY}
        worker = requests.post(f"{url}/dashboards", json=body, auth=auth, timeout=10).json()

        def printed():
            log = requests.get(f"{url}/dashboards/{worker['id']}/logs", auth=auth, timeout=10)
            return log.text.strip()

        processes = take(escapees, json.loads(wait_for(printed)))
    finally:
        server.kill()
        server.wait()
        server.stdout.close()
    assert_all_end(processes)
