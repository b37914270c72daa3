"""A real headless Chromium for the web page's tests: Debian's package, driven by Playwright.

Playwright's own browsers are never downloaded (``playwright install`` fails
offline): it drives the ``chromium`` that ``.ci/run`` installs with apt.

Example
-------
>>> with chromium() as browser:                       # doctest: +SKIP
...     page = browser.new_page()
"""

from __future__ import annotations

import contextlib
import importlib.util
import os

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def missing() -> str | None:
    """Why the browser cannot run here, or None."""
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install playwright)"
    if not os.access(CHROMIUM, os.X_OK):
        return f"Debian's chromium is not installed ({CHROMIUM}; apt-get install chromium)"
    return None


@contextlib.contextmanager
def chromium():
    """A headless Chromium, closed at the end of the block."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()
