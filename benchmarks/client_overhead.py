"""Item 2: what the client adds over the network, against an API that takes 20 ms a request.

    python benchmarks/client_overhead.py

Measures, in one process against ``slow_api.py``: one round trip (the
floor), 100 sequential launch requests, then ``launchWorkers(100)`` and
``stopWorkers()``; prints medians over a few runs, in seconds and in round trips.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

import sense

HERE = Path(__file__).resolve().parent
N = 100
RUNS = 5


def start_api(delay: float = 0.020) -> tuple[subprocess.Popen, str]:
    port_file = Path(tempfile.mkdtemp()) / "port"
    process = subprocess.Popen(
        [sys.executable, str(HERE / "slow_api.py"), str(port_file), str(delay)]
    )
    deadline = time.monotonic() + 10
    while not port_file.exists() or not port_file.read_text():
        if time.monotonic() > deadline:
            raise RuntimeError("the stand-in API did not start")
        time.sleep(0.02)
    return process, f"http://127.0.0.1:{port_file.read_text()}"


def as_master_of(api_url: str) -> None:
    os.environ.update(
        SENSE_API_URL=api_url,
        SENSE_OWNER_ID="bench",
        SENSE_PROJECT_ID="bench",
        SENSE_DASHBOARD_ID="1",
        SENSE_MASTER_ID="",
        SENSE_API_TOKEN="bench-token",
    )


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def measure() -> dict[str, float]:
    process, api_url = start_api()
    try:
        as_master_of(api_url)
        url = f"{api_url}/users/bench/projects/bench/dashboards"
        session = requests.Session()
        session.get(url)  # a warm connection, as the client's shared session has
        round_trip = statistics.median(timed(lambda: session.get(url)) for _ in range(20))
        sequential = statistics.median(
            timed(lambda: [session.post(url, json={}) for _ in range(N)]) for _ in range(RUNS)
        )
        launches, stops = [], []
        for _ in range(RUNS):
            launches.append(timed(lambda: sense.launchWorkers(N)))
            stops.append(timed(sense.stopWorkers))
        return {
            "round_trip": round_trip,
            "sequential_100": sequential,
            "launch_100": statistics.median(launches),
            "stop_all_100": statistics.median(stops),
            "pool_size": sense.THREAD_POOL_SIZE,
        }
    finally:
        process.terminate()
        process.wait()


def report(results: dict[str, float]) -> str:
    trip = results["round_trip"]
    rows = [
        ("one round trip (floor)", results["round_trip"]),
        (f"{N} sequential requests", results["sequential_100"]),
        (f"launchWorkers({N}), pool {results['pool_size']}", results["launch_100"]),
        (f"stopWorkers() of {N}", results["stop_all_100"]),
    ]
    lines = ["| what | median (s) | round trips |", "|---|---|---|"]
    lines += [f"| {name} | {value:.3f} | {value / trip:.1f} |" for name, value in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(measure()))
