"""Dask on sense workers: ``SenseCluster``, a dask cluster whose workers are worker dashboards.

Needs ``pip install 'sense[dask]'``.

>>> from sense.dask import SenseCluster
>>> from dask.distributed import Client
>>> with SenseCluster(n_workers=4) as cluster, Client(cluster) as client:  # doctest: +SKIP
...     client.gather(client.map(abs, [-1, -2]))
[1, 2]
"""

from __future__ import annotations

__all__ = ["SenseCluster", "SenseWorker"]


def __getattr__(name: str):
    # The worker dashboards import sense.dask.worker: they need neither the scheduler nor
    # the deploy machinery that the cluster side imports.
    if name in __all__:
        from sense.dask import cluster

        return getattr(cluster, name)
    raise AttributeError(f"module 'sense.dask' has no attribute {name!r}")
