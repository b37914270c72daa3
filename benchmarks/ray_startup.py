"""Item 5: from the launch until N workers on a 3-node Ray cluster have each run a line and
reported back.

    pip install -e '.[ray]'
    python benchmarks/ray_startup.py [N ...]

Side by side, for N = 6 and 16: ``sense``'s Ray backend (already running, as
a server is: its agents are up on every node), plain Ray with one actor per
task running the same line (each actor is a Ray worker process of its own),
and the floor: N plain ``subprocess.Popen`` of the same Python running the
same line on this machine. The cluster is 3 Ray nodes on this machine, on
127.0.0.2-4 (``tests/ray_cluster.py``). The backend is driven directly, as the
server does, with ``sense.THREAD_POOL_SIZE`` launches at once as
``launchWorkers`` sends them: the REST layer's own cost is item 1's.
"""

from __future__ import annotations

import socket
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from cluster_startup import REPORT_BACK, collect, popen_floor  # noqa: E402
from ray_cluster import loopback_cluster, node_ip  # noqa: E402

import sense  # noqa: E402
from sense.local.backends import LaunchSpec  # noqa: E402

SIZES = (6, 16)
RUNS = 3
#: Each node: 16 small workers (0.5 CPU each) fit on 3 nodes of 4 CPUs and 8 slots.
NODE_CPUS, NODE_SLOTS = 4, 8
NAMES = ("popen", "sense", "actors")


class SenseOnRay:
    """sense's Ray backend serving a throwaway project, its agents up on every node."""

    def __init__(self, address: str) -> None:
        from sense.local.backends.ray import RayBackend
        from sense.local.statedir import StateDir

        project = Path(tempfile.mkdtemp())
        self.backend = RayBackend(str(project), StateDir(project), grace=1.0, ray_address=address)
        self.next_id = 1

    def time_to_report(self, n: int) -> float:
        with socket.create_server((node_ip(0), 0), backlog=n) as listener:
            host, port = listener.getsockname()
            env = {"MASTER_HOST": host, "MASTER_PORT": str(port)}
            ids = range(self.next_id, self.next_id + n)
            self.next_id += n
            specs = [
                LaunchSpec(i, "worker", context=lambda _placement: {}, code=REPORT_BACK, env=env)
                for i in ids
            ]
            started = time.perf_counter()
            with ThreadPoolExecutor(sense.THREAD_POOL_SIZE) as pool:
                list(pool.map(self.backend.launch, specs))
            collect(listener, n)
            elapsed = time.perf_counter() - started
        for i in ids:
            self.backend.wait(i)
        return elapsed

    def close(self) -> None:
        self.backend.shutdown()


def actor_per_task(n: int) -> float:
    """Plain Ray: N actors (spread over the nodes), each running the line once."""
    import ray

    @ray.remote(num_cpus=0.5)
    class Worker:
        def report_back(self, host: str, port: int) -> None:
            socket.create_connection((host, port)).sendall(b"1")

    with socket.create_server((node_ip(0), 0), backlog=n) as listener:
        host, port = listener.getsockname()
        started = time.perf_counter()
        workers = [Worker.options(scheduling_strategy="SPREAD").remote() for _ in range(n)]
        calls = [worker.report_back.remote(host, port) for worker in workers]
        collect(listener, n)
        elapsed = time.perf_counter() - started
    ray.get(calls)
    for worker in workers:
        ray.kill(worker)
    return elapsed


def measure() -> dict[str, dict[int, float]]:
    """Medians over ``RUNS`` rounds, each taking every size and way in turn."""
    samples: dict[str, dict[int, list[float]]] = {name: {n: [] for n in SIZES} for name in NAMES}
    with loopback_cluster(3, cpus=NODE_CPUS, slots=NODE_SLOTS) as cluster:
        on_ray = SenseOnRay(cluster.address)
        try:
            on_ray.time_to_report(min(SIZES))  # warm, as a server that has run a dashboard
            for _ in range(RUNS):
                for n in SIZES:
                    samples["popen"][n].append(popen_floor(n))
                    samples["sense"][n].append(on_ray.time_to_report(n))
                    samples["actors"][n].append(actor_per_task(n))
        finally:
            on_ray.close()
    return {
        name: {n: statistics.median(values) for n, values in by_size.items()}
        for name, by_size in samples.items()
    }


def report(results: dict[str, dict[int, float]]) -> str:
    lines = [
        "| N | Popen floor (s) | sense on Ray (s) | Ray, an actor per task (s) "
        "| sense / floor | actors / sense |",
        "|---|---|---|---|---|---|",
    ]
    for n in SIZES:
        floor, on_ray, actors = (results[name][n] for name in NAMES)
        lines.append(
            f"| {n} | {floor:.2f} | {on_ray:.2f} | {actors:.2f} "
            f"| {on_ray / floor:.2f} | {actors / on_ray:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1:  # a quick look at other sizes, one run each
        SIZES, RUNS = tuple(int(n) for n in sys.argv[1:]), 1
    print(report(measure()))
