"""The coverage data files of the suite's processes, and those that a kill cut short.

Coverage measures every Python process the suite starts (``patch = ["subprocess"]`` in
pyproject.toml) but those given :func:`unmeasured` environments, and each writes its
``.coverage.*`` file as it exits. The suite SIGKILLs
processes on purpose (a stop's grace period run out, a server killed to show nothing
outlives it); one killed while it writes leaves part of a file, since coverage writes it
without a journal. Coverage's combine step warns about each such file in the middle of
pytest's output, and keeps it, so it warns again in every later run. Its data is lost
either way: it is discarded before the combine step.

Example
-------
>>> discard_unreadable(Path(".coverage"))        # doctest: +SKIP
[PosixPath('.coverage.vm.pid1343.XFoOUXsx')]
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from coverage import CoverageData
from coverage.exceptions import CoverageException

#: What makes a Python process started with it measure itself (``patch = ["subprocess"]``).
SUBPROCESS_VARIABLE = "COVERAGE_PROCESS_CONFIG"


def unmeasured(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` for processes that run no sense code of this checkout: coverage would
    only slow them down."""
    return {name: value for name, value in environ.items() if name != SUBPROCESS_VARIABLE}


def discard_unreadable(data_file: Path) -> list[Path]:
    """Remove the parallel data files of ``data_file`` that coverage cannot read; those."""
    discarded = []
    for path in data_file.parent.glob(f"{data_file.name}.*"):
        try:
            # As coverage's combine step reads each one.
            CoverageData(str(path), read_only=True).read()
        except CoverageException:
            path.unlink(missing_ok=True)
            discarded.append(path)
    return discarded
