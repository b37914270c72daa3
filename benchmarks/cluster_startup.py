"""Item 1: from the launch call until N workers have each run a line of code and reported back.

    python benchmarks/cluster_startup.py [N ...]

Side by side, for N = 4, 16, 64: ``sense`` on its local server (already
running, as the platform was), ipyparallel, dask.distributed, and the floor:
N plain ``subprocess.Popen`` of the same Python running the same line.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

SIZES = (4, 16, 64)
RUNS = 3

# The line each worker runs: connect back to the master and say so.
REPORT_BACK = (
    "import os, socket; "
    "socket.create_connection((os.environ['MASTER_HOST'], int(os.environ['MASTER_PORT'])))"
    ".sendall(b'1')"
)


def collect(listener: socket.socket, n: int) -> None:
    """Wait until ``n`` workers have reported on ``listener``."""
    for _ in range(n):
        connection, _ = listener.accept()
        with connection:
            assert connection.recv(1) == b"1"


def popen_floor(n: int) -> float:
    with socket.create_server(("127.0.0.1", 0), backlog=n) as listener:
        host, port = listener.getsockname()
        env = {**os.environ, "MASTER_HOST": host, "MASTER_PORT": str(port)}
        started = time.perf_counter()
        processes = [
            subprocess.Popen([sys.executable, "-c", REPORT_BACK], env=env) for _ in range(n)
        ]
        collect(listener, n)
        elapsed = time.perf_counter() - started
    for process in processes:
        process.wait()
    return elapsed


class SenseCluster:
    """A local project whose master is this process."""

    def __enter__(self) -> SenseCluster:
        import sense
        from sense.local import LocalServer

        self.sense = sense
        self.server = LocalServer(tempfile.mkdtemp(), max_workers=max(SIZES))
        self.server.attach(set_environ=False)
        os.environ.update(self.server.master_environment())
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.stop()

    def time_to_report(self, n: int) -> float:
        project_ip = self.sense.networkInfo()["project_ip"]
        with socket.create_server((project_ip, 0), backlog=n) as listener:
            host, port = listener.getsockname()
            started = time.perf_counter()
            self.sense.launchWorkers(
                n, startupCode=REPORT_BACK, env={"MASTER_HOST": host, "MASTER_PORT": str(port)}
            )
            collect(listener, n)
            elapsed = time.perf_counter() - started
        self.sense.stopWorkers()
        return elapsed


def ipyparallel_time(n: int) -> float:
    import ipyparallel

    started = time.perf_counter()
    cluster = ipyparallel.Cluster(n=n, log_level=40)
    client = cluster.start_and_connect_sync()
    client[:].apply_sync(os.getpid)  # a builtin: nothing of this module to pickle
    elapsed = time.perf_counter() - started
    client.close()
    cluster.stop_cluster_sync()
    return elapsed


def dask_time(n: int) -> float:
    from dask.distributed import Client, LocalCluster

    started = time.perf_counter()
    cluster = LocalCluster(
        n_workers=n, processes=True, threads_per_worker=1, dashboard_address=None
    )
    client = Client(cluster)
    client.run(os.getpid)  # runs on every worker
    elapsed = time.perf_counter() - started
    client.close()
    cluster.close()
    return elapsed


def measure() -> dict[str, dict[int, float]]:
    """Medians over ``RUNS`` rounds; each round takes every size and peer in turn, so that
    whatever else the machine does at some moment weighs on all of them alike."""
    samples: dict[str, dict[int, list[float]]] = {
        name: {n: [] for n in SIZES} for name in ("popen", "sense", "ipyparallel", "dask")
    }
    with SenseCluster() as cluster:
        cluster.time_to_report(min(SIZES))  # warm: the client's first request imports requests
        for _ in range(RUNS):
            for n in SIZES:
                samples["popen"][n].append(popen_floor(n))
                samples["sense"][n].append(cluster.time_to_report(n))
                samples["ipyparallel"][n].append(ipyparallel_time(n))
                samples["dask"][n].append(dask_time(n))
    return {
        name: {n: statistics.median(values) for n, values in by_size.items()}
        for name, by_size in samples.items()
    }


def report(results: dict[str, dict[int, float]]) -> str:
    lines = [
        "| N | Popen floor (s) | sense (s) | ipyparallel (s) | dask (s) | sense / floor |",
        "|---|---|---|---|---|---|",
    ]
    for n in SIZES:
        row = [results[name][n] for name in ("popen", "sense", "ipyparallel", "dask")]
        cells = " | ".join(f"{value:.2f}" for value in row)
        lines.append(f"| {n} | {cells} | {row[1] / row[0]:.2f} |")
    return "\n".join(lines)


def plot(results: dict[str, dict[int, float]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 3.6))
    labels = {
        "popen": "Popen floor",
        "sense": "sense",
        "ipyparallel": "ipyparallel",
        "dask": "dask",
    }
    for name, label in labels.items():
        axes.plot(SIZES, [results[name][n] for n in SIZES], marker="o", label=label)
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xticks(SIZES, [str(n) for n in SIZES])
    axes.set_xlabel("workers (N)")
    axes.set_ylabel("seconds (median)")
    axes.set_title("From the launch call until N workers have reported back", fontsize=10)
    axes.legend()
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


if __name__ == "__main__":
    if len(sys.argv) > 1:  # a quick look at other sizes, one run each
        SIZES, RUNS = tuple(int(n) for n in sys.argv[1:]), 1
    print(report(measure()))
