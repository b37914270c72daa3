"""ipyparallel engines on sense workers: ``ipyparallel.Cluster(engines="sense")``.

:class:`SenseEngineSetLauncher` is registered on ipyparallel's entry-point group
``ipyparallel.engine_launchers`` under the name ``sense`` (``pip install
'sense[ipyparallel]'``): each engine is one worker dashboard of this master,
running ``ipengine`` with the controller's connection information, and stopping
the engines (``cluster.stop_engines()``, ``stop_cluster()``) stops those dashboards.

>>> import ipyparallel as ipp
>>> with ipp.Cluster(engines="sense", n=4) as rc:  # doctest: +SKIP
...     rc[:].map_sync(abs, [-1, -2, -3, -4])
[1, 2, 3, 4]
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import signal as signals
import threading
import time
from urllib.parse import urlsplit

from ipyparallel.cluster.launcher import EngineLauncher, LauncherError, NotRunning
from traitlets import Float, List, Union
from traitlets import Integer as IntegerTrait
from traitlets import Unicode as UnicodeTrait

import sense
from sense import frameworks
from sense.errors import SenseConnectionError

#: How often the launcher asks whether its engines' dashboards have ended (seconds).
WATCH_INTERVAL = 0.5


#: What ipengine raises when it stops on SIGTERM, its event loop ended before its start
#: returned (ipyparallel 9 with ipykernel 7): its own way to stop, not a failure.
STOPPED_ENGINE = "Event loop stopped before Future completed"


def _startup_code(argv: list[str]) -> str:
    # Guarded: a process that multiprocessing spawns from the dashboard runs the code again.
    return (
        "from ipyparallel.engine.app import IPEngine\n"
        "if __name__ == '__main__':\n"
        "    try:\n"
        f"        IPEngine.launch_instance(argv={argv!r})\n"
        "    except RuntimeError as error:\n"
        f"        if {STOPPED_ENGINE!r} not in str(error):\n"
        "            raise\n"
    )


def _check_reachable(connection_info: str) -> None:
    """Refuse a controller on loopback when this dashboard's project address is not one."""
    if not connection_info:
        return
    interface = json.loads(connection_info).get("interface", "")
    host = urlsplit(interface).hostname or ""
    here = sense.networkInfo()["project_ip"]
    try:
        unreachable = ipaddress.ip_address(host).is_loopback and not (
            ipaddress.ip_address(here).is_loopback
        )
    except ValueError:  # a name, not an address: the engines resolve it as the master does
        return
    if unreachable:
        raise LauncherError(
            f"the controller listens on {host}, which engines on other hosts cannot reach: "
            f"make it listen on this dashboard's project address, ipyparallel.Cluster("
            f"engines='sense', controller_ip={here!r})"
        )


