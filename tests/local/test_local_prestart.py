"""Dashboards forked from a prestarted engine: a fresh interpreter to their code; the fallbacks.

The backend contract suite runs the whole life cycle with prestart on and off
(conftest's ``BACKENDS``); this file checks what is particular to forking.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import requests
from conftest import (
    Api,
    dashboard_process,
    engine_processes,
    prestarted_engines,
    read_exports,
    sense_command,
    wait_for,
)
from waiting import left_running

from sense.local import LocalServer
from sense.local.backends.prestart import FORKSERVER

pytestmark = pytest.mark.timeout(60)

#: An expression, in a job's code, for the process that started its engine: a job is
#: forked by its engine (see engine.py), itself forked by the prestarted engine or started
#: by the server.
ENGINE_PARENT = "open(f'/proc/{os.getppid()}/stat').read().rsplit(')', 1)[1].split()[1]"

#: Code that idles until stopped once it has printed a line.
PRINT_THEN_IDLE = "import time\nprint({}, flush=True)\ntime.sleep(600)\n"

#: What a job sees of its process: a fresh interpreter's and a forked one's must be equal.
WHAT_A_JOB_SEES = """
import gc, json, locale, os, signal, sys, threading, time
main = sys.modules["__main__"]
umask = os.umask(0); os.umask(umask)
print(json.dumps({
    "name": __name__,
    "argv": sys.argv,
    "orig_argv": sys.orig_argv[:-1],  # the last is the channel's descriptor number
    "path": sys.path,
    "main": [main.__name__, getattr(main, "__file__", None),
             type(getattr(main, "__loader__", None)).__name__,
             getattr(main, "__spec__", None) is None],
    "job_globals": sorted(globals()),
    "cwd": os.getcwd(),
    "env": {k: v for k, v in os.environ.items() if not k.startswith("SENSE_")},
    "sense_variables": sorted(k for k in os.environ if k.startswith("SENSE_")),
    # The job shares the session and group that its engine leads (see engine.py).
    "engine_session": os.getsid(0) == os.getpgrp() == os.getppid(),
    "descriptors": sorted(os.listdir("/proc/self/fd"))[:3],
    "descriptor_count": len(os.listdir("/proc/self/fd")),
    "stdin": os.readlink("/proc/self/fd/0"),
    "stdout": [sys.stdout.isatty(), sys.stdout.line_buffering, sys.stdout.write_through,
               sys.stdout.encoding, sys.stderr.errors],
    "signals": {s.name: getattr(signal.getsignal(s), "__name__", str(signal.getsignal(s)))
                for s in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGPIPE)},
    "threads": threading.active_count(),
    "flags": list(sys.flags),
    "executable": sys.executable,
    "encodings": [sys.getfilesystemencoding(), locale.getpreferredencoding(False)],
    "tz": time.tzname,
    "umask": umask,
    "gc": gc.isenabled(),
    "engine_module": "engine" in sys.modules,
}))
"""


def parent_of(api: Api, dashboard_id: int) -> psutil.Process:
    return dashboard_process(api, dashboard_id).parent()


def is_forked(process: psutil.Process) -> bool:
    """Whether ``process`` is a dashboard forked from a prestarted engine."""
    return FORKSERVER in process.parent().cmdline()


def log_lines(api: Api, dashboard_id: int, count: int = 1) -> list[str]:
    def printed():
        lines = api.logs(dashboard_id).splitlines()
        return lines if len(lines) >= count else None

    printed.__name__ = f"dashboard {dashboard_id} to print {count} lines"
    return wait_for(printed)


def test_forked_workers_each_have_a_fresh_random_state(api):
    code = PRINT_THEN_IDLE.format("__import__('random').random(), __import__('os').urandom(8)")
    workers = [api.launch(startup_code=code) for _ in range(2)]
    printed = [log_lines(api, worker["id"])[0] for worker in workers]
    assert all(is_forked(dashboard_process(api, worker["id"])) for worker in workers)
    assert printed[0] != printed[1]
    for worker in workers:
        api("PUT", f"/dashboards/{worker['id']}/stop")


def test_a_forked_worker_sees_what_a_fresh_interpreter_sees(project_dir):
    seen = {}
    for prestart in (True, False):
        with LocalServer(project_dir, grace=1.0, prestart=prestart) as server:
            server.attach(set_environ=False)
            api = Api(server)
            code = WHAT_A_JOB_SEES + "time.sleep(600)\n"
            worker = api.launch(startup_code=code)
            seen[prestart] = json.loads(log_lines(api, worker["id"])[0])
            assert is_forked(dashboard_process(api, worker["id"])) == prestart
            api("PUT", f"/dashboards/{worker['id']}/stop")
    assert seen[True] == seen[False]
    assert seen[True]["main"][1] is None  # no __file__, as under python -c
    assert seen[True]["engine_session"] and seen[True]["cwd"] == str(project_dir)
    assert seen[True]["descriptors"] == ["0", "1", "2"]
    assert seen[True]["stdin"] == os.devnull
    assert not seen[True]["engine_module"]


def test_a_forked_worker_ends_as_python_does(api, project_dir):
    code = (
        "import atexit, os, sys, threading, time\n"
        # Its engine's parent: the job is forked by its engine, which the prestarted one forked.
        f"open('parent.txt', 'w').write({ENGINE_PARENT})\n"
        "atexit.register(print, 'atexit ran')\n"
        "threading.Thread(target=lambda: (time.sleep(0.3), print('thread ran'))).start()\n"
        "left_open = open('left_open.txt', 'w')\n"
        "left_open.write('flushed as the interpreter ends')\n"
        "print('main ends')\n"
        "sys.stdout.write('no newline, no flush')\n"
    )
    worker = api.launch(startup_code=code)
    assert api.wait_status(worker["id"], "stopped")["exit_code"] == 0
    assert api.logs(worker["id"]) == "main ends\nno newline, no flushthread ran\natexit ran\n"
    assert (project_dir / "left_open.txt").read_text() == "flushed as the interpreter ends"
    [prestarted] = prestarted_engines()
    assert (project_dir / "parent.txt").read_text() == str(prestarted.pid)


@pytest.mark.parametrize("variable", ["PYTHONPATH", "PYTHONHASHSEED"])
def test_an_environment_that_python_reads_at_start_gets_a_fresh_interpreter(
    api, server, project_dir, tmp_path, caplog, variable
):
    caplog.set_level(logging.INFO, logger="sense.local")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "only_on_the_path.py").write_text("VALUE = 'from PYTHONPATH'\n")
    value = str(elsewhere) if variable == "PYTHONPATH" else "123"
    code = "import sys\nprint(hash('sense'), sys.path[1])\n"
    if variable == "PYTHONPATH":
        code = "import only_on_the_path\nprint(only_on_the_path.VALUE)\n"
    worker = api.launch(startup_code=code, env={variable: value})
    assert api.wait_status(worker["id"], "stopped")["exit_code"] == 0
    if variable == "PYTHONPATH":
        assert api.logs(worker["id"]) == "from PYTHONPATH\n"
    else:
        fresh = subprocess.run(
            [sys.executable, "-c", "print(hash('sense'))"],
            env={**os.environ, variable: value},
            capture_output=True,
            text=True,
            check=True,
        )
        assert api.logs(worker["id"]).split()[0] == fresh.stdout.strip()
    assert (
        f"dashboard {worker['id']} starts in a fresh interpreter: its environment sets {variable}"
        in caplog.text
    )


def test_an_environment_too_large_for_one_message_gets_a_fresh_interpreter(api, caplog):
    caplog.set_level(logging.INFO, logger="sense.local")
    # Three variables of 100 kB: each under the kernel's limit for one, together over a message's.
    large = {f"LARGE_{i}": str(i) * 100_000 for i in range(3)}
    code = "import os\nprint(sum(len(os.environ[f'LARGE_{i}']) for i in range(3)))\n"
    worker = api.launch(startup_code=code, env=large)
    assert api.wait_status(worker["id"], "stopped")["exit_code"] == 0
    assert api.logs(worker["id"]) == "300000\n"
    assert "its environment is too large to hand over in one message" in caplog.text


def test_the_master_of_sense_run_shares_the_console_so_it_gets_a_fresh_interpreter(
    server, project_dir, caplog, capfd
):
    caplog.set_level(logging.INFO, logger="sense.local")
    script = project_dir / "master.py"
    script.write_text(f"import os\nprint('parent', {ENGINE_PARENT})\n")
    master = server.project.run_master(str(script), [])
    assert server.project.wait(master["id"], timeout=30) == 0
    assert f"parent {os.getpid()}" in capfd.readouterr().out
    assert f"dashboard {master['id']} starts in a fresh interpreter: it shares the console" in (
        caplog.text
    )


def test_when_the_prestarted_engine_dies_a_new_one_takes_over_and_its_dashboards_run_on(
    api, project_dir, caplog
):
    caplog.set_level(logging.INFO, logger="sense.local")
    ends_by_itself = api.launch(
        startup_code="import os, time\nwhile not os.path.exists('go'):\n    time.sleep(0.05)\n"
    )
    stopped_later = api.launch(startup_code="")
    for orphan in (ends_by_itself, stopped_later):
        api.wait_status(orphan["id"], "running")
    prestarted = parent_of(api, stopped_later["id"])
    assert FORKSERVER in prestarted.cmdline()

    prestarted.kill()
    wait_for(lambda: "the prestarted engine" in caplog.text and "-9" in caplog.text)
    assert "the exit status of the 2 dashboards it had started will not be known" in caplog.text
    assert api.get(stopped_later["id"])["status"] == "running"

    # This launch finds it gone: a fresh interpreter, and a new prestarted engine for the next.
    fresh = api.launch(startup_code=PRINT_THEN_IDLE.format("'fresh'"))
    assert log_lines(api, fresh["id"]) == ["fresh"]
    assert not is_forked(dashboard_process(api, fresh["id"]))
    assert f"dashboard {fresh['id']} starts in a fresh interpreter: the prestarted engine" in (
        caplog.text
    )
    forked = api.launch(startup_code=PRINT_THEN_IDLE.format("'forked'"))
    assert log_lines(api, forked["id"]) == ["forked"]
    new_prestarted = parent_of(api, forked["id"])
    assert FORKSERVER in new_prestarted.cmdline() and new_prestarted.pid != prestarted.pid

    # Its orphans: their end is still seen (their channel closes), their exit status is not.
    (project_dir / "go").touch()
    ended = api.wait_status(ends_by_itself["id"], "failed")
    assert ended["exit_code"] is None and ended["stopped_at"]
    stopped = api("PUT", f"/dashboards/{stopped_later['id']}/stop").json()
    assert stopped["status"] == "stopped" and stopped["exit_code"] is None
    for running in (fresh, forked):
        stopped = api("PUT", f"/dashboards/{running['id']}/stop").json()
        assert stopped["exit_code"] == 128 + signal.SIGTERM


@pytest.fixture
def own_python_api(project_dir, tmp_path):
    """A server whose dashboards run a Python of their own (a virtual environment made here),
    and that Python's site-packages: what a test installs there changes nothing for the servers
    of the tests that run meanwhile (the engine needs nothing but the standard library)."""
    environment = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", environment], check=True)
    python = str(environment / "bin" / "python")
    purelib = [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]
    site_packages = Path(subprocess.run(purelib, capture_output=True, text=True).stdout.strip())
    with LocalServer(project_dir, grace=1.0, python=python) as server:
        server.attach(set_environ=False)
        yield Api(server), site_packages


def test_a_package_installed_after_the_prestarted_engine_started_imports_in_the_next_workers(
    own_python_api, tmp_path, caplog
):
    api, site_packages = own_python_api
    caplog.set_level(logging.INFO, logger="sense.local")
    # A forked worker: the prestarted engine is up, and has said where it found packages.
    before = api.launch(startup_code="pass")
    assert api.wait_status(before["id"], "stopped")["exit_code"] == 0
    installed = tmp_path / "installed"
    installed.mkdir()
    (installed / "installed_later.py").write_text("VALUE = 'installed later'\n")
    # What an editable install leaves: a .pth file, read by an interpreter as it starts.
    pth = site_packages / f"sense-test-{os.getpid()}.pth"
    pth.write_text(f"{installed}\n")
    try:
        code = "import installed_later\nprint(installed_later.VALUE)\n"
        workers = [api.launch(startup_code=code) for _ in range(2)]
        for worker in workers:
            assert api.wait_status(worker["id"], "stopped", "failed")["exit_code"] == 0
            assert api.logs(worker["id"]) == "installed later\n"
    finally:
        pth.unlink()
    first, second = (worker["id"] for worker in workers)
    assert f"dashboard {first} starts in a fresh interpreter: packages changed in" in caplog.text
    assert f"dashboard {second} starts in a fresh interpreter" not in caplog.text


def test_when_the_servers_environment_changes_what_python_reads_at_start_a_new_engine_serves(
    api, caplog, monkeypatch
):
    caplog.set_level(logging.INFO, logger="sense.local")
    before = api.launch(startup_code=PRINT_THEN_IDLE.format("'before'"))
    assert log_lines(api, before["id"]) == ["before"]
    first_engine = parent_of(api, before["id"])
    # What dask's LocalCluster does to the process that starts it, the server's here.
    monkeypatch.setenv("PYTHONHASHSEED", "6640")
    code = PRINT_THEN_IDLE.format("hash('sense')")
    fresh, forked = api.launch(startup_code=code), api.launch(startup_code=code)
    python = subprocess.run(
        [sys.executable, "-c", "print(hash('sense'))"], capture_output=True, text=True, check=True
    )
    assert log_lines(api, fresh["id"]) == log_lines(api, forked["id"]) == [python.stdout.strip()]
    assert (
        f"dashboard {fresh['id']} starts in a fresh interpreter: the server's environment now "
        "sets PYTHONHASHSEED" in caplog.text
    )
    assert not is_forked(dashboard_process(api, fresh["id"]))
    new_engine = parent_of(api, forked["id"])
    assert FORKSERVER in new_engine.cmdline() and new_engine.pid != first_engine.pid
    # The first one ends after its last dashboard.
    for dashboard in (before, fresh, forked):
        api("PUT", f"/dashboards/{dashboard['id']}/stop")
    first_engine.wait(timeout=10)


def test_a_server_whose_prestarted_engine_cannot_start_serves_as_without_one(
    project_dir, tmp_path, caplog
):
    missing = tmp_path / "no-such-python"
    with LocalServer(project_dir, grace=1.0, python=str(missing)) as server:
        server.attach(set_environ=False)
        assert f"no prestarted engine ([Errno 2] No such file or directory: '{missing}')" in (
            caplog.text
        )
        # As without prestart: each launch tries a fresh interpreter, which cannot start either.
        answer = Api(server)("POST", "/dashboards", json={"master_id": server.master["id"]})
        assert answer.status_code == 400 and "could not start" in answer.json()["error"]


@pytest.mark.timeout(30)
def test_sigkill_of_the_server_ends_forked_workers_and_the_prestarted_engine_within_seconds(
    project_dir,
):
    server = sense_command("server", "--project-dir", str(project_dir), cwd=project_dir)
    try:
        exports = dict(read_exports(server))
        url, token = exports["SENSE_PROJECT_URL"], exports["SENSE_API_TOKEN"]
        master = int(exports["SENSE_DASHBOARD_ID"])
        for _ in range(3):
            answer = requests.post(
                f"{url}/dashboards", json={"master_id": master}, auth=(token, ""), timeout=10
            )
            assert answer.status_code == 201
        # Two processes each: the engine, forked from the prestarted one, and its job.
        workers = wait_for(
            lambda: len(engine_processes(project_dir)) == 6 and engine_processes(project_dir)
        )
        [prestarted] = psutil.Process(server.pid).children()
        assert FORKSERVER in prestarted.cmdline()
        assert len([w for w in workers if w.parent() == prestarted]) == 3
    finally:
        server.kill()
        server.wait()
        server.stdout.close()
    alive = left_running([*workers, prestarted], timeout=5)
    assert not alive, f"outlived their server: {alive}"


def test_sense_run_no_prestart_starts_every_worker_in_a_fresh_interpreter(project_dir):
    worker_code = f"import os; print('worker parent', {ENGINE_PARENT})"
    (project_dir / "job.py").write_text(
        "import os, sense\n"
        f"print('master parent', {ENGINE_PARENT}, flush=True)\n"
        f"code = {worker_code!r}\n"
        "sense.awaitWorkers(sense.launchWorkers(1, startupCode=code), wait_for_completion=True)\n"
    )
    run = sense_command("run", "--no-prestart", "job.py", cwd=project_dir)
    output, _ = run.communicate(timeout=30)
    assert run.returncode == 0, output
    assert f"master parent {run.pid}" in output
    assert f"worker parent {run.pid}" in output


def test_local_start_without_prestart_starts_workers_in_fresh_interpreters(
    project_dir, monkeypatch
):
    import sense
    import sense.local

    for name in [name for name in os.environ if name.startswith("SENSE_")]:
        monkeypatch.delenv(name)
    with sense.local.start(project_dir, grace=1.0, prestart=False) as server:
        workers = sense.launchWorkers(2, startupCode=f"import os; print({ENGINE_PARENT})")
        sense.awaitWorkers(workers, wait_for_completion=True)
        logs = [b"".join(server.project.read_logs(worker["id"])[1]) for worker in workers]
    assert logs == [f"{os.getpid()}\n".encode()] * 2


def test_no_prestart_goes_with_the_local_and_ray_backends_only(project_dir):
    run = sense_command("server", "--no-prestart", "--backend", "slurm", cwd=project_dir)
    output, _ = run.communicate(timeout=30)
    assert run.returncode == 1
    assert "--no-prestart goes with --backend local or ray" in output
