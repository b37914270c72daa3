"""Dashboards are real process groups: their lifecycle, environment, addresses and ends."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import zipfile

import psutil
import pytest
from conftest import Api, engine_processes, read_exports, sense_command, wait_for
from waiting import left_running

from sense.errors import SenseConfigError
from sense.local import LocalServer
from sense.local.statedir import ProjectBusyError
from sense.local.store import Store

pytestmark = pytest.mark.timeout(60)


def test_a_worker_whose_python_cannot_start_fails_with_the_reason_in_its_log(api):
    # An env that breaks the interpreter: the worker never gets as far as its code.
    worker = api.launch(env={"PYTHONHOME": "/nonexistent"}, startup_code="print('never')")
    failed = api.wait_status(worker["id"], "failed")
    assert failed["exit_code"] != 0
    assert failed["started_at"] is None
    log = api.logs(worker["id"])
    assert "No module named 'encodings'" in log
    assert "never" not in log


#: What a module can tell of how Python runs it, as JSON.
MAIN_FACTS = """
import json, os, pickle, sys

class Point:
    pass

print(json.dumps({
    "name": __name__,
    "argv": sys.argv,
    "main_is_this_module": vars(sys.modules["__main__"]) is globals(),
    "file": globals().get("__file__"),
    "spec": repr(globals().get("__spec__")),
    "path0": sys.path[0] and os.path.realpath(sys.path[0]),
    "pickled": type(pickle.loads(pickle.dumps(Point()))).__name__,
}))
"""


def facts_of_python(*args: str, cwd) -> dict:
    """:data:`MAIN_FACTS` as ``python ARGS`` reports them."""
    run = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_startup_code_runs_as_python_c_runs_it(api, project_dir):
    worker = api.launch(startup_code=MAIN_FACTS)
    api.wait_status(worker["id"], "stopped")
    seen = json.loads(api.logs(worker["id"]))
    expected = facts_of_python("-c", MAIN_FACTS, cwd=project_dir)
    # `python -c` puts "" (the working directory) first on sys.path; the engine puts the
    # project directory, the same place as a path that does not change with os.chdir.
    assert expected.pop("path0") == "" and seen.pop("path0") == str(project_dir)
    assert seen == expected
    assert seen["argv"] == ["-c"] and seen["file"] is None and seen["main_is_this_module"]


def test_a_startup_script_runs_as_python_script_runs_it(api, project_dir):
    (project_dir / "tools").mkdir()
    (project_dir / "tools" / "facts.py").write_text(MAIN_FACTS)
    worker = api.launch(startup_script="tools/facts.py")
    api.wait_status(worker["id"], "stopped")
    seen = json.loads(api.logs(worker["id"]))
    assert seen == facts_of_python("tools/facts.py", cwd=project_dir)
    assert seen["argv"] == ["tools/facts.py"]
    assert seen["file"] == str(project_dir / "tools" / "facts.py")
    assert seen["path0"] == str(project_dir / "tools")


@pytest.fixture(params=[True, False], ids=["prestarted", "fresh-interpreter"])
def either_engine_api(project_dir, request):
    """The API of a server whose dashboards are forked from the prestarted engine, or not."""
    with LocalServer(project_dir, grace=1.0, prestart=request.param) as running:
        running.attach(set_environ=False)
        yield Api(running)


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_pool_of_startup_code_starts_its_processes_as_under_python_c(either_engine_api, method):
    # Unguarded, as `python -c` allows: the processes that spawn starts do not run it again.
    code = (
        "import multiprocessing\n"
        f"with multiprocessing.get_context({method!r}).Pool(2) as pool:\n"
        "    print(pool.map_async(abs, [-1, -2]).get(timeout=30))\n"
    )
    api = either_engine_api
    worker = api.launch(startup_code=code)
    ended = api.wait_status(worker["id"], "stopped", "failed", timeout=45)
    log = api.logs(worker["id"])
    assert (ended["status"], ended["exit_code"], log) == ("stopped", 0, "[1, 2]\n")


def test_functions_kept_in_a_project_module_reach_a_spawned_process_pool(api, project_dir):
    (project_dir / "squares.py").write_text("def square(x):\n    return x * x\n")
    code = (
        "import multiprocessing, squares\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "spawn = multiprocessing.get_context('spawn')\n"
        "with spawn.Pool(2) as pool:\n"
        "    print(pool.map_async(squares.square, [1, 2, 3]).get(timeout=20))\n"
        "with ProcessPoolExecutor(1, mp_context=spawn) as executor:\n"
        "    print(list(executor.map(squares.square, [4], timeout=20)))\n"
    )
    worker = api.launch(startup_code=code)
    ended = api.wait_status(worker["id"], "stopped", "failed", timeout=40)
    log = api.logs(worker["id"])
    assert ended["status"] == "stopped", log
    assert log == "[1, 4, 9]\n[16]\n"


@pytest.mark.parametrize(
    "code",
    [
        "import sys; sys.stdout.close()",
        "import sys; sys.stderr.close()",
        "import sys; sys.stdout.close(); sys.stderr.close()",
        "import sys; sys.stdout = sys.stderr = None",
        "import sys; sys.stderr.close(); sys.exit('a message nobody can read')",
        "import sys; sys.stderr.close(); raise ValueError('unseen')",
    ],
    ids=["stdout", "stderr", "both", "none", "exit-message", "exception"],
)
def test_a_worker_that_closes_its_standard_streams_ends_as_python_c_ends(api, code):
    expected = subprocess.run([sys.executable, "-c", code], capture_output=True).returncode
    worker = api.launch(startup_code=code)
    ended = api.wait_status(worker["id"], "stopped", "failed")
    assert ended["exit_code"] == expected
    assert ended["status"] == ("stopped" if expected == 0 else "failed")


#: How a job may end, each with what Python prints and the exit code it gives.
ENDINGS = {
    "exit-code": "import sys; sys.exit(3)",
    "exit-message": "import sys; print('main'); sys.exit('bye')",
    "exit-code-wraps": "import sys; sys.exit(256 + 7)",
    "exit-negative": "import sys; sys.exit(-1)",
    "exit-huge": "import sys; sys.exit(2**70)",
    "exception": "raise ValueError('no')",
    "keyboard-interrupt": "raise KeyboardInterrupt",
    "excepthook-fails": "import sys\ndef hook(*args): 1 / 0\nsys.excepthook = hook\nraise OSError",
    "stdout-unwritable": "import os, sys\nsys.stdout = open(os.devnull, 'w')\n"
    "os.close(sys.stdout.fileno())\nprint('lost')",
    "del-at-exit": (
        "class Noisy:\n"
        "    def __init__(self, name): self.name = name\n"
        "    def __del__(self): print(self.name, 'deleted')\n"
        "first, second = Noisy('first'), Noisy('second')\n"
        "cycle = Noisy('cycle'); cycle.me = cycle\n"
        "print('main ends')"
    ),
    "threads-then-atexit": (
        "import atexit, threading, time\n"
        "atexit.register(print, 'atexit')\n"
        "threading.Thread(target=lambda: (time.sleep(0.2), print('thread'))).start()\n"
        "threading.Thread(target=lambda: (time.sleep(30), print('daemon')), daemon=True).start()\n"
        "print('main ends')"
    ),
    "atexit-raises": "import atexit; atexit.register(lambda: 1 / 0); print('main ends')",
}


def printed(output: str) -> str:
    """What ``python -c`` printed, as a job prints it: its code's file name differs, and
    addresses."""
    output = output.replace('"<string>"', '"<startup_code>"')
    return re.sub(" at 0x[0-9a-f]+", " at 0x...", output)


@pytest.mark.parametrize("code", ENDINGS.values(), ids=ENDINGS)
def test_a_job_ends_as_python_c_ends(api, project_dir, code):
    python = subprocess.run(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=project_dir,
    )
    worker = api.launch(startup_code=code)
    ended = api.wait_status(worker["id"], "stopped", "failed")
    assert ended["exit_code"] == python.returncode
    assert printed(api.logs(worker["id"])) == printed(python.stdout)


def test_what_a_job_and_its_modules_leave_open_is_closed_as_python_closes_it(api, project_dir):
    (project_dir / "keeps_open.py").write_text(
        "import gzip, tempfile\n"
        "compressed = gzip.open('left_open.gz', 'wt')\n"
        "compressed.write('closed as the interpreter ends')\n"
        "scratch = tempfile.NamedTemporaryFile(dir='.', prefix='scratch-')\n"
    )
    code = (
        "import zipfile, keeps_open\n"
        "archive = zipfile.ZipFile('left_open.zip', 'w')\n"
        "archive.writestr('inside.txt', 'written as the interpreter ends')\n"
        "text = open('left_open.txt', 'w')\n"
        "text.write('flushed as the interpreter ends')\n"
    )
    worker = api.launch(startup_code=code)
    assert api.wait_status(worker["id"], "stopped")["exit_code"] == 0, api.logs(worker["id"])
    assert (project_dir / "left_open.txt").read_text() == "flushed as the interpreter ends"
    with zipfile.ZipFile(project_dir / "left_open.zip") as archive:
        assert archive.read("inside.txt") == b"written as the interpreter ends"
    with gzip.open(project_dir / "left_open.gz", "rt") as compressed:
        assert compressed.read() == "closed as the interpreter ends"
    assert not list(project_dir.glob("scratch-*"))


#: A module whose object needs the module's globals when it is finalized at the interpreter's
#: end: Python's own end gives it them whole.
NEEDS_ITS_GLOBALS_AT_THE_END = """
import json

