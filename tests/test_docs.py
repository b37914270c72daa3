"""The documentation builds, with warnings as errors: a broken link or a missing name fails.

The README's links into it are checked too.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(300)
def test_the_documentation_builds_without_a_warning(tmp_path):
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {"NO_MKDOCS_2_WARNING": "1"},
    )
    assert build.returncode == 0, build.stderr
    command_page = (tmp_path / "cli" / "index.html").read_text()
    for command in ("run", "server", "ps", "logs", "stop", "env"):
        assert f"usage: sense {command}" in command_page
    rest_page = (tmp_path / "rest-api" / "index.html").read_text()
    assert "/users/{owner_id}/projects/{project_id}/dashboards/{dashboard_id}/logs" in rest_page


def test_every_link_of_the_readme_to_a_file_of_the_project_finds_it():
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", readme)
    assert "docs/index.md" in targets
    assert [target for target in targets if not (ROOT / target).exists()] == []
