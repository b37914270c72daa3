"""What the dask and ipyparallel integrations share: worker dashboards of a framework.

A framework's cluster manager (``sense.dask``, ``sense.ipyparallel``) launches
dashboards from asynchronous code, waits for them to end the way the
framework ends them, and stops what is left. Plain client calls, so that
this module needs only ``requests``.

Example
-------
>>> dashboards = await launch(client, 2, "import job", "small", {})  # doctest: +SKIP
>>> await end(client, dashboards, grace=5.0)                        # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from sense.errors import SenseConnectionError
from sense.status import ENDED

if TYPE_CHECKING:
    from sense.client import Client

#: How often :func:`end` asks whether the dashboards have ended (seconds).
POLL_INTERVAL = 0.1
#: How much of a dashboard's output an error shows, at the most (bytes).
TAIL_BYTES = 4000


def pinned_client() -> Client:
    """This dashboard's client, its project's URL and credentials read once, now.

    A framework's cluster may outlive the environment it started in: ``sense.local.stop()``
    takes the ``SENSE_*`` variables back, and the cluster still has its dashboards to end.

    Examples
    --------
    >>> client = pinned_client()  # doctest: +SKIP
    """
    from sense.client import Client

    here = Client()
    credentials = here.getAuth()
    return Client(url=here.project_url(), auth=(credentials["user"], credentials["pass"]))


async def launch(
    client: Client, n: int, code: str, size: str | int, env: Mapping[str, str]
) -> list[dict]:
    """``client.launchWorkers(n, ...)`` from a coroutine, without blocking its event loop.

    Examples
    --------
    >>> [dashboard] = await launch(client, 1, "print(1)", "small", {})  # doctest: +SKIP
    """
    return await asyncio.to_thread(client.launchWorkers, n, size, startupCode=code, env=env)


def ended(client: Client, dashboards: Sequence[dict]) -> dict[int, dict]:
    """Those of ``dashboards`` that have ended, by id, as the API tells now.

    Examples
    --------
    >>> ended(client, workers)  # doctest: +SKIP
    {7: {'id': 7, 'status': 'stopped', 'exit_code': 0, ...}}
    """
    if not dashboards:
        return {}
    wanted = {dashboard["id"] for dashboard in dashboards}
    # One listing of their master's workers, not one request per dashboard.
    listed = client.getDashboards(sorted(ENDED), master_id=dashboards[0]["master_id"])
    return {d["id"]: d for d in listed if d["id"] in wanted}


def _end(client: Client, dashboards: Sequence[dict], grace: float) -> None:
    deadline = time.monotonic() + grace
    left = list(dashboards)
    try:
        while left:
            gone = ended(client, left)
            left = [dashboard for dashboard in left if dashboard["id"] not in gone]
            if not left or time.monotonic() >= deadline:
                break
            time.sleep(POLL_INTERVAL)
        if left:
            client.stopWorkers(*left)
    except SenseConnectionError as error:
        if not error.unreachable:
            raise
        # No server answers: the dashboards ended with it (docs/local.md, "Nothing
        # outlives its owner"), and there is nothing left to stop.


async def end(client: Client, dashboards: Sequence[dict], grace: float) -> None:
    """Give ``dashboards`` ``grace`` seconds to end by themselves, then stop the rest.

    The framework has asked its worker to close by then: a stop (SIGTERM to each of its
    processes, see docs/local.md, "Stopping") is for one that did not. A server that no longer
    answers at all has ended them already.

    Examples
    --------
    >>> await end(client, dashboards, grace=5.0)  # doctest: +SKIP
    """
    await asyncio.to_thread(_end, client, dashboards, grace)


def tail(client: Client, dashboard_id: int) -> str:
    """The end of a dashboard's output, for an error message.

    Examples
    --------
    >>> print(tail(client, 7))  # doctest: +SKIP
    ModuleNotFoundError: No module named 'distributed'
    """
    output = b"".join(client.getLogs(dashboard_id, offset=-TAIL_BYTES))
    return output.decode(errors="replace")
