"""The leak checks' waiting: a process that has ended counts as ended, reaped or not."""

from __future__ import annotations

import os
import subprocess
import sys

import psutil
import pytest
from waiting import left_running, strays, wait_for

#: A parent that forks a child which exits at once, prints the child's pid and never reaps it.
UNREAPED_CHILD = (
    "import os, sys, time\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    os._exit(0)\n"
    "print(pid, flush=True)\n"
    "time.sleep(120)\n"
)


def is_zombie(process: psutil.Process) -> bool:
    return process.status() == psutil.STATUS_ZOMBIE


def test_a_zombie_that_its_parent_does_not_reap_has_ended():
    parent = subprocess.Popen([sys.executable, "-c", UNREAPED_CHILD], stdout=subprocess.PIPE)
    try:
        child = psutil.Process(int(parent.stdout.readline()))
        wait_for(lambda: is_zombie(child), 30, what="the child to end")
        assert left_running([child], timeout=30) == []
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()


def test_a_child_of_this_process_that_ended_is_reaped_and_has_ended():
    child = psutil.Process(subprocess.Popen([sys.executable, "-c", "pass"]).pid)
    wait_for(lambda: is_zombie(child), 30, what="the child to end")
    assert left_running([child], timeout=30) == []
    with pytest.raises(ChildProcessError):  # reaped already
        os.waitpid(child.pid, os.WNOHANG)


def test_what_still_runs_is_left_running_and_strays_kills_it():
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    process = psutil.Process(sleeper.pid)
    assert left_running([process], timeout=0.2) == [process]
    assert strays([process], timeout=0.2) == [process]
    assert sleeper.wait(timeout=30) == -9
