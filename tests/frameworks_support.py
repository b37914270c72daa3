"""What the tests of dask and ipyparallel on sense workers share, on every backend.

Each helper asks what a user would look at: the framework's own view (the dask
scheduler's workers, ipyparallel's engines) next to sense's (the running worker
dashboards), and the processes that the framework's workers run in.

Example
-------
>>> check_a_map_and_an_array_reduction(client)                 # doctest: +SKIP
>>> wait_until_dashboards_match(client, 3)                      # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psutil
from backend_support import processes_with
from waiting import strays, wait_for

import sense


@contextlib.contextmanager
def ipyparallel_profile(profile: Path) -> Iterator[str]:
    """A new IPython profile folder, where ipyparallel keeps a cluster's files; its path.
    At the end no process of the profile may be left.

    Its controller is given 120 s to end on SIGTERM: after its default 5 s, which a busy
    machine once took, ipyparallel SIGKILLs the controller, whose schedulers (processes it
    forked) then run on. ipyparallel names the profile in its processes' environment.
    """
    profile.mkdir()
    (profile / "ipcluster_config.py").write_text(
        "c.LocalControllerLauncher.stop_seconds_until_kill = 120\n"
    )
    yield str(profile)
    alive = strays(processes_with("IPP_PROFILE_DIR", str(profile)), timeout=30)
    assert not alive, f"processes of the ipyparallel profile left running: {alive}"


def worker_dashboards() -> list[dict]:
    """The running worker dashboards of this master (the master left out)."""
    return [d for d in sense.getWorkers() if d["master_id"] is not None]


def check_a_map_and_an_array_reduction(client) -> None:
    """A ``map`` of 100 tasks and a dask array reduction, each result checked."""
    import dask.array as da

    assert client.gather(client.map(lambda x: x * x, range(100))) == [x * x for x in range(100)]
    numbers = da.arange(1_000_000, chunks=50_000)
    assert int((numbers % 7).sum().compute()) == sum(i % 7 for i in range(1_000_000))


def dask_worker_hosts(client) -> list[str]:
    """The addresses the scheduler's workers listen on (one per worker)."""
    return sorted(urlsplit(address).hostname for address in client.scheduler_info()["workers"])


def wait_until_dashboards_match(client, n: int, timeout: float = 60) -> list[dict]:
    """Wait until the scheduler has ``n`` workers and exactly ``n`` worker dashboards run,
    each worker listening on the ``project_ip`` of one of them; return those dashboards."""

    def matched():
        dashboards = worker_dashboards()
        hosts = dask_worker_hosts(client)
        if len(hosts) == n and len(dashboards) == n:
            assert hosts == sorted(d["project_ip"] for d in dashboards)
            return dashboards
        return None

    matched.__name__ = f"{n} dask workers and as many worker dashboards"
    return wait_for(matched, timeout)


def check_nothing_left(pids: list[int], master_id: int, *, but: int = 0, timeout: float = 15):
    """No process of ``pids`` runs; every worker of the master ended, and all ``but`` of them
    the clean way (``stopped``, by themselves: exit code 0, not a stop's 143)."""
    _, alive = psutil.wait_procs([p for p in map(_process, pids) if p is not None], timeout)
    assert not alive, f"left running: {[p.pid for p in alive]}"
    assert worker_dashboards() == []
    ended = sense.Client().getDashboards(master_id=master_id)
    clean = [d for d in ended if d["status"] == "stopped" and d["exit_code"] == 0]
    assert ended and len(clean) == len(ended) - but, ended


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None