class SenseEngineSetLauncher(EngineLauncher):
    """Launch a set of ipyparallel engines, each a sense worker dashboard of this master.

    Configurable as any engine launcher (``c.SenseEngineSetLauncher.size = "large"``, or
    ``ipyparallel.Cluster(engines="sense", config=...)``): ``size`` of the dashboards,
    ``engine_args`` passed to ``ipengine``, ``environment`` added to theirs, and
    ``stop_timeout``. A stop sends SIGTERM to each engine's processes, then SIGKILL after
    the server's grace period, as ipyparallel's local launcher does.

    Examples
    --------
    >>> cluster = ipyparallel.Cluster(engines="sense", n=4)  # doctest: +SKIP
    >>> rc = cluster.start_and_connect_sync()  # doctest: +SKIP
    """

    size = Union(
        [UnicodeTrait(), IntegerTrait()],
        default_value="small",
        config=True,
        help="The size of each engine's dashboard: 'small', 'medium', 'large' or an int.",
    )
    engine_args = List(
        ["--log-level=WARN"],
        config=True,
        help="Command-line arguments of ipengine. By default its log shows warnings and worse "
        "only: it is the dashboard's output, which `sense run` shows on its console (ipyparallel's "
        "own launchers write it to a file).",
    )
    watch_interval = Float(
        WATCH_INTERVAL, config=True, help="Seconds between two looks at the engines' dashboards."
    )
    #: The engines' dashboards: id and master id of each (kept by ``to_dict``).
    dashboards = List().tag(to_dict=True)

    _client = None
    _ended: threading.Event | None = None
    _output = None

    @property
    def client(self) -> sense.Client:
        """The sense client that launches and stops the dashboards (this dashboard's, its
        project's URL and credentials read at the first call)."""
        if self._client is None:
            self._client = frameworks.pinned_client()
        return self._client

    def find_args(self) -> list[str]:
        return ["sense engine set", *self.engine_args]

    async def start(self, n: int) -> list[int]:
        """Launch ``n`` engines, all or none; return their dashboards' ids."""
        environment = self.get_env()
        _check_reachable(environment.get("IPP_CONNECTION_INFO", ""))
        launched = await frameworks.launch(
            self.client, n, _startup_code(list(self.engine_args)), self.size, environment
        )
        self.dashboards = [{"id": d["id"], "master_id": d["master_id"]} for d in launched]
        self.n = n
        self._watch()
        return self.notify_start([d["id"] for d in self.dashboards])

    def _watch(self) -> None:
        # A thread, as ipyparallel's local launcher waits for its processes: its synchronous
        # methods run each call on an event loop of its own, which no task would outlive.
        self._ended = threading.Event()
        # The loop to tell is this thread's: take it now (ipyparallel's local launcher does so).
        self._loop = self.loop
        threading.Thread(target=self._until_ended, daemon=True, name="sense engines").start()

    def _until_ended(self) -> None:
        """Tell ipyparallel once every engine has ended (stopped, or shut down by a client)."""
        try:
            while len(gone := frameworks.ended(self.client, self.dashboards)) < len(
                self.dashboards
            ):
                time.sleep(self.watch_interval)
            self._output = self._read_output()
        except SenseConnectionError:
            # No server answers any more: the engines ended with it, how is not known.
            gone = {d["id"]: {"exit_code": None, "status": "failed"} for d in self.dashboards}
        engines = {i: {"exit_code": d["exit_code"], "status": d["status"]} for i, d in gone.items()}
        failed = [e["exit_code"] for e in engines.values() if e["status"] != "stopped"]
        stop_data = {"exit_code": failed[0] if failed else 0, "engines": engines}
        self._ended.set()
        running = getattr(self._loop, "asyncio_loop", None)
        if running is not None and running.is_running():
            self._loop.add_callback(lambda: self.notify_stop(stop_data))
        else:
            # The call that started the engines was synchronous (``start_cluster_sync``): its
            # loop has closed, and no loop would run the callback. Tell ipyparallel from here.
            self.notify_stop(stop_data)

    def _read_output(self) -> str:
        return "\n".join(
            f"Output for engine dashboard {d['id']}:\n{frameworks.tail(self.client, d['id'])}"
            for d in self.dashboards
        )

    def get_output(self, remove: bool = False) -> str:
        return self._output or ""

    async def stop(self) -> None:
        """Stop every engine's dashboard; return once ipyparallel has been told they ended."""
        if self.dashboards:
            await frameworks.end(self.client, self.dashboards, grace=0)
        await self.join(self.stop_timeout)

    async def join(self, timeout: float | None = None) -> None:
        if self._ended is not None and not await asyncio.to_thread(self._ended.wait, timeout):
            raise TimeoutError(f"the engines' dashboards did not end within {timeout} s")

    async def signal(self, sig: int | str) -> None:
        """SIGTERM or SIGKILL stops the engines (a sense dashboard takes no other signal)."""
        number = getattr(signals, f"SIG{sig}", None) if isinstance(sig, str) else sig
        if number not in (signals.SIGTERM, signals.SIGKILL):
            raise LauncherError(
                f"sense dashboards cannot be sent signal {sig}: only stopped (SIGTERM, then "
                "SIGKILL); interrupt a task with the client's abort()"
            )
        await frameworks.end(self.client, self.dashboards, grace=0)

    @classmethod
    def from_dict(cls, d: dict, **kwargs) -> SenseEngineSetLauncher:
        """The launcher of engines that still run, as :meth:`to_dict` left them."""
        self = super().from_dict(d, **kwargs)
        if len(frameworks.ended(self.client, self.dashboards)) == len(self.dashboards):
            raise NotRunning("none of the engines' dashboards runs any more")
        self._watch()
        return self
