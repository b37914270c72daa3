"""What a worker prints reaches the ``sense run`` console as a terminal multiplexer lets it:
colours kept, nothing that rewrites the screen, the window title, the clipboard, or another
worker's ``[worker N]``."""

from __future__ import annotations

import os
import subprocess

import pytest
from conftest import SENSE

pytestmark = pytest.mark.timeout(60)

#: What the worker prints, one line each (print's own newline ends the last).
TRICKS = [
    "\x1b[31mred\x1b[0m",
    "honest\r[worker 99] forged over the line",
    "backspaces\b\b\b\b\b\b\b\b\b\b\b\b[worker 98] forged again",
    "\x1b]0;a new window title\x07after the title",
    "\x1b]52;c;cGFzdGVk\x1b\\after the clipboard",
    "\x1b[2J\x1b[Hafter clearing the screen",
    "\x9b2Jan 8-bit CSI, \x07a bell",
    "\tindented",
]


def sense_run_bytes(project_dir, script: str) -> bytes:
    """``sense run SCRIPT`` to its end; its console output as bytes, every ``\\r`` included."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENSE_")}
    run = subprocess.run(
        [*SENSE, "run", script],
        cwd=project_dir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=30,
    )
    assert run.returncode == 0, run.stdout
    return run.stdout


def test_a_workers_escape_sequences_and_control_characters_do_not_reach_the_console(
    project_dir,
):
    (project_dir / "job.py").write_text(
        "import sense\n"
        f"code = {f'print(*{TRICKS!r}, sep=chr(10))'!r}\n"
        "workers = sense.launchWorkers(1, startupCode=code)\n"
        "sense.awaitWorkers(workers, wait_for_completion=True)\n"
        "print('master done', flush=True)\n"
    )
    output = sense_run_bytes(project_dir, "job.py")
    lines = output.decode().splitlines()
    worker = [line for line in lines if line.startswith("[worker ")]
    assert len(worker) == len(TRICKS), lines
    assert all(line.startswith("[worker 2] ") for line in worker)
    assert worker[0] == "[worker 2] \x1b[31mred\x1b[0m\x1b[0m"  # colours stay
    assert "[worker 2] honest[worker 99] forged over the line" in worker
    assert "[worker 2] backspaces[worker 98] forged again" in worker
    assert "[worker 2] after the title" in worker
    assert "[worker 2] after the clipboard" in worker
    assert "[worker 2] after clearing the screen" in worker
    assert "[worker 2] 2Jan 8-bit CSI, a bell" in worker
    assert "[worker 2] \tindented" in worker
    for forbidden in (b"\r", b"\b", b"\x07", b"\x1b]", b"\x1b[2J", "\x9b".encode()):
        assert forbidden not in output
