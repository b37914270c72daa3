"""Ctrl-C of a dashboard (``sense run`` passes its own on to the master script): it reaches
the job as an interrupt whenever it comes, even while the engine forks the job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import install_backend, sense_command
from plugins.late_backend import GO
from waiting import wait_for

pytestmark = pytest.mark.timeout(90)

#: Loaded by the dashboard's interpreter (its PYTHONPATH): the engine's fork of its job
#: pauses, signals blocked, until the test says go.
PAUSED_FORK = textwrap.dedent(
    """
    import os, time

    def pause(engine=os.getpid(), paused=[]):
        if os.getpid() != engine or paused:
            return
        paused.append(True)
        open(os.path.join(os.environ["PAUSE_DIR"], "forking"), "w").close()
        go = os.path.join(os.environ["PAUSE_DIR"], "go")
        deadline = time.monotonic() + 60
        while not os.path.exists(go) and time.monotonic() < deadline:
            time.sleep(0.01)

    os.register_at_fork(before=pause)
    """
)


def test_an_interrupt_while_the_engine_forks_the_job_reaches_the_job(api, tmp_path):
    pause_dir = tmp_path / "pause"
    pause_dir.mkdir()
    (pause_dir / "sitecustomize.py").write_text(PAUSED_FORK)
    # PYTHONPATH makes it a fresh interpreter (not forked from the prestarted engine).
    env = {"PYTHONPATH": str(pause_dir), "PAUSE_DIR": str(pause_dir)}
    worker = api.launch(startup_code="import time\ntime.sleep(60)\n", env=env)
    wait_for(lambda: (pause_dir / "forking").exists(), 30, what="the engine to fork its job")
    api.server.project.interrupt(worker["id"])
    (pause_dir / "go").touch()
    ended = api.wait_status(worker["id"], "stopped", "failed", timeout=30)
    # As `python -c` ends of an uncaught KeyboardInterrupt: killed by SIGINT.
    assert ended["exit_code"] == -signal.SIGINT
    assert "KeyboardInterrupt" in api.logs(worker["id"])


@pytest.fixture
def late_installed(tmp_path) -> dict[str, str]:
    """The environment of a ``sense`` command that has the ``late`` backend installed, as a
    third party would: a distribution with an entry point."""
    site = install_backend(tmp_path / "site", "late", "plugins.late_backend:LateBackend")
    return {"PYTHONPATH": os.pathsep.join([str(site), str(Path(__file__).parent)])}


def test_ctrl_c_before_sense_run_waits_for_its_script_reaches_the_script(
    project_dir, late_installed
):
    (project_dir / "job.py").write_text(
        "import time\n"
        "try:\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(60)\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted')\n"
    )
    run = sense_command("run", "--backend", "late", "job.py", cwd=project_dir, env=late_installed)
    # The script runs; `sense run` is still in its launch.
    assert run.stdout.readline().strip() == "ready"
    run.send_signal(signal.SIGINT)
    (project_dir / GO).touch()
    output, _ = run.communicate(timeout=60)
    assert "interrupted" in output
    assert run.returncode == 0, output


#: A server started where SIGINT is ignored (a script's `cmd &`, nohup, a CI runner), which
#: launches a job, interrupts it once it runs, and prints how it ended.
IGNORING_SERVER = textwrap.dedent(
    """
    import signal, sys, time
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a background job of a script has it
    from sense.local import LocalServer
    from sense.local.models import LaunchRequest

    code = "import time; print('up', flush=True); time.sleep(60)"
    with LocalServer(sys.argv[1], grace=1.0, prestart=sys.argv[2] == "prestart") as server:
        server.attach(set_environ=False)
        project = server.project
        row = project.launch(LaunchRequest(startup_code=code, master_id=server.master["id"]))
        deadline = time.monotonic() + 60
        while b"up" not in b"".join(project.backend.read_logs(row["id"])):
            assert time.monotonic() < deadline, "the job never ran"
            time.sleep(0.05)
        project.interrupt(row["id"])
        while project.get(row["id"])["status"] in ("starting", "running"):
            if time.monotonic() > deadline:
                project.stop(row["id"])
            time.sleep(0.05)
        print(project.get(row["id"])["exit_code"])
    """
)


@pytest.mark.parametrize("engine", ["prestart", "fresh"])
def test_an_interrupt_reaches_the_job_of_a_server_that_ignores_sigint(tmp_path, engine):
    # The lost interrupts "on a busy machine": the suite ran in the background.
    completed = subprocess.run(
        [sys.executable, "-c", IGNORING_SERVER, str(tmp_path), engine],
        capture_output=True,
        text=True,
        timeout=80,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split() == [str(-signal.SIGINT)]