class Reporter:
    def __del__(self):
        print(json.dumps({"finalized": type(self).__name__}))

reporter = Reporter()
"""


def test_objects_of_a_workers_modules_end_as_under_python_c(api, project_dir):
    (project_dir / "reporting.py").write_text(NEEDS_ITS_GLOBALS_AT_THE_END)
    python = subprocess.run(
        [sys.executable, "-c", "import reporting"], cwd=project_dir, capture_output=True, text=True
    )
    assert (python.stdout, python.stderr) == ('{"finalized": "Reporter"}\n', "")
    worker = api.launch(startup_code="import reporting")
    assert api.wait_status(worker["id"], "stopped")["exit_code"] == 0
    assert api.logs(worker["id"]) == python.stdout


def test_objects_of_a_sense_run_masters_modules_end_as_under_python(project_dir):
    (project_dir / "reporting.py").write_text(NEEDS_ITS_GLOBALS_AT_THE_END)
    (project_dir / "job.py").write_text("import reporting\nprint('master done')\n")
    python = subprocess.run(
        [sys.executable, "job.py"],
        cwd=project_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    run = sense_command("run", "job.py", cwd=project_dir)
    output, _ = run.communicate(timeout=30)
    assert run.returncode == python.returncode == 0
    assert output == python.stdout == 'master done\n{"finalized": "Reporter"}\n'


def test_the_environment_carries_every_context_variable_in_every_spelling(api, server, project_dir):
    (project_dir / "helper_module.py").write_text("VALUE = 'from the project'\n")
    code = (
        "import json, os, sys, helper_module\n"
        "print(json.dumps({'env': dict(os.environ), 'cwd': os.getcwd(), 'path0': sys.path[0],\n"
        "    'helper': helper_module.VALUE, 'python': sys.executable,\n"
        "    'heavy': [m for m in ('sense', 'fastapi', 'uvicorn', 'pydantic')\n"
        "              if m in sys.modules]}))\n"
    )
    os.environ["SENSE_SSH_PASSWORD"] = "leaked"  # the server's own context must not leak
    try:
        worker = api.launch(startup_code=code, env={"ROLE": "worker"})
    finally:
        del os.environ["SENSE_SSH_PASSWORD"]
    api.wait_status(worker["id"], "stopped")
    seen = json.loads(api.logs(worker["id"]))
    env = seen["env"]
    info = server.project.info
    assert env["SENSE_API_URL"] == server.url
    assert env["SENSE_OWNER_ID"] == info.owner_id
    assert env["SENSE_PROJECT_ID"] == info.project_id
    assert env["SENSE_PROJECT_URL"] == server.project_url
    assert env["SENSE_DASHBOARD_ID"] == str(worker["id"])
    assert env["SENSE_MASTER_ID"] == str(server.master["id"])
    assert env["SENSE_API_TOKEN"] == env["SENSE_API_KEY"] == info.token
    assert env["SENSE_PROJECT_IP"] == worker["project_ip"]
    assert env["SENSE_DNS_PUBLIC"] == env["SENSE_PUBLIC_DNS"] == "localhost"
    [(private, public)] = worker["public_port_mapping"].items()
    assert env["SENSE_PORT1"] == private
    assert env["SENSE_PORT1_PUBLIC"] == env["SENSE_PUBLIC_PORT1"] == str(public)
    assert env["SENSE_SSH_PORT_PUBLIC"] == env["SENSE_PUBLIC_SSH_PORT"] == str(info.ssh.port)
    assert env["SENSE_SSH_PASSWORD"] == info.ssh.password(worker["id"]) != "leaked"
    assert env["ROLE"] == "worker"
    assert seen["cwd"] == seen["path0"] == str(project_dir)
    assert seen["helper"] == "from the project"
    assert seen["python"] == sys.executable
    assert seen["heavy"] == []  # the engine imports nothing of sense nor of the server


def test_a_master_has_an_empty_master_id(api):
    master = api.launch(
        master_id=None, startup_code="import os; print(repr(os.environ['SENSE_MASTER_ID']))"
    )
    assert master["master_id"] is None
    api.wait_status(master["id"], "stopped")
    assert api.logs(master["id"]).strip() == "''"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="127.0.0.0/8 is Linux's")
def test_two_workers_bind_the_same_port_each_on_its_own_project_ip(api, server):
    port = _free_port()
    code = (
        "import os, socket, time\n"
        f"server = socket.create_server((os.environ['SENSE_PROJECT_IP'], {port}))\n"
        "print('listening', flush=True)\n"
        "connection, _ = server.accept()\n"
        "connection.sendall(os.environ['SENSE_DASHBOARD_ID'].encode())\n"
        "connection.close()\n"
    )
    workers = [api.launch(startup_code=code) for _ in range(2)]
    addresses = {w["project_ip"] for w in workers}
    assert len(addresses) == 2 and "127.0.0.1" not in addresses
    for worker in workers:
        wait_for(lambda w=worker: "listening" in api.logs(w["id"]))
    for worker in workers:
        with socket.create_connection((worker["project_ip"], port), timeout=10) as connection:
            assert connection.recv(16).decode() == str(worker["id"])
    for worker in workers:
        assert api.wait_status(worker["id"], "stopped", "failed")["status"] == "stopped"


def test_a_stop_that_lands_while_a_dashboard_launches_ends_it_before_answering(api, tmp_path):
    """A stop aimed at the next id, sent over and over, meets each launch wherever it is."""
    for _ in range(20):
        next_id = max(d["id"] for d in api("GET", "/dashboards").json()) + 1
        answers = []

        def stop_as_soon_as_it_exists(dashboard_id=next_id, answers=answers):
            while not answers or answers[-1].status_code == 404:
                answers.append(api("PUT", f"/dashboards/{dashboard_id}/stop"))

        stopper = threading.Thread(target=stop_as_soon_as_it_exists)
        stopper.start()
        api.launch()
        stopper.join(30)
        assert answers[-1].json()["status"] == "stopped"
        # Both calls have answered, the stop once the dashboard had ended: nothing of it runs.
        assert dashboard_processes(tmp_path, next_id) == []
        assert api.get(next_id)["status"] == "stopped"


def dashboard_processes(under, dashboard_id: int) -> list[psutil.Process]:
    """The engine processes of one dashboard, found by the id in their environment."""
    found = []
    for process in engine_processes(under):
        with contextlib.suppress(psutil.Error):
            if process.environ().get("SENSE_DASHBOARD_ID") == str(dashboard_id):
                found.append(process)
    return found


@pytest.mark.timeout(30)
def test_sigkill_of_the_server_ends_every_worker_within_seconds(project_dir):
    server = sense_command("server", "--project-dir", str(project_dir), cwd=project_dir)
    try:
        exports = dict(read_exports(server))
        api_url = exports["SENSE_PROJECT_URL"]
        token = exports["SENSE_API_TOKEN"]
        master = int(exports["SENSE_DASHBOARD_ID"])
        import requests

        for _ in range(3):
            answer = requests.post(
                api_url + "/dashboards", json={"master_id": master}, auth=(token, ""), timeout=10
            )
            assert answer.status_code == 201
        # Each worker is its engine and the job it forked.
        wait_for(lambda: len(engine_processes(project_dir)) == 6)
        # The workers, and the prestarted engine they were forked from (if any).
        started_by_server = psutil.Process(server.pid).children(recursive=True)
    finally:
        server.kill()
        server.wait()
        server.stdout.close()
    alive = left_running(started_by_server, timeout=5)
    assert not alive, "processes outlived their server"


def test_at_start_whatever_an_earlier_run_left_running_is_ended(project_dir):
    leftover = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    stranger = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    try:
        with LocalServer(project_dir) as first:
            pass
        from sense.local.backends.local import _start_time

        with Store(first.state.db_path) as store:
            store.insert(
                status="running",
                kind="api",
                handle={"pid": leftover.pid, "start_time": _start_time(leftover.pid)},
            )
            # Same pid, other start time: a reused pid, which must be left alone.
            store.insert(
                status="running", kind="api", handle={"pid": stranger.pid, "start_time": "0"}
            )
        with LocalServer(project_dir) as server:
            rows = server.project.dashboards()
            assert [row["status"] for row in rows] == ["failed", "failed"]
            assert all(row["stopped_at"] for row in rows)
        assert leftover.wait(timeout=5) == -signal.SIGKILL
        assert stranger.poll() is None
    finally:
        for process in (leftover, stranger):
            process.kill()
            process.wait()


def test_two_servers_cannot_serve_one_project(project_dir):
    with LocalServer(project_dir), pytest.raises(ProjectBusyError, match="already served"):
        LocalServer(project_dir)


def test_the_token_is_readable_by_its_owner_only(project_dir):
    with LocalServer(project_dir) as server:
        mode = stat.S_IMODE(os.stat(project_dir / ".sense" / "token").st_mode)
        assert mode == 0o600
        assert (project_dir / ".sense" / "token").read_text().strip() == server.project.info.token


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_quota_comes_from_the_environment_when_not_given(project_dir, monkeypatch):
    monkeypatch.setenv("SENSE_LOCAL_MAX_WORKERS", "3")
    with LocalServer(project_dir) as server:
        assert server.project.backend.capacity() == 3
    monkeypatch.setenv("SENSE_LOCAL_MAX_WORKERS", "many")
    with pytest.raises(SenseConfigError, match="SENSE_LOCAL_MAX_WORKERS"):
        LocalServer(project_dir)
    monkeypatch.delenv("SENSE_LOCAL_MAX_WORKERS")
    with LocalServer(project_dir) as server:
        assert server.project.backend.capacity() == max(8, 4 * (os.cpu_count() or 1))
