"""Logs of any size are served and followed in little memory; a log past its cap starts anew.

The memory checks measure a real server's (or ``sense run``'s) resident
memory with psutil while it serves a log many times larger than the bound:
what is checked is how much it grows, not how fast anything goes.
"""

from __future__ import annotations

import io
import threading

import psutil
import pytest
import requests
from conftest import Api, read_exports, sense_command, wait_for

from sense.local import LocalServer
from sense.local.console import MAX_LINE, LogFollower

pytestmark = pytest.mark.timeout(60)

MiB = 1024 * 1024
#: How much a process may grow while it serves or follows a log far larger than that.
BOUND = 40 * MiB


class PeakMemory:
    """The largest resident memory of process ``pid`` while the block runs, sampled every 5 ms."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.before = self.process.memory_info().rss
        self.peak = self.before
        self._done = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(0.005):
            self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.before

    def __enter__(self) -> PeakMemory:
        self._sampler.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._done.set()
        self._sampler.join()


def test_logs_are_served_from_an_offset_or_from_the_end_with_their_size(api):
    worker = api.launch(startup_code="print('0123456789', end='')")
    api.wait_status(worker["id"], "stopped")
    path = f"/dashboards/{worker['id']}/logs"

    def logs(offset=None):
        answer = api("GET", path, params=None if offset is None else {"offset": offset})
        assert answer.status_code == 200, answer.text
        assert answer.headers["X-Log-Size"] == "10"
        return answer.text

    assert logs() == logs(0) == "0123456789"
    assert logs(4) == "456789"
    assert logs(-3) == "789"
    assert logs(-100) == "0123456789"
    assert logs(10) == logs(1000) == ""


def test_a_follower_asks_for_what_is_new_only(api, project_dir):
    release = project_dir / "release"
    code = (
        f"import os, time\nprint('first')\nwhile not os.path.exists({str(release)!r}):\n"
        "    time.sleep(0.02)\nprint('second')\n"
    )
    worker = api.launch(startup_code=code)
    path = f"/dashboards/{worker['id']}/logs"
    wait_for(lambda: api.logs(worker["id"]) == "first\n")
    size = int(api("GET", path).headers["X-Log-Size"])
    release.touch()
    api.wait_status(worker["id"], "stopped")
    rest = api("GET", path, params={"offset": size})
    assert rest.text == "second\n"
    assert int(rest.headers["X-Log-Size"]) == size + len("second\n")


def test_an_offset_that_is_not_a_number_is_refused_naming_it(api, server):
    answer = api("GET", f"/dashboards/{server.master['id']}/logs", params={"offset": "end"})
    assert answer.status_code == 422
    assert answer.json()["error"].startswith("offset:")


def test_serving_a_large_log_takes_memory_independent_of_its_size(project_dir):
    server = sense_command("server", "--log-cap", "200", cwd=project_dir)
    try:
        exports = dict(read_exports(server))
        url, auth = exports["SENSE_PROJECT_URL"], (exports["SENSE_API_TOKEN"], "")
        code = (
            "import sys\nline = b'x' * (2**20 - 1) + b'\\n'\n"
            "for _ in range(150):\n    sys.stdout.buffer.write(line)\n"
        )
        body = {"master_id": exports["SENSE_DASHBOARD_ID"], "code": code}
        worker = requests.post(f"{url}/dashboards", json=body, auth=auth, timeout=10).json()

        def ended():
            answer = requests.get(f"{url}/dashboards/{worker['id']}", auth=auth, timeout=10)
            return answer.json()["status"] == "stopped"

        wait_for(ended, timeout=30)
        received = 0
        with PeakMemory(server.pid) as memory:
            logs = f"{url}/dashboards/{worker['id']}/logs"
            with requests.get(logs, auth=auth, timeout=30, stream=True) as answer:
                for chunk in answer.iter_content(MiB):
                    received += len(chunk)
        assert memory.growth < BOUND, f"the server grew by {memory.growth / MiB:.0f} MiB"
        assert received == 150 * MiB
        assert answer.headers["X-Log-Size"] == str(150 * MiB)
    finally:
        server.terminate()
        server.communicate(timeout=30)


def numbered_lines(count: int) -> str:
    """Startup code that prints the numbers below ``count``, one a line, at once."""
    return f"import sys\nsys.stdout.write(''.join(f'{{i}}\\n' for i in range({count})))\n"


def test_a_log_past_its_cap_is_set_aside_and_starts_anew(project_dir):
    with LocalServer(project_dir, grace=1.0, log_cap=MiB) as server:
        server.attach(set_environ=False)
        api = Api(server)
        worker = api.launch(startup_code=numbered_lines(300_000))  # 2 MiB: two caps
        api.wait_status(worker["id"], "stopped")
        log = server.state.log_path(worker["id"])
        set_aside = log.with_name(log.name + ".1")
        assert 0 < log.stat().st_size <= MiB and 0 < set_aside.stat().st_size <= MiB
        kept = (set_aside.read_text() + log.read_text()).split()
        # The latest output is kept, without a gap; the oldest was dropped.
        assert kept == [str(i) for i in range(int(kept[0]), 300_000)]
        # The route serves what is kept; its offsets count every byte written, the dropped
        # ones included, so that a follower's offset stays good across a new start.
        answer = api("GET", f"/dashboards/{worker['id']}/logs")
        assert answer.text == set_aside.read_text() + log.read_text()
        assert int(answer.headers["X-Log-Size"]) >= len(answer.content)
        tail = api("GET", f"/dashboards/{worker['id']}/logs", params={"offset": -7})
        assert tail.text == "299999\n"


def test_the_follower_reads_a_log_that_was_set_aside_meanwhile(project_dir):
    with LocalServer(project_dir, grace=1.0, log_cap=MiB) as server:
        server.attach(set_environ=False)
        api = Api(server)
        out = io.StringIO()
        follower = LogFollower(server.project, out, after=1)
        worker = api.launch(startup_code=numbered_lines(200_000))  # 1.3 MiB: one cap
        api.wait_status(worker["id"], "stopped")
        follower.poll()
        assert out.getvalue() == "".join(f"[worker {worker['id']}] {i}\n" for i in range(200_000))


def test_sense_run_follows_a_huge_line_without_an_end_in_bounded_memory(project_dir):
    (project_dir / "job.py").write_text(
        "import os, sense, time\n"
        "print('ready', flush=True)\n"
        "while not os.path.exists('go'):\n"
        "    time.sleep(0.02)\n"
        "code = 'import sys\\nfor _ in range(64):\\n    sys.stdout.buffer.write(b\"y\" * 2**20)'\n"
        "sense.awaitWorkers(sense.launchWorkers(1, startupCode=code), wait_for_completion=True)\n"
    )
    run = sense_command("run", "job.py", cwd=project_dir)
    assert run.stdout.readline() == "ready\n"
    with PeakMemory(run.pid) as memory:
        (project_dir / "go").touch()
        pieces = [line for line in run.stdout if line.startswith("[worker 2] ")]
        run.wait(timeout=30)
    assert memory.growth < BOUND, f"sense run grew by {memory.growth / MiB:.0f} MiB"
    assert run.returncode == 0
    assert sum(len(piece) - len("[worker 2] \n") for piece in pieces) == 64 * MiB
    assert len(pieces) == 64 * MiB // MAX_LINE
