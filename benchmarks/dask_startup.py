"""Item 6: from ``SenseCluster(n_workers=N)`` until N dask workers are connected.

    pip install -e '.[bench]'
    python benchmarks/dask_startup.py [N ...]

Side by side, for N = 4 and 16: ``sense.dask.SenseCluster`` on a local server
(already running, as the platform was; this process is the master), each dask
worker a worker dashboard forked from the prestarted engine, and
``distributed.LocalCluster(n_workers=N, processes=True, threads_per_worker=1)``,
each worker a process its Nanny spawns. Both: the cluster, a ``Client``, and one
``client.run`` on every worker; no dask dashboard; one thread per worker.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cluster_startup import SenseCluster as LocalProject  # noqa: E402
from cluster_startup import dask_cluster_time, dask_time  # noqa: E402

SIZES = (4, 16)
RUNS = 3
NAMES = ("sense", "local")


def sense_time(n: int) -> float:
    from sense.dask import SenseCluster

    return dask_cluster_time(
        lambda: SenseCluster(n_workers=n, scheduler_options={"dashboard": False})
    )


def measure() -> dict[str, dict[int, float]]:
    """Medians over ``RUNS`` rounds, each taking every size and both clusters in turn."""
    samples: dict[str, dict[int, list[float]]] = {name: {n: [] for n in SIZES} for name in NAMES}
    with LocalProject(prestart=True) as project:
        project.master()
        sense_time(min(SIZES))  # warm: the first request imports requests, dask its modules
        for _ in range(RUNS):
            for n in SIZES:
                samples["sense"][n].append(sense_time(n))
                samples["local"][n].append(dask_time(n))
    return {
        name: {n: statistics.median(values) for n, values in by_size.items()}
        for name, by_size in samples.items()
    }


def report(results: dict[str, dict[int, float]]) -> str:
    lines = [
        "| N | SenseCluster (s) | LocalCluster, processes (s) | SenseCluster / LocalCluster |",
        "|---|---|---|---|",
    ]
    for n in SIZES:
        on_sense, local = results["sense"][n], results["local"][n]
        lines.append(f"| {n} | {on_sense:.2f} | {local:.2f} | {on_sense / local:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1:  # a quick look at other sizes, one run each
        SIZES, RUNS = tuple(int(n) for n in sys.argv[1:]), 1
    print(report(measure()))
