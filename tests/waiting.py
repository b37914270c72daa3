"""Waiting in tests for something that happens in another process, without a fixed sleep.

Example
-------
>>> wait_for(lambda: server.is_up(), what="the server")        # doctest: +SKIP
>>> assert not left_running(processes, timeout=30)              # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import time

import psutil
import pytest

#: Seconds between two looks at what is awaited.
INTERVAL = 0.05
#: The first and the longest pause of :func:`wait_for`: each pause is half as long again as the
#: one before, so that a long wait looks less often (a look is often a request to a server of
#: the test's own process: 6 ms of CPU, measured, which a wait at every 0.05 s made 12% of a core).
FIRST_PAUSE, LONGEST_PAUSE = 0.02, 0.2
#: The one bound of a wait, generous: on a machine whose cores are all busy, a server that
#: starts in a second alone took over 10 s to print its first line.
GENEROUS = 60.0


def wait_for(condition, timeout: float = GENEROUS, *, what: str = ""):
    """Poll ``condition()`` until it returns something true; return that, or fail saying
    ``what`` (by default the condition's name) was awaited."""
    deadline = time.monotonic() + timeout
    pause = FIRST_PAUSE
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what or condition.__name__}")
        time.sleep(pause)
        pause = min(pause * 1.5, LONGEST_PAUSE)


def left_running(processes, timeout: float) -> list[psutil.Process]:
    """Those of ``processes`` still running once they have all ended, or ``timeout`` s passed.

    A zombie has ended: only its parent has not reaped it yet (on a busy machine that
    takes a while). Those that are children of this process are reaped here.
    """
    alive = list(processes)
    deadline = time.monotonic() + timeout
    while alive:
        # psutil's wait reaps the children of this process among them.
        _, alive = psutil.wait_procs(alive, timeout=INTERVAL)
        alive = [process for process in alive if _running(process)]
        if time.monotonic() > deadline:
            break
    return alive


def strays(processes, timeout: float) -> list[psutil.Process]:
    """:func:`left_running`, and those are killed: a leak check fails without leaving them."""
    alive = left_running(processes, timeout)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    return alive


def _running(process: psutil.Process) -> bool:
    try:
        # is_running() first: it tells a process from a later one that has the same pid.
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:  # a ZombieProcess too
        return False
