"""Dask run on sense workers by hand, as issue 22's user did: a scheduler in the master of
``sense run``, a ``dask worker`` (with its Nanny) as a worker's startup code, stopped by
``stopWorkers``. What the job itself must get right for it: a spawn pool in startup code, the
end of a job, and what a stop sends to which process."""

from __future__ import annotations

import importlib.util

import pytest
from conftest import sense_command
from needs import require

pytestmark = [pytest.mark.timeout(120), pytest.mark.processes_unmeasured]

MASTER = """
import sense
from distributed import Client, LocalCluster

ip = sense.networkInfo()["project_ip"]
cluster = LocalCluster(
    n_workers=0, processes=False, protocol="tcp", host=ip, dashboard_address=None
)
code = (
    "import sense, sys\\n"
    "from distributed.cli.dask_worker import main\\n"
    f"sys.argv = ['dask-worker', {cluster.scheduler_address!r}, '--no-dashboard',"
    " '--local-directory', 'dask-space', '--host', sense.networkInfo()['project_ip']]\\n"
    "main()\\n"
)
sense.launchWorkers(1, startupCode=code)
client = Client(cluster)
client.wait_for_workers(1, timeout=30)
print("sum", client.submit(sum, [1, 2]).result(), flush=True)
sense.stopWorkers()
print("workers stopped", flush=True)
"""


def test_a_dask_worker_with_its_nanny_runs_and_stops_as_dask_stops_it(project_dir):
    require(
        importlib.util.find_spec("distributed") is not None, "dask.distributed is not installed"
    )
    (project_dir / "master.py").write_text(MASTER)
    run = sense_command("run", "master.py", cwd=project_dir)
    output, _ = run.communicate(timeout=100)
    assert run.returncode == 0, output
    assert "sum 3\n" in output and "workers stopped\n" in output
    # Its Nanny closed the worker process (a signal did not kill it) and left no lock behind.
    assert "distributed.nanny - INFO - Worker closed" in output
    assert "killed by signal" not in output
    assert not list((project_dir / "dask-space").rglob("*.dirlock"))
    # Nor did the master's end or the worker's print anything Python's own end does not.
    assert "Traceback" not in output and "Exception ignored" not in output, output
