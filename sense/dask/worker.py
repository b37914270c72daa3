"""The dask worker of one sense worker dashboard: what :class:`SenseCluster` launches.

Runs in the dashboard (its startup code is :data:`STARTUP_CODE`): a
``distributed.Worker`` listening on the dashboard's ``project_ip``, connected to the
scheduler that the variable :data:`OPTIONS` names, with the options there (JSON).
It ends when dask closes it (the scheduler retires it, or goes away) or when the
dashboard is stopped: SIGTERM closes it as dask's own ``dask worker`` command does,
so that its scratch space is cleaned up.

Example
-------
>>> env = {OPTIONS: json.dumps({"scheduler": address, "nthreads": 1})}
>>> sense.launchWorkers(1, startupCode=STARTUP_CODE, env=env)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal

import sense

#: The variable that holds the worker's options: ``scheduler`` (its address), ``silence_logs``
#: (a level for its ``distributed`` logger, or none) and the keyword arguments of
#: ``distributed.Worker``.
OPTIONS = "SENSE_DASK_WORKER"
#: The startup code of the dashboard. Guarded: a process that ``multiprocessing`` spawns from
#: the dashboard runs it again as ``__mp_main__`` (see docs/local.md, "Workers").
STARTUP_CODE = "from sense.dask import worker\nif __name__ == '__main__':\n    worker.main()\n"


async def serve(scheduler: str, options: dict) -> None:
    """Run a dask worker connected to ``scheduler`` until dask closes it or SIGTERM comes.

    Examples
    --------
    >>> options = {"host": "127.0.0.9", "nthreads": 1}
    >>> asyncio.run(serve("tcp://127.0.0.2:8786", options))  # doctest: +SKIP
    """
    from distributed import Worker

    async with Worker(scheduler, **options) as worker:
        await _until_closed(worker)


async def _until_closed(worker) -> None:
    """Wait for the worker's end; a stop of the dashboard (SIGTERM) closes it, as dask's
    ``dask worker`` command closes its worker on SIGTERM."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(
            signum,
            lambda: asyncio.ensure_future(worker.close(reason="the dashboard was stopped")),
        )
    await worker.finished()


def main() -> None:
    """The dashboard's job: the worker that :data:`OPTIONS` describes, on its ``project_ip``.

    Examples
    --------
    >>> main()  # doctest: +SKIP
    """
    from distributed.utils import silence_logging_cmgr

    options = json.loads(os.environ[OPTIONS])
    scheduler = options.pop("scheduler")
    options.setdefault("host", sense.networkInfo()["project_ip"])
    level = options.pop("silence_logs", None)
    # Around the whole run: the worker's connections log their end after it has closed.
    with silence_logging_cmgr(level) if level else contextlib.nullcontext():
        asyncio.run(serve(scheduler, options))
