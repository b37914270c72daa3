"""Item 4: the local server — listing latency with 1,000 stored dashboards, and launches per second.

    python benchmarks/local_server.py

A :class:`sense.local.LocalServer` on a throwaway project directory, this
process its master. 1,000 ended worker dashboards are put in its store (as
a long-used project would have them), then ``GET .../dashboards`` is timed
sequentially: p50 and p99. Launches per second: ``launchWorkers(100)`` of
workers that exit at once (``startupCode="pass"``), through the client with
its default pool, from the call until all 100 answers are back; the quota
(``max_workers``) is raised to let all 100 run at once.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import requests

import sense

STORED = 1000
LISTINGS = 200
LAUNCHES = 100
RUNS = 5


def fill(server, master_id: int, count: int) -> None:
    """``count`` ended workers of ``master_id``, shaped as launched ones are."""
    from sense.local.backends.local import project_ip
    from sense.local.store import now

    store = server.project.store
    for _ in range(count):
        row = store.insert(
            name="worker",
            status="stopped",
            kind="api",
            master_id=master_id,
            startup_code="print('hello from a worker')",
            env={"GREETING": "hello"},
            started_at=now(),
        )
        store.update(
            row["id"],
            project_ip=project_ip(row["id"]),
            public_port_mapping={"41000": 41000},
            exit_code=0,
            stopped_at=now(),
            handle={"pid": 1, "start_time": "0"},
        )


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def measure() -> dict[str, float]:
    from sense.local import LocalServer

    with LocalServer(tempfile.mkdtemp(prefix="sense-bench-"), max_workers=LAUNCHES) as server:
        master = server.attach(set_environ=False)
        saved = dict(os.environ)
        os.environ.update(server.master_environment())
        try:
            fill(server, master["id"], STORED)
            session = requests.Session()
            session.auth = (server.project.info.token, "")
            url = f"{server.project_url}/dashboards"
            assert len(session.get(url).json()) == STORED + 1
            latencies = []
            for _ in range(LISTINGS):
                started = time.perf_counter()
                session.get(url).raise_for_status()
                latencies.append(time.perf_counter() - started)

            rates, completions = [], []
            sense.launchWorkers(4, startupCode="pass")  # warm: the client's session, the imports
            sense.awaitWorkers(wait_for_completion=True)
            for _ in range(RUNS):
                started = time.perf_counter()
                launched = sense.launchWorkers(LAUNCHES, startupCode="pass")
                rates.append(LAUNCHES / (time.perf_counter() - started))
                sense.awaitWorkers(launched, wait_for_completion=True, timeout_seconds=120)
                completions.append(LAUNCHES / (time.perf_counter() - started))
        finally:
            os.environ.clear()
            os.environ.update(saved)
    return {
        "list_p50": percentile(latencies, 0.50),
        "list_p99": percentile(latencies, 0.99),
        "launches_per_s": statistics.median(rates),
        "completed_per_s": statistics.median(completions),
        "pool_size": sense.THREAD_POOL_SIZE,
    }


def report(results: dict[str, float]) -> str:
    return "\n".join(
        [
            "| what | median |",
            "|---|---|",
            f"| `GET .../dashboards` with {STORED:,} stored, p50 | "
            f"{results['list_p50'] * 1000:.1f} ms |",
            f"| `GET .../dashboards` with {STORED:,} stored, p99 | "
            f"{results['list_p99'] * 1000:.1f} ms |",
            f"| launches per second (`launchWorkers({LAUNCHES})`, pool "
            f"{results['pool_size']}, until every answer is back) | "
            f"{results['launches_per_s']:.0f} /s |",
            f'| workers per second launched, run and ended (`startupCode="pass"`) | '
            f"{results['completed_per_s']:.0f} /s |",
        ]
    )


if __name__ == "__main__":
    print(report(measure()))
