"""Item 2: what the client adds over the network, against an API that takes 20 ms a request.

    python benchmarks/client_overhead.py

Measures, in one process against ``slow_api.py``: one round trip (the
floor), 100 sequential launch requests, then ``launchWorkers(100)`` and
``stopWorkers()`` at several thread pools, each next to the same 100 POSTs
sent through bare ``http.client`` connections by a pool of the same size;
prints medians over a few runs, in seconds and in round trips.
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import requests

import sense

HERE = Path(__file__).resolve().parent
N = 100
RUNS = 5
#: Thread pools tried: the default, enough for 3 waves of 100, one thread a launch.
POOLS = (10, 34, 100)


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


def post_raw(connection: http.client.HTTPConnection, url: str, body: dict) -> dict:
    """One launch POST on a bare ``http.client`` connection: the least any client can do."""
    connection.request(
        "POST", url, body=json.dumps(body), headers={"Content-Type": "application/json"}
    )
    return json.loads(connection.getresponse().read())


def bare_launches(url: str, pool: int) -> float:
    """Seconds for N POSTs from a fresh pool of ``pool`` threads sharing warm connections.

    Shaped as ``launchWorkers`` is (a new thread pool per call, connections kept
    between calls), without ``requests``: what the pool, the machine and the
    stand-in API allow.
    """
    connections: queue.Queue = queue.Queue()
    for _ in range(pool):
        connection = http.client.HTTPConnection(urlsplit(url).netloc)
        connection.connect()
        connections.put(connection)

    def launch_one(_: int) -> dict:
        connection = connections.get()
        try:
            return post_raw(connection, url, {"name": "bare"})
        finally:
            connections.put(connection)

    def launch_all() -> None:
        with ThreadPoolExecutor(max_workers=pool) as threads:
            list(threads.map(launch_one, range(N)))

    try:
        launch_all()  # warm
        return statistics.median(timed(launch_all) for _ in range(RUNS))
    finally:
        while not connections.empty():
            connections.get().close()


def cpu_per_request(url: str, session) -> dict[str, float]:
    """CPU seconds per POST: via sense, bare requests (trust_env on and off), http.client."""
    from sense import client

    count = 50
    body = {"name": "cpu", "startup_code": "", "env": {}}

    def per_request(send) -> float:
        send()
        started = time.thread_time()
        for _ in range(count):
            send()
        return (time.thread_time() - started) / count

    connection = http.client.HTTPConnection(urlsplit(url).netloc)

    # requests reads the proxy variables from the environment at every request
    # unless trust_env is off: what that reading costs.
    without_environment = requests.Session()
    without_environment.trust_env = False
    try:
        return {
            # The module's client, as sense.launchWorkers sends with (url is its project's).
            "cpu_sense": per_request(
                lambda: client.default().request("POST", "/dashboards", json=body)
            ),
            "cpu_requests": per_request(lambda: session.post(url, json=body).json()),
            "cpu_requests_no_env": per_request(
                lambda: without_environment.post(url, json=body).json()
            ),
            "cpu_http_client": per_request(lambda: post_raw(connection, url, body)),
        }
    finally:
        connection.close()
        without_environment.close()


def measure(pools=POOLS) -> dict:
    process, api_url = start_api()
    saved = dict(os.environ)
    saved_pool = sense.THREAD_POOL_SIZE
    try:
        as_master_of(api_url)
        url = f"{api_url}/users/bench/projects/bench/dashboards"
        session = requests.Session()
        session.get(url)  # a warm connection, as the client's shared session has
        round_trip = statistics.median(timed(lambda: session.get(url)) for _ in range(20))
        sequential = statistics.median(
            timed(lambda: [session.post(url, json={}) for _ in range(N)]) for _ in range(RUNS)
        )
        sense.getWorkers()  # warm: the first request imports requests
        by_pool = {}
        for pool in pools:
            sense.THREAD_POOL_SIZE = pool
            launches, stops, cpu = [], [], []
            for _ in range(RUNS):
                started_cpu = time.process_time()
                launches.append(timed(lambda: sense.launchWorkers(N)))
                cpu.append(time.process_time() - started_cpu)
                stops.append(timed(sense.stopWorkers))
            by_pool[pool] = {
                "launch": statistics.median(launches),
                "stop": statistics.median(stops),
                "launch_cpu": statistics.median(cpu),
                "bare": bare_launches(url, pool),
            }
        return {
            "round_trip": round_trip,
            "sequential": sequential,
            "by_pool": by_pool,
            **cpu_per_request(url, session),
        }
    finally:
        sense.THREAD_POOL_SIZE = saved_pool
        os.environ.clear()
        os.environ.update(saved)
        process.terminate()
        process.wait()


def report(results: dict) -> str:
    trip = results["round_trip"]
    rows = [
        ("one round trip (floor)", trip, ""),
        (f"{N} sequential requests (requests.Session)", results["sequential"], ""),
    ]
    for pool, figures in results["by_pool"].items():
        default = " (default)" if pool == 10 else ""
        cpu = f"{figures['launch_cpu'] * 1000:.0f} ms"
        rows.append((f"`launchWorkers({N})`, pool {pool}{default}", figures["launch"], cpu))
        rows.append((f"`stopWorkers()` of {N}, pool {pool}{default}", figures["stop"], ""))
        rows.append((f"{N} POSTs through bare `http.client`, pool {pool}", figures["bare"], ""))
    lines = [
        "| what | median (s) | round trips | client CPU |",
        "|---|---|---|---|",
    ]
    lines += [f"| {name} | {value:.3f} | {value / trip:.1f} | {cpu} |" for name, value, cpu in rows]
    lines += [
        "",
        "Client CPU per request (one thread, no waiting on the GIL):",
        "",
        "| through | CPU per request (ms) |",
        "|---|---|",
        f"| `sense.Client.request` | {results['cpu_sense'] * 1000:.2f} |",
        f"| bare `requests.Session.post` | {results['cpu_requests'] * 1000:.2f} |",
        "| bare `requests.Session.post`, `trust_env = False` | "
        f"{results['cpu_requests_no_env'] * 1000:.2f} |",
        f"| bare `http.client` | {results['cpu_http_client'] * 1000:.2f} |",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(measure()))
