"""The suite's coverage data: a file cut short by a kill is discarded before the combine step."""

from __future__ import annotations

import subprocess
import sys

from coverage import CoverageData
from coverage_files import discard_unreadable


def test_data_files_cut_short_are_discarded_and_whole_ones_kept(tmp_path):
    whole = CoverageData(str(tmp_path / ".coverage.whole"))
    whole.add_lines({str(tmp_path / "job.py"): [1, 2, 3]})
    whole.write()
    written = (tmp_path / ".coverage.whole").read_bytes()
    (tmp_path / ".coverage.empty").write_bytes(b"")  # killed as it created the file
    (tmp_path / ".coverage.cut").write_bytes(written[:8192])  # killed as it wrote
    assert sorted(p.name for p in discard_unreadable(tmp_path / ".coverage")) == [
        ".coverage.cut",
        ".coverage.empty",
    ]
    combine = subprocess.run(
        [sys.executable, "-m", "coverage", "combine", "--data-file", ".coverage"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert combine.returncode == 0, combine.stderr
    assert "Warning" not in combine.stdout + combine.stderr
    assert [p.name for p in tmp_path.iterdir()] == [".coverage"]
