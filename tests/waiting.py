"""Waiting in tests for something that happens in another process, without a fixed sleep.

Example
-------
>>> wait_for(lambda: server.is_up(), what="the server")        # doctest: +SKIP
"""

from __future__ import annotations

import time

import pytest


def wait_for(condition, timeout: float = 10.0, interval: float = 0.05, *, what: str = ""):
    """Poll ``condition()`` until it returns something true; return that, or fail saying
    ``what`` (by default the condition's name) was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what or condition.__name__}")
        time.sleep(interval)
