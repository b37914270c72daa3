"""Item 3: ``import sense`` next to ``import requests``, by ``python -X importtime``.

python benchmarks/import_time.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys

RUNS = 21


def cumulative_us(module: str) -> int:
    """The cumulative import time of ``module``, in microseconds, in a fresh interpreter."""
    stderr = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    for line in stderr.splitlines():
        # "import time: SELF | CUMULATIVE | NAME", NAME indented by its depth
        *_, cumulative, name = (part.strip() for part in line.split("|"))
        if name == module:
            return int(cumulative)
    raise RuntimeError(f"{module} not in the import times")


def measure() -> dict[str, float]:
    results = {}
    for module in ("sense", "requests"):
        cumulative_us(module)  # the first run compiles bytecode: not what a user pays twice
        results[module] = statistics.median(cumulative_us(module) for _ in range(RUNS))
    return results


def report(results: dict[str, float]) -> str:
    ratio = results["sense"] / results["requests"]
    return (
        "| import | median cumulative (ms) |\n|---|---|\n"
        f"| sense | {results['sense'] / 1000:.1f} |\n"
        f"| requests | {results['requests'] / 1000:.1f} |\n\n"
        f"sense / requests = {ratio:.2f} (target: at most 0.20)"
    )


if __name__ == "__main__":
    print(report(measure()))
