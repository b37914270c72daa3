"""Write ``docs/web-page.png``: the local server's web page with a few dashboards, for the README.

Run by hand when the page changes (about 40 seconds, to gather a chart)::

    pip install -e '.[test]' && python docs/screenshot.py

It needs Debian's ``chromium`` (see ``tests/local/browser.py``).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "local"))

from browser import chromium  # noqa: E402  (a helper of the tests, found through sys.path)

from sense.local import LocalServer  # noqa: E402
from sense.local.web import token_url  # noqa: E402

OUTPUT = HERE / "web-page.png"
SECONDS_OF_LOAD = 30
#: Workers as a session would launch them: (name, startup code).
WORKERS = [
    ("loader", "print('loaded 48 shards')"),
    ("bad-seed", "raise ValueError('seed must be positive')"),
    (
        "trainer",
        "import time, itertools\n"
        "for step in itertools.count(1):\n"
        "    end = time.time() + 0.6\n"
        "    while time.time() < end: pass\n"
        "    print(f'step {step:4d}  loss {2.5 / step ** 0.5:.4f}  lr 3e-4', flush=True)\n"
        "    time.sleep(0.4)\n",
    ),
    (
        "feature-store",
        "import time\nblob = bytearray(120 * 2**20)\n"
        "print('serving features on', __import__('os').environ['SENSE_PROJECT_IP'], flush=True)\n"
        "time.sleep(600)\n",
    ),
    ("worker", "import time\nprint('ready', flush=True)\ntime.sleep(600)\n"),
]


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        project = Path(directory) / "demo"
        project.mkdir()
        with LocalServer(project, grace=1.0) as server:
            auth = (server.project.info.token, "")
            master = requests.post(
                f"{server.project_url}/dashboards", json={"name": "main"}, auth=auth, timeout=30
            ).json()
            while (
                requests.get(
                    f"{server.project_url}/dashboards/{master['id']}", auth=auth, timeout=30
                ).json()["status"]
                == "starting"
            ):
                time.sleep(0.1)
            for name, code in WORKERS:
                answer = requests.post(
                    f"{server.project_url}/dashboards",
                    json={"name": name, "code": code, "master_id": master["id"]},
                    auth=auth,
                    timeout=30,
                )
                answer.raise_for_status()
            with chromium() as browser:
                page = browser.new_page(
                    viewport={"width": 1280, "height": 900}, color_scheme="light"
                )
                page.goto(token_url(server.url, server.project.info.token))
                page.get_by_role("radio", name="All").check()
                time.sleep(SECONDS_OF_LOAD)
                page.get_by_role("button", name="Output of worker 4").click()
                page.get_by_role("log").get_by_text("step", exact=False).first.wait_for()
                time.sleep(3)
                page.evaluate("window.scrollTo(0, 0)")
                page.screenshot(path=str(OUTPUT), full_page=True)
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
