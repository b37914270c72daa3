"""Load on the local server: many concurrent launches, round after round, leave nothing behind."""

from __future__ import annotations

import os

import psutil
import pytest
from waiting import left_running

import sense
from sense.local import LocalServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600), pytest.mark.processes_unmeasured]

WORKERS = 200
ROUNDS = 3  # the first fills the connection pools; the next two show the descriptors stay put


@pytest.fixture
def master_of_a_big_project(tmp_path, clean_env):
    server = LocalServer(tmp_path / "project", max_workers=WORKERS)
    server.attach(set_environ=False)
    for name, value in server.master_environment().items():
        clean_env.setenv(name, value)
    yield server
    server.stop()


def test_rounds_of_200_concurrent_launches_leave_no_process_zombie_or_descriptor(
    master_of_a_big_project, monkeypatch
):
    monkeypatch.setattr(sense, "THREAD_POOL_SIZE", 20)
    this_process = psutil.Process(os.getpid())
    open_files = []
    for _ in range(ROUNDS):
        launched = sense.launchWorkers(WORKERS)  # no startup code: each idles until stopped
        ids = [worker["id"] for worker in launched]
        assert len(set(ids)) == WORKERS
        awaited = sense.awaitWorkers(launched, timeout_seconds=120)
        assert awaited["failures"] == []
        # The workers, and whatever they started: all in the project (the prestarted engine the
        # workers were forked from runs in /, and stays).
        processes = [
            process
            for process in this_process.children(recursive=True)
            if process.cwd() == master_of_a_big_project.project_dir
        ]
        assert len(processes) >= WORKERS

        stopped = sense.stopWorkers()

        assert sorted(d["id"] for d in stopped) == sorted(ids)
        assert [d["id"] for d in sense.getWorkers()] == [sense.getMaster()["id"]]
        alive = left_running(processes, timeout=10)
        assert alive == []
        zombies = [p for p in this_process.children(recursive=True) if p.status() == "zombie"]
        assert zombies == []
        open_files.append(this_process.num_fds())

    # Descriptors settle after the first round (connection pools fill up), then stay put.
    assert max(open_files[1:]) - open_files[1] <= 5, open_files
