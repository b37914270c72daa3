"""Skipping a test whose requirement this machine lacks, unless CI demands every test.

``.ci/run`` sets ``SENSE_REQUIRE_ALL_TESTS=1``: there a missing requirement
(a browser, an SSH client, root) fails the test instead of skipping it, so
that CI never passes by running less.

Example
-------
>>> require(shutil.which("chromium") is not None, "no chromium")  # doctest: +SKIP
"""

from __future__ import annotations

import os

import pytest

REQUIRE_ALL = os.environ.get("SENSE_REQUIRE_ALL_TESTS") == "1"


def require(available: bool, reason: str) -> None:
    """Skip the calling test with ``reason`` unless ``available``; fail instead under CI."""
    if available:
        return
    if REQUIRE_ALL:
        pytest.fail(f"{reason} (SENSE_REQUIRE_ALL_TESTS=1: every test must run)")
    pytest.skip(reason)
