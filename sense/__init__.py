"""Helpers for a Sense dashboard: install packages, find its addresses, run worker dashboards.

A Python 3 port of the 2013 ``sense`` module of the Sense platform. The
camelCase names are the original API; the snake_case names of the later
``sense`` 0.1.2 are aliases of them.

>>> import sense
>>> workers = sense.launchWorkers(2, "small", startupCode="print('hello')")  # doctest: +SKIP

The worker functions are methods of :class:`sense.Client` too, for a project,
credentials or settings of one's own; the functions here use a default client
built from the environment and the module settings at every call.

Importing ``sense`` imports neither IPython, nor the local server, nor
``requests`` (which loads at the first REST call).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping

from sense.errors import (
    InstallError,
    LaunchError,
    SenseAPIError,
    SenseConfigError,
    SenseConnectionError,
    SenseError,
)

__version__ = "1.0.0"

#: How many REST requests launchWorkers and stopWorkers send at once (read at every call).
THREAD_POOL_SIZE = 10


def __getattr__(name: str):
    # sense.Client loads the HTTP layer and the thread pool only when first asked for.
    if name == "Client":
        from sense.client import Client

        return Client
    raise AttributeError(f"module 'sense' has no attribute {name!r}")


if "IPython" in sys.modules:
    # In a notebook, lists of dashboards show as tables (they stay plain lists).
    from sense import display

    display.register_html_formatter()

# Each function below imports the module that does its work when it is first
# called, not here: a worker that only reads its environment then starts as
# fast as bare Python (pip's, HTTP's and threads' modules cost milliseconds).

__all__ = [
    "THREAD_POOL_SIZE",
    "Client",
    "InstallError",
    "LaunchError",
    "SenseAPIError",
    "SenseConfigError",
    "SenseConnectionError",
    "SenseError",
    "awaitPeers",
    "awaitWorkers",
    "await_peers",
    "await_workers",
    "getAuth",
    "getMaster",
    "getWorkers",
    "get_auth",
    "get_master",
    "install",
    "launchWorkers",
    "launch_workers",
    "list_workers",
    "networkInfo",
    "network_info",
    "stopWorkers",
    "stop_workers",
]


def install(
    package_name: str | Iterable[str],
    flags: Iterable[str] = (),
    arguments: Mapping[str, str] | None = None,
) -> None:
    """Install a package with pip into the running interpreter's environment.

    Runs ``python -m pip install PACKAGE [--user] FLAGS ARGUMENTS`` with this
    interpreter, as an argument list (never through a shell). pip's output
    appears as it comes, in the notebook cell that called it, and the
    package can be imported right afterwards, without a restart.

    ``--user`` is passed as in the original (on Sense this installs into
    the project, for every later dashboard), except inside a virtual
    environment or where user site-packages are disabled, where pip would
    refuse it: there the package goes into that environment.

    Parameters
    ----------
    package_name : str or list of str
        A requirement (``"requests>=2"``), a path to a wheel, or a URL; or a list of them.
    flags : list of str
        pip flags without dashes: ``["U", "use-mirrors"]`` becomes ``-U --use-mirrors``.
    arguments : dict of str to str
        pip options with values: ``{"d": "./downloads", "mirrors": "http://URL"}``
        becomes ``-d ./downloads --mirrors=http://URL``.

    Raises
    ------
    ValueError
        A package name is empty or starts with ``-`` (pip would read it as an
        option), a flag or argument is malformed, or one of the three is not
        of the kind above (``None``, ``bytes``). Nothing has run.
    InstallError
        pip failed (its exit code and last lines are attached) or is missing.

    Examples
    --------
    >>> import sense
    >>> sense.install("beautifulsoup4", flags=["U"])  # doctest: +SKIP
    """
    from sense import installer

    installer.install(package_name, flags, arguments)


def networkInfo() -> dict:
    """This dashboard's contact information.

    Returns
    -------
    dict
        ``public_dns`` (str), ``public_port_mapping`` (dict of int private
        port to int public port; port 22 is the SSH daemon), ``ssh_password``
        (str or None) and ``project_ip`` (str: the address that the other
        dashboards of the project reach this one on, on any port).

    Raises
    ------
    SenseConfigError
        Not on a dashboard (``SENSE_PROJECT_IP`` unset), or a port variable is not a number.

    Examples
    --------
    >>> info = sense.networkInfo()  # doctest: +SKIP
    >>> server_port = info["public_port_mapping"][3000]  # doctest: +SKIP
    """
    from sense import network

    return network.info()


def launchWorkers(
    n: int,
    size: str | int = "small",
    engine: str = "sense-ipython-engine",
    startupScript: str = "",
    startupCode: str = "",
    env: Mapping[str, str] | None = None,
) -> list[dict]:
    """Launch ``n`` worker dashboards whose master is this dashboard.

    The launch requests go out concurrently (at most ``sense.THREAD_POOL_SIZE``
    at once). All or nothing: the first launch that fails stops the sending
    of more, those that did launch are stopped again, and :class:`LaunchError`
    is raised. Should the API be unreachable for the clean-up, it gives up at
    once and the error names the workers that may still run.

    Parameters
    ----------
    n : int
        How many workers, at least 1.
    size : str or int
        ``"small"``, ``"medium"`` or ``"large"`` (or an int size).
    engine : str
        The engine the workers run.
    startupScript : str
        A Python file each worker runs when it starts.
    startupCode : str
        Python code each worker runs when it starts. Not together with ``startupScript``.
    env : dict of str to str
        Environment variables set on the workers (no NUL byte, no ``=`` in a name).

    Returns
    -------
    list of dict
        The new workers' dashboards, in request order: the order the server received
        the launches in (ascending ids).

    Raises
    ------
    ValueError
        Bad arguments; nothing was launched.
    SenseConfigError
        Called on a worker (only a master launches), or not on a dashboard.
    LaunchError
        Some launches failed; none of the workers is left running.

    Examples
    --------
    >>> workers = sense.launchWorkers(2, "medium", startupCode="print('ready')")  # doctest: +SKIP
    >>> [w["status"] for w in workers]  # doctest: +SKIP
    ['starting', 'starting']
    """
    from sense import client

    return client.default().launchWorkers(n, size, engine, startupScript, startupCode, env)


def getWorkers() -> list[dict]:
    """The running dashboards of this cluster: the master and every worker it has.

    Works on the master and on any of its workers alike. Workers still
    ``starting`` (as ``launchWorkers`` returns them) are not listed until they
    run: :func:`awaitWorkers` waits for that.

    Examples
    --------
    >>> [w["id"] for w in sense.getWorkers()]  # doctest: +SKIP
    [3, 7, 8]
    """
    from sense import client

    return client.default().getWorkers()


def stopWorkers(*ids: int | str | dict) -> list[dict]:
    """Stop workers of this cluster.

    Parameters
    ----------
    *ids : int, str or dict
        Dashboard ids (or the dashboards themselves). None given: every
        worker of the cluster that has not ended, ``starting`` ones included;
        the cluster shrinks to its master.

    Returns
    -------
    list of dict
        The stopped dashboards. Stopping a worker that already stopped is no error.

    Examples
    --------
    >>> sense.stopWorkers(7, 8)  # doctest: +SKIP
    >>> sense.stopWorkers()  # doctest: +SKIP
    """
    from sense import client

    return client.default().stopWorkers(*ids)


def getAuth() -> dict[str, str]:
    """Credentials for the REST API, for ``requests``: ``{"user": ..., "pass": ...}``.

    The API token as user and an empty password, or else ``SENSE_USERNAME``
    and ``SENSE_PASSWORD``.

    Examples
    --------
    >>> auth = sense.getAuth()  # doctest: +SKIP
    >>> requests.get(url, auth=(auth["user"], auth["pass"]))  # doctest: +SKIP
    """
    from sense import client

    return client.default().getAuth()


def getMaster() -> dict:
    """The master dashboard of this cluster (this dashboard itself, on a master).

    Examples
    --------
    >>> sense.getMaster()["master_id"] is None  # doctest: +SKIP
    True
    """
    from sense import client

    return client.default().getMaster()


def awaitWorkers(
    ids: Iterable[int | str | dict] | None = None,
    wait_for_completion: bool = False,
    timeout_seconds: float = 60,
) -> dict[str, list[dict]]:
    """Wait until workers are running, or with ``wait_for_completion`` until they have ended.

    While it waits, a line tells how many are there yet: updated in place in
    a notebook and on a terminal, silent in a pipe or a log file.

    Parameters
    ----------
    ids : list of int, str or dict, optional
        The workers (ids or dashboards). None: every worker of the cluster
        that has not ended yet.
    wait_for_completion : bool
        Wait for the workers to end rather than to run.
    timeout_seconds : float
        How long to wait at the most (finite, >= 0).

    Returns
    -------
    dict
        ``{"workers": [...], "failures": [...]}``: the dashboards that reached
        the state, and those that did not (failed, or still on their way at
        the timeout, with the status they had then). A timeout raises
        nothing, as the successor's ``await_workers``: a worker in
        ``"failures"`` may still run.

    Examples
    --------
    >>> result = sense.awaitWorkers(sense.launchWorkers(4))  # doctest: +SKIP
    >>> len(result["workers"]), result["failures"]  # doctest: +SKIP
    (4, [])
    """
    from sense import client

    return client.default().awaitWorkers(ids, wait_for_completion, timeout_seconds)


def awaitPeers(
    n: int | None = None, port: int | None = None, timeout_seconds: float = 60
) -> list[dict]:
    """The other workers of this cluster, as this dashboard reaches them, once each listens.

    For peer-to-peer work: every worker of the cluster that has not ended (this
    dashboard and the master aside) is waited for until it runs and accepts a
    TCP connection on its port (the connection is closed at once).

    Parameters
    ----------
    n : int, optional
        How many peers to wait for at least (the cluster's size minus one, on
        a worker: the launches of the others may not have reached the server
        yet). None: those of the cluster now.
    port : int, optional
        The port every peer listens on. None: each its own first port (its
        ``SENSE_PORT1``).
    timeout_seconds : float
        How long to wait at the most (finite, >= 0).

    Returns
    -------
    list of dict
        ``{"id": int, "host": str, "port": int}`` per peer, by id: ``host`` is
        its ``project_ip``, where the other dashboards of the project reach it.

    Raises
    ------
    TimeoutError
        Not every peer listened in time; the message says which did not.

    Examples
    --------
    >>> peers = sense.awaitPeers(n=3, port=5000)  # doctest: +SKIP
    >>> [(p["host"], p["port"]) for p in peers]  # doctest: +SKIP
    [('127.0.0.3', 5000), ('127.0.0.4', 5000), ('127.0.0.5', 5000)]
    """
    from sense import client

    return client.default().awaitPeers(n, port, timeout_seconds)


def launch_workers(
    n: int,
    size: str | int = "small",
    engine: str = "sense-ipython-engine",
    script: str = "",
    code: str = "",
    env: Mapping[str, str] | None = None,
) -> list[dict]:
    """:func:`launchWorkers` with the parameter names of sense 0.1.2 (``script``, ``code``)."""
    return launchWorkers(n, size, engine, startupScript=script, startupCode=code, env=env)


network_info = networkInfo
list_workers = getWorkers
stop_workers = stopWorkers
get_auth = getAuth
get_master = getMaster
await_workers = awaitWorkers
await_peers = awaitPeers
