"""Dask on sense workers: a cluster of four worker dashboards, used as any dask cluster.

``SenseCluster`` runs the dask scheduler in this process (the master dashboard)
and one dask worker in each worker dashboard it launches; ``scale`` launches or
retires them, and closing it leaves no worker running.

Run it with (dask arrays need numpy)::

    pip install '.[local,dask]' numpy
    sense run examples/dask_cluster.py
"""

import ipaddress
import time
from urllib.parse import urlsplit

import dask.array as da
from dask.distributed import Client

import sense
from sense.dask import SenseCluster


def worker_ids() -> list[int]:
    return [dashboard["id"] for dashboard in sense.getWorkers() if dashboard["master_id"]]


def main() -> None:
    with SenseCluster(n_workers=4) as cluster, Client(cluster) as client:
        addresses = client.scheduler_info()["workers"]
        hosts = sorted((urlsplit(a).hostname for a in addresses), key=ipaddress.ip_address)
        print("dask workers listen on", hosts)
        print("worker dashboards:", worker_ids())

        squares = client.gather(client.map(lambda x: x * x, range(100)))
        print("the sum of 100 squares:", sum(squares))
        numbers = da.arange(10_000_000, chunks=1_000_000)
        print("the mean of 0 .. 9,999,999:", numbers.mean().compute())

        cluster.scale(2)
        while len(client.scheduler_info()["workers"]) > 2:  # dask retires two of them
            time.sleep(0.1)
        print("scaled down to", len(client.scheduler_info()["workers"]), "workers")
    print("after close, worker dashboards:", worker_ids())


if __name__ == "__main__":
    main()
