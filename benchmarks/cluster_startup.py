"""Item 1: from the launch call until N workers have each run a line of code and reported back.

    python benchmarks/cluster_startup.py [N ...]        # every peer, one run of each size
    python benchmarks/cluster_startup.py --sense [N ...]  # sense both ways and the floor only

Side by side, for N = 4, 16, 64: ``sense`` on its local server (already
running, as the platform was), with its prestarted engine (dashboards are
forked from it, the default) and without (a fresh interpreter each),
ipyparallel, dask.distributed, and the floor: N plain ``subprocess.Popen``
of the same Python running the same line. Then the memory of an idle worker
both ways: resident (RSS), unique (USS: what ending it gives back) and
proportional (PSS: shared pages split among their sharers).
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
#: How many idle workers the memory is measured on.
IDLE = 16
#: Every peer; ``sense`` is with the prestarted engine, ``sense_fresh`` without.
PEERS = ("popen", "sense", "sense_fresh", "ipyparallel", "dask")

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
    """A local project whose master is this process; ``prestart`` as LocalServer takes it."""

    def __init__(self, prestart: bool) -> None:
        self.prestart = prestart

    def __enter__(self) -> SenseCluster:
        import sense
        from sense.local import LocalServer

        self.sense = sense
        self.server = LocalServer(
            tempfile.mkdtemp(), max_workers=max(max(SIZES), IDLE), prestart=self.prestart
        )
        self.server.attach(set_environ=False)
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.stop()

    def master(self) -> None:
        """Make this process the master of this cluster's project (two may run side by side)."""
        os.environ.update(self.server.master_environment())

    def time_to_report(self, n: int) -> float:
        self.master()
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

    def idle_memory(self, n: int) -> dict[str, float]:
        """Median RSS, USS and PSS in MiB of ``n`` idle workers, each measured once all run."""
        import psutil

        self.master()
        workers = self.sense.launchWorkers(n)
        self.sense.awaitWorkers(workers)
        time.sleep(1)  # let each reach its idle wait
        project = self.server.project
        processes = [psutil.Process(project.get(w["id"])["handle"]["pid"]) for w in workers]
        measured = [process.memory_full_info() for process in processes]
        self.sense.stopWorkers()
        return {
            kind: statistics.median(getattr(m, kind) for m in measured) / 2**20
            for kind in ("rss", "uss", "pss")
        }


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


def dask_cluster_time(make_cluster) -> float:
    """From ``make_cluster()`` until a ``Client`` of the dask cluster it makes has run a call
    on every worker."""
    from dask.distributed import Client

    started = time.perf_counter()
    cluster = make_cluster()
    client = Client(cluster)
    client.run(os.getpid)  # runs on every worker
    elapsed = time.perf_counter() - started
    client.close()
    cluster.close()
    return elapsed


def dask_time(n: int) -> float:
    from dask.distributed import LocalCluster

    return dask_cluster_time(
        lambda: LocalCluster(
            n_workers=n, processes=True, threads_per_worker=1, dashboard_address=None
        )
    )


def measure(peers: tuple[str, ...] = PEERS) -> dict:
    """Medians over ``RUNS`` rounds; each round takes every size and peer in turn, so that
    whatever else the machine does at some moment weighs on all of them alike. Then the
    memory of idle workers, under ``"memory"``, for sense both ways."""
    samples: dict[str, dict[int, list[float]]] = {name: {n: [] for n in SIZES} for name in peers}
    with SenseCluster(prestart=True) as forked, SenseCluster(prestart=False) as fresh:
        timers = {
            "popen": popen_floor,
            "sense": forked.time_to_report,
            "sense_fresh": fresh.time_to_report,
            "ipyparallel": ipyparallel_time,
            "dask": dask_time,
        }
        for cluster in (forked, fresh):
            cluster.time_to_report(min(SIZES))  # warm: the first request imports requests
        for _ in range(RUNS):
            for n in SIZES:
                for name in peers:
                    samples[name][n].append(timers[name](n))
        memory = {"sense": forked.idle_memory(IDLE), "sense_fresh": fresh.idle_memory(IDLE)}
    results: dict = {
        name: {n: statistics.median(values) for n, values in by_size.items()}
        for name, by_size in samples.items()
    }
    results["memory"] = memory
    return results


LABELS = {
    "popen": "Popen floor",
    "sense": "sense",
    "sense_fresh": "sense, no prestart",
    "ipyparallel": "ipyparallel",
    "dask": "dask",
}


def report(results: dict) -> str:
    peers = [name for name in LABELS if name in results]
    lines = [
        f"| N | {' | '.join(f'{LABELS[name]} (s)' for name in peers)} | sense / floor | "
        "sense, no prestart / floor |",
        "|---|" + "---|" * (len(peers) + 2),
    ]
    for n in SIZES:
        cells = " | ".join(f"{results[name][n]:.3f}" for name in peers)
        floor = results["popen"][n]
        lines.append(
            f"| {n} | {cells} | {results['sense'][n] / floor:.2f} | "
            f"{results['sense_fresh'][n] / floor:.2f} |"
        )
    lines += [
        "",
        f"Memory of an idle worker (median of {IDLE}, MiB):",
        "",
        "| | RSS | USS | PSS |",
        "|---|---|---|---|",
    ]
    for name in ("sense", "sense_fresh"):
        memory = results["memory"][name]
        lines.append(
            f"| {LABELS[name]} | {memory['rss']:.1f} | {memory['uss']:.1f} | {memory['pss']:.1f} |"
        )
    return "\n".join(lines)


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 3.6))
    for name, label in LABELS.items():
        if name not in results:
            continue
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
    arguments = sys.argv[1:]
    peers = PEERS
    if arguments[:1] == ["--sense"]:
        arguments, peers = arguments[1:], ("popen", "sense", "sense_fresh")
    if arguments:  # a quick look at other sizes, one run each
        SIZES, RUNS = tuple(int(n) for n in arguments), 1
    print(f"load average: {', '.join(f'{value:.1f}' for value in os.getloadavg())}")
    print(report(measure(peers)))
