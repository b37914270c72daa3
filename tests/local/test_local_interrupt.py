"""Ctrl-C of a dashboard (``sense run`` passes its own on to the master script): it reaches
the job as an interrupt whenever it comes, even while the engine forks the job."""

from __future__ import annotations

import os
import signal
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
