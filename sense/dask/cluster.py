"""A dask cluster whose workers are sense worker dashboards (dask-jobqueue's pattern).

The scheduler runs in this process (the master dashboard), listening on its
``project_ip``; each dask worker is one worker dashboard that runs
:mod:`sense.dask.worker`. :class:`SenseWorker` is the ``ProcessInterface`` that
launches and ends one of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Mapping
from typing import Any

from distributed.core import Status, rpc
from distributed.deploy.spec import ProcessInterface, SpecCluster
from distributed.scheduler import Scheduler

import sense
from sense import environment, frameworks, workers
from sense.dask.worker import OPTIONS, STARTUP_CODE
from sense.errors import SenseConfigError

#: CPUs of a dashboard of each size (as the Ray backend places them); a worker gets as
#: many threads, at least one.
SIZE_CPUS = {"small": 0.5, "medium": 1, "large": 2}
#: Seconds a dask worker has to join the scheduler once its dashboard is launched.
START_TIMEOUT = 60.0
#: Seconds a retired dask worker has to end by itself before its dashboard is stopped.
CLOSE_GRACE = 10.0
#: How often a starting worker asks the scheduler whether it has joined (seconds).
JOIN_POLL = 0.05
#: How often it asks the API whether its dashboard has ended meanwhile (seconds).
END_POLL = 1.0


class SenseWorker(ProcessInterface):
    """One dask worker in one sense worker dashboard.

    ``start`` launches the dashboard and returns once its dask worker has joined the
    scheduler (or raises, with the end of the dashboard's output, if it ended first);
    ``close`` has the scheduler retire and close the worker, as dask ends a worker, and
    stops the dashboard only if it has not ended within :data:`CLOSE_GRACE` seconds.

    Parameters
    ----------
    scheduler : str
        The scheduler's address.
    name : str or int
        The worker's name at the scheduler.
    client : sense.Client
        Launches and stops the dashboard.
    size : str or int
        The dashboard's size.
    env : dict of str to str
        Variables of the dashboard's environment.
    worker_options : dict
        Keyword arguments of ``distributed.Worker`` (JSON).

    Examples
    --------
    >>> worker = await SenseWorker(address, 0, client=sense.Client(), size="small",
    ...                            env={}, worker_options={"nthreads": 1})  # doctest: +SKIP
    """

    def __init__(
        self,
        scheduler: str,
        name: str | int,
        *,
        client: sense.Client,
        size: str | int,
        env: Mapping[str, str],
        worker_options: Mapping[str, Any],
    ) -> None:
        super().__init__(scheduler, name)
        self.scheduler = scheduler
        self.name = name
        self.client = client
        self.size = size
        self.env = dict(env)
        self.worker_options = dict(worker_options)
        #: The worker dashboard, once launched.
        self.dashboard: dict | None = None

    async def start(self) -> None:
        options = {"scheduler": self.scheduler, "name": self.name, **self.worker_options}
        env = {**self.env, OPTIONS: json.dumps(options)}
        [self.dashboard] = await frameworks.launch(self.client, 1, STARTUP_CODE, self.size, env)
        try:
            await asyncio.wait_for(self._joined(), START_TIMEOUT)
        except BaseException:
            await asyncio.to_thread(self.client.stopWorkers, self.dashboard)
            raise
        await super().start()

    async def _joined(self) -> None:
        """Return once the worker is at the scheduler; raise if its dashboard ended first."""
        loop = asyncio.get_running_loop()
        next_check = loop.time() + END_POLL
        async with rpc(self.scheduler) as scheduler:
            while True:
                identity = await scheduler.identity()
                for address, worker in identity["workers"].items():
                    if worker.get("name") == self.name:
                        self.address = address
                        return
                if loop.time() >= next_check:
                    next_check = loop.time() + END_POLL
                    await self._raise_if_ended()
                await asyncio.sleep(JOIN_POLL)

    async def _raise_if_ended(self) -> None:
        gone = await asyncio.to_thread(frameworks.ended, self.client, [self.dashboard])
        if gone:
            dashboard = gone[self.dashboard["id"]]
            output = await asyncio.to_thread(frameworks.tail, self.client, dashboard["id"])
            raise RuntimeError(
                f"sense worker {dashboard['id']} ended ({dashboard['status']}, exit code "
                f"{dashboard.get('exit_code')}) before its dask worker {self.name!r} joined "
                f"the scheduler; the end of its output:\n{output}"
            )

    async def close(self) -> None:
        if self.dashboard is not None:
            await self._retire()
            await frameworks.end(self.client, [self.dashboard], CLOSE_GRACE)
        await super().close()

    async def _retire(self) -> None:
        """Ask the scheduler to retire the worker (its data moves on) and close it."""
        # The scheduler may be gone or the worker lost already: then there is nothing to ask.
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            async with rpc(self.scheduler) as scheduler:
                await asyncio.wait_for(
                    scheduler.retire_workers(names=[self.name], close_workers=True),
                    CLOSE_GRACE,
                )

    def __repr__(self) -> str:
        where = "" if self.dashboard is None else f" dashboard={self.dashboard['id']}"
        return f"<SenseWorker {self.name!r}: status={self.status.name}{where}>"


def _threads(size: str | int) -> int:
    return max(1, math.ceil(SIZE_CPUS.get(size, size)))


def _check(n_workers: Any, size: Any, env: Any, worker_options: Any) -> None:
    """Refuse bad arguments before anything starts (and on a worker, where none may launch)."""
    if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 0:
        raise ValueError(f"n_workers must be an int >= 0, not {n_workers!r}")
    # The sizes of the REST API (a launch refuses any other, but only once the scheduler runs).
    if size not in SIZE_CPUS and not (type(size) is int and 0 <= size <= 16):
        raise ValueError(
            f"size must be 'small', 'medium', 'large' or an int from 0 to 16, not {size!r}"
        )
    workers._check_launch_args(1, size, "sense-ipython-engine", "", "", env)
    if not isinstance(worker_options, Mapping):
        raise ValueError(
            f"worker_options must be a dict of distributed.Worker's options, not "
            f"{type(worker_options).__name__}"
        )
    try:
        json.dumps(dict(worker_options))
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"worker_options must be JSON (they travel to the worker dashboards): {error}"
        ) from None
    if environment.master_id() is not None:
        raise SenseConfigError(
            f"this dashboard is a worker of {environment.master_id()}: only a master launches "
            "workers"
        )


class SenseCluster(SpecCluster):
    """A dask cluster: the scheduler in this process, each worker a sense worker dashboard.

    A ``distributed.deploy.SpecCluster``: ``Client(cluster)``, ``cluster.scale(n)``,
    ``cluster.adapt(minimum=..., maximum=...)``, ``cluster.close()`` and ``with`` work as
    with any dask cluster. Closing it (or this process ending) retires and closes every
    dask worker and leaves none of its dashboards running.

    Parameters
    ----------
    n_workers : int
        Workers to start with; the constructor returns once they have joined.
    size : str or int
        The size of each worker dashboard; a worker has as many threads as the size has
        CPUs (``small`` 0.5, ``medium`` 1, ``large`` 2, an int that many), at least one.
    env : dict of str to str, optional
        Variables of the worker dashboards' environment.
    worker_options : dict, optional
        More keyword arguments of ``distributed.Worker`` (``nthreads``,
        ``memory_limit``, ``local_directory``, ``resources``, ...), as JSON, and
        ``silence_logs`` (the level of the workers' ``distributed`` logger; by default
        ``silence_logs`` of the cluster, which is ``logging.WARN`` as for ``LocalCluster``).
    scheduler_options : dict, optional
        More keyword arguments of ``distributed.Scheduler``.
    client : sense.Client, optional
        The client that launches and stops the dashboards (default: this dashboard's).
    **dask_options
        Of ``SpecCluster``: ``asynchronous``, ``loop``, ``name``, ``silence_logs``,
        ``shutdown_on_close``, ...

    Raises
    ------
    ValueError
        A bad argument; nothing was started.
    SenseConfigError
        Not on a master dashboard.

    Examples
    --------
    >>> from dask.distributed import Client
    >>> with SenseCluster(n_workers=4) as cluster, Client(cluster) as client:  # doctest: +SKIP
    ...     client.submit(sum, [1, 2]).result()
    3
    """

    def __init__(
        self,
        n_workers: int = 0,
        size: str | int = "small",
        env: Mapping[str, str] | None = None,
        *,
        worker_options: Mapping[str, Any] | None = None,
        scheduler_options: Mapping[str, Any] | None = None,
        client: sense.Client | None = None,
        **dask_options: Any,
    ) -> None:
        env = {} if env is None else env
        # Quiet as LocalCluster is by default: dask's INFO lines on the master and, through
        # the worker dashboards' output, on the console of `sense run`.
        dask_options.setdefault("silence_logs", logging.WARN)
        worker_options = {} if worker_options is None else worker_options
        _check(n_workers, size, env, worker_options)
        worker_options = {
            "nthreads": _threads(size),
            "silence_logs": dask_options["silence_logs"],
        } | dict(worker_options)
        client = frameworks.pinned_client() if client is None else client
        # The scheduler listens where the workers reach this dashboard, and only there.
        here = sense.networkInfo()["project_ip"]
        scheduler = {
            "cls": Scheduler,
            "options": {
                "host": here,
                "port": 0,
                "dashboard_address": f"{here}:8787",
                **(scheduler_options or {}),
            },
        }
        worker = {
            "cls": SenseWorker,
            "options": {
                "client": client,
                "size": size,
                "env": env,
                "worker_options": worker_options,
            },
        }
        super().__init__(
            scheduler=scheduler,
            worker=worker,
            workers={i: worker for i in range(n_workers)},
            **dask_options,
        )

    @property
    def dashboards(self) -> list[dict]:
        """The worker dashboards of the dask workers that run, as launched.

        Examples
        --------
        >>> [d["id"] for d in cluster.dashboards]  # doctest: +SKIP
        [2, 3, 4, 5]
        """
        return [
            worker.dashboard
            for worker in self.workers.values()
            if worker.dashboard is not None and worker.status == Status.running
        ]
