"""The Ray backend: dashboards placed across the nodes of a Ray cluster.

The server is the Ray driver. Ray places each dashboard (a placement group
of one bundle: the CPUs of its size, spread over the nodes), and one
long-lived agent actor per node starts it there as a process
group running the same small engine as the local backend. Starting a
process through a warm agent takes milliseconds, where an actor per
dashboard would start a fresh Ray worker each time (seconds).

Fate-sharing: the agents are ordinary (not detached) actors of the driver,
so Ray ends them when the server ends, even by SIGKILL; each engine then
sees its socket to the agent close and kills its whole process group. For
that the agents run with ``RAY_kill_child_processes_on_worker_exit=false``:
otherwise the Ray worker SIGKILLs its direct children (the engines) on
exit, and whatever the jobs started would be orphaned instead of ending
with their group.

A dashboard that shares the console of ``sense run`` (its script) runs on
the server's own node, in the server's process group as locally: an agent's
output goes to Ray's logs, not to a terminal.

The cluster is one started the ordinary way (``ray start``): a launch that
finds no free CPUs within ``placement_timeout`` is refused as one past the
quota (:class:`~sense.local.backends.NoRoomError`). An operator may cap the
dashboards of each node with the custom resource ``sense_slot`` (``ray start
--resources '{"sense_slot": 8}'``): when a node offers it, each dashboard
takes one too, and nodes without it run none. The project folder is shipped
to the nodes with Ray's ``runtime_env`` (``working_dir``), and the ``sense``
package with it (``py_modules``): a node needs only Ray, with the server's
Python version.

The server must be a driver on a node of the cluster, not a Ray Client
(``ray://``): its dashboards call its API at its node's address, the
script of ``sense run`` and the logs of ended dashboards live in its
project folder, and its agents end with it (see docs/ray.md).

Example
-------
>>> backend = RayBackend("/srv/project", StateDir("/srv/project"),
...                      ray_address="10.0.0.1:6379")                # doctest: +SKIP
>>> spec = LaunchSpec(1, "worker", context=lambda placement: {}, code="print('hi')")
>>> backend.launch(spec).project_ip                                  # doctest: +SKIP
'10.0.0.12'
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import ray
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.util.placement_group import (
    PlacementGroup,
    placement_group,
    placement_group_table,
    remove_placement_group,
)
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

import sense
from sense.errors import SenseConfigError
from sense.local.backends import Backend, LaunchSpec, NoRoomError, Placement
from sense.local.backends.local import CHUNK, LocalBackend, free_port
from sense.local.backends.ray_agent import NodeAgent
from sense.local.statedir import StateDir, open_no_link

#: The custom resource by which an operator caps the dashboards a node runs at once (optional).
SLOT = "sense_slot"
#: The CPUs a dashboard of each size reserves; a number is that many CPUs (0: none).
CPUS = {"small": 0.5, "medium": 1.0, "large": 2.0}
#: What a dashboard of size 0 reserves where no node offers a slot: a bundle must ask for
#: something, and this is the least amount of a resource that Ray counts.
LEAST_CPU = 0.0001
#: How ``ray.init`` is told to connect as a Ray Client, which the server cannot be.
CLIENT_SCHEME = "ray://"
#: How long one call for an agent's news waits, in seconds.
POLL_SECONDS = 10.0
#: How long stop() and shutdown() wait for the news of an end they caused, in seconds: the
#: agent has seen it; this is only its way to the listeners, on a loaded machine.
NEWS_SECONDS = 60.0
#: Calls an agent serves at once: its news, and stops, which last up to twice the grace.
AGENT_CONCURRENCY = 64

_Agent = ray.remote(NodeAgent)
logger = logging.getLogger("sense.local")


def cpus_for(size: str | int) -> float:
    """The CPUs that a dashboard of ``size`` reserves on its node.

    ``small`` 0.5, ``medium`` 1, ``large`` 2; a number ``n`` (0 to 16) is ``n`` CPUs.

    >>> cpus_for("medium"), cpus_for(4)
    (1.0, 4.0)
    """
    if isinstance(size, str) and size in CPUS:
        return CPUS[size]
    if type(size) is int and 0 <= size <= 16:
        return float(size)
    raise ValueError(f"size should be one of {', '.join(CPUS)} or an int from 0 to 16")


class PlacementError(OSError):
    """A dashboard's node went away while it started: it could not start, as a process that
    the system refuses cannot."""


@dataclass
class _Node:
    """A node of the cluster with its agent."""

    node_id: str
    ip: str
    agent: ray.actor.ActorHandle
    is_servers: bool
    follower: threading.Thread | None = None


@dataclass
class _Dashboard:
    """What the backend knows of one dashboard it launched."""

    node: _Node
    group: PlacementGroup
    #: Whether its output is on this machine's disk (on the server's node, or kept after it ended).
    log_here: bool
    exit_code: int | None = None
    ended: threading.Event = field(default_factory=threading.Event)


class RayBackend(Backend):
    """Dashboards as process groups on the nodes of a Ray cluster, placed by Ray.

    Parameters
    ----------
    ray_address : str, optional
        What ``ray.init(address=...)`` takes: ``HOST:PORT`` of the head, or ``auto``
        (None: ``$RAY_ADDRESS``, else a cluster started on this machine); not ``ray://``.
    placement_timeout : float
        How long a launch waits for room on the cluster (Ray freeing what ended, or an
        autoscaler adding a node) before it is refused.
    prestart : bool
        Fork dashboards from a prestarted engine on each node (on by default).

    The other parameters are :class:`~sense.local.backends.Backend`'s. The quota is
    ``max_workers`` if given, else the ``small`` dashboards the cluster's CPUs hold; when
    nodes offer a ``sense_slot``, it is their total, capped by ``max_workers``.

    Raises
    ------
    SenseConfigError
        This process is already connected to Ray, or ``ray_address`` is a Ray Client's.
    """

    name = "ray"
    # Every job runs with the node's Python: an R or JavaScript engine cannot run.
    engine_pattern = "[Pp][Yy][Tt][Hh][Oo][Nn]"

    def __init__(
        self,
        project_dir,
        state: StateDir,
        *,
        ray_address: str | None = None,
        placement_timeout: float = 10.0,
        prestart: bool = True,
        **options,
    ) -> None:
        _check_address(ray_address)
        if ray.is_initialized():
            raise SenseConfigError(
                "this process is already connected to Ray: the ray backend makes the "
                "connection itself, to ship the project with it; start sense first"
            )
        super().__init__(project_dir, state, **options)
        self.placement_timeout = placement_timeout
        self.prestart = prestart
        self._nodes: dict[str, _Node] = {}
        self._dashboards: dict[int, _Dashboard] = {}
        #: The nodes that launches under way have been steered to, and every launch has been
        #: steered to, by node id.
        self._placing: collections.Counter[str] = collections.Counter()
        self._steered: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._joining = threading.Lock()
        #: Set once the agents are going away: their end is no news then.
        self._closing = threading.Event()
        self._shut_down = False
        # The script of `sense run` shares the server's console, so it runs in the server's
        # own process group, as locally; this also reads the output kept on this machine.
        self._here = LocalBackend(project_dir, state, grace=self.grace, prestart=False)
        self._here.subscribe(self.report_running, self.report_exit)
        ray.init(
            address=ray_address,
            runtime_env={
                "working_dir": self.project_dir,
                # The server's state (its token, database and logs) stays on the server.
                "excludes": [".sense", ".git"],
                "py_modules": [os.path.dirname(sense.__file__)],
                "env_vars": {"RAY_kill_child_processes_on_worker_exit": "false"},
            },
            # Dashboards' output goes to their logs; Ray's own chatter stays in Ray's.
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
        try:
            self._server_node = ray.get_runtime_context().get_node_id()
            #: The address of the server's own node: where the nodes reach the server's API,
            #: and the ``project_ip`` of a master that is the server's process.
            self.server_ip = ray.util.get_node_ip_address()
            #: Whether an operator caps dashboards per node: then only nodes with a slot run any.
            self.slotted = any(node["Resources"].get(SLOT) for node in _alive_nodes())
            started = [
                self._start_agent(node["NodeID"], node["NodeManagerAddress"])
                for node in self._runners()
            ]
            ray.get([node.agent.pid.remote() for node in started])
            for node in started:
                self._follow(node)
        except BaseException:
            self._closing.set()
            ray.shutdown()
            raise

    def listen_host(self) -> str:
        """The server's node IP: the API must be reachable from every node."""
        return self.server_ip

    # -- what it accepts ----------------------------------------------------------------------

    @classmethod
    def check_options(cls, *, ray_address: str | None = None, **options) -> None:
        _check_address(ray_address)

    def refusal(self, engine: str, size: str | int) -> str | None:
        if super().refusal(engine, size) is not None:
            return f"engine {engine!r} is not available: the Ray backend runs Python engines only"
        try:
            cpus = cpus_for(size)
        except ValueError as error:
            return str(error)
        largest = max((node["Resources"].get("CPU", 0.0) for node in self._runners()), default=0.0)
        if cpus > largest:
            return (
                f"no node of the Ray cluster has {cpus:g} CPUs for a dashboard of size "
                f"{size!r} (the most a node has is {largest:g})"
            )
        return None

    def capacity(self) -> int:
        if self.slotted:
            slots = int(ray.cluster_resources().get(SLOT, 0))
            return slots if self.max_workers is None else min(slots, self.max_workers)
        if self.max_workers is not None:
            return self.max_workers
        return int(ray.cluster_resources().get("CPU", 0) / CPUS["small"])

    def _bundle(self, cpus: float) -> dict[str, float]:
        """What a dashboard reserving ``cpus`` asks Ray for (a slot too, where nodes offer one)."""
        bundle = {"CPU": cpus} if cpus else {}
        if self.slotted:
            bundle[SLOT] = 1
        return bundle or {"CPU": LEAST_CPU}

    def _no_room(self, size: str | int, bundle: dict[str, float]) -> str:
        """Why a dashboard of ``size`` (asking for ``bundle``) is refused: how many would fit."""
        fit = sum(
            min(int(node["Resources"].get(name, 0) / amount) for name, amount in bundle.items())
            for node in self._runners()
        )
        asked = " and ".join(f"{amount:g} {name}" for name, amount in bundle.items())
        return (
            f"the Ray cluster has no room for a dashboard of size {size!r} ({asked}): its "
            f"nodes hold {fit} of that size, and none was free within "
            f"{self.placement_timeout:g} s (see `ray status`; stop some, or add nodes)"
        )

    # -- life cycle ---------------------------------------------------------------------------

    def attach(self, dashboard_id: int) -> Placement:
        port = free_port()
        handle = {"backend": self.name, "pid": os.getpid()}
        return Placement(handle, self.server_ip, {port: port})

    def launch(self, spec: LaunchSpec) -> Placement:
        if spec.console:
            return self._launch_here(spec)
        problem = self.refusal(spec.engine, spec.size)
        if problem:
            raise ValueError(problem)
        bundle = self._bundle(cpus_for(spec.size))
        target = self._least_used_node()
        # One bundle a group: Ray's SPREAD would spread only the bundles of one group, so the
        # spread over the nodes is this hint (Ray places the bundle elsewhere when that node
        # has no room; the hint works with STRICT_PACK only).
        group = placement_group([bundle], strategy="STRICT_PACK", _soft_target_node_id=target)
        try:
            if not group.wait(self.placement_timeout):
                raise NoRoomError(self._no_room(spec.size, bundle))
            node = self._node(placement_group_table(group)["bundles_to_node_id"][0])
            port = ray.get(node.agent.free_port.remote())
            handle = {
                "backend": self.name,
                "node_id": node.node_id,
                "placement_group": group.id.hex(),
            }
            placement = Placement(handle=handle, project_ip=node.ip, ports={port: port})
            context = spec.context(placement)
            # Known before it starts: its first news may come before the agent answers.
            self._dashboards[spec.dashboard_id] = _Dashboard(node, group, log_here=node.is_servers)
            job = {
                "name": spec.name,
                "code": spec.code,
                "script": self._script_on(node, spec.script),
                "argv": spec.argv,
                "env": spec.env,
            }
            process = ray.get(node.agent.launch.remote(spec.dashboard_id, job, context))
        except BaseException as error:
            self._dashboards.pop(spec.dashboard_id, None)
            remove_placement_group(group)
            if isinstance(error, RayActorError):
                raise PlacementError(
                    f"dashboard {spec.dashboard_id} could not start: its Ray node went away"
                ) from error
            raise
        finally:
            with self._lock:
                self._placing[target] -= 1
        return Placement({**handle, **process}, placement.project_ip, placement.ports)

    def _least_used_node(self) -> str | None:
        """The node that runs the fewest of this server's dashboards, those being placed
        included (counted as placed from now on, until the launch has ended either way); of
        those that run as few, the one steered to least often, so that short jobs launched
        one after the other go round the nodes too."""
        runners = [node["NodeID"] for node in self._runners()]
        with self._lock:
            used = collections.Counter(
                dashboard.node.node_id
                for dashboard in self._dashboards.values()
                if not dashboard.ended.is_set()
            )
            used.update(self._placing)
            target = min(
                runners, key=lambda node_id: (used[node_id], self._steered[node_id]), default=None
            )
            self._placing[target] += 1
            self._steered[target] += 1
        return target

    def _launch_here(self, spec: LaunchSpec) -> Placement:
        """Run a dashboard that shares the server's console in the server's own process group."""
        port = free_port()
        placement = Placement({"backend": self.name}, self.server_ip, {port: port})
        context = spec.context(placement)
        local = LaunchSpec(**{**vars(spec), "context": lambda _placement: context})
        handle = self._here.launch(local).handle
        return Placement({**handle, "backend": self.name}, placement.project_ip, placement.ports)

    def stop(self, dashboard_id: int) -> None:
        self._here.stop(dashboard_id)
        dashboard = self._dashboards.get(dashboard_id)
        if dashboard is None or dashboard.ended.is_set():
            return
        # If its node is gone, the follower of that node reports it.
        with contextlib.suppress(RayActorError):
            ray.get(dashboard.node.agent.stop.remote(dashboard_id))
        # The agent has seen it end; its follower reports that in a moment.
        dashboard.ended.wait(NEWS_SECONDS)

    def interrupt(self, dashboard_id: int) -> None:
        self._here.interrupt(dashboard_id)
        dashboard = self._dashboards.get(dashboard_id)
        if dashboard is not None and not dashboard.ended.is_set():
            # If its node is gone, there is nothing left to interrupt.
            with contextlib.suppress(RayActorError):
                ray.get(dashboard.node.agent.interrupt.remote(dashboard_id))

    def wait(self, dashboard_id: int, timeout: float | None = None) -> int | None:
        dashboard = self._dashboards.get(dashboard_id)
        if dashboard is None:
            return self._here.wait(dashboard_id, timeout)
        if not dashboard.ended.wait(timeout):
            return None
        return dashboard.exit_code

    def read_logs(
        self, dashboard_id: int, offset: int = 0, limit: int | None = None
    ) -> Iterator[bytes]:
        """See :meth:`Backend.read_logs`. Output on another node is read through its agent,
        counted as there; once copied here (its dashboard ended), from its first byte kept."""
        dashboard = self._dashboards.get(dashboard_id)
        if dashboard is None or dashboard.log_here:
            yield from self._here.read_logs(dashboard_id, offset, limit)
            return
        if offset < 0:
            offset = max(0, self.log_size(dashboard_id) + offset)
        while limit is None or limit > 0:
            size = CHUNK if limit is None else min(CHUNK, limit)
            try:
                chunk = ray.get(dashboard.node.agent.read_log.remote(dashboard_id, offset, size))
            except RayActorError:
                chunk = b""  # its node is gone: what it had written stayed there
            if not chunk:
                if dashboard.log_here:
                    # It ended meanwhile, and its output was copied here (and forgotten
                    # there): the rest is in the copy, at the same offsets.
                    yield from self._here.read_logs(dashboard_id, offset, limit)
                return
            yield chunk
            offset += len(chunk)
            if limit is not None:
                limit -= len(chunk)

    def log_size(self, dashboard_id: int) -> int:
        dashboard = self._dashboards.get(dashboard_id)
        if dashboard is not None and not dashboard.log_here:
            with contextlib.suppress(RayActorError):  # gone: whatever was kept here is all
                return ray.get(dashboard.node.agent.log_size.remote(dashboard_id))
        return self._here.log_size(dashboard_id)

    @classmethod
    def recover(cls, handles: Iterable[dict]) -> None:
        # Nothing is left to end: the agents are ordinary actors of the earlier server, so Ray
        # ended them with it, and each engine then ended its group (see the module's text).
        # A restarted server may not even reach that cluster.
        return None

    def shutdown(self) -> None:
        with self._lock:
            if self._shut_down:
                return  # done already: a call to an agent now would connect to Ray anew
            self._shut_down = True
            nodes = list(self._nodes.values())
        _wait_for_agents([node.agent.stop_all.remote() for node in nodes])
        for dashboard in list(self._dashboards.values()):
            dashboard.ended.wait(NEWS_SECONDS)
        self._closing.set()
        _wait_for_agents([node.agent.shutdown.remote() for node in nodes])
        for node in nodes:
            ray.kill(node.agent)
        for node in nodes:
            node.follower.join()
        ray.shutdown()
        self._here.shutdown()

    # -- nodes and their agents ---------------------------------------------------------------

    def _runners(self) -> list[dict]:
        """The nodes that may run dashboards: every node, or those offering a slot."""
        return [node for node in _alive_nodes() if not self.slotted or node["Resources"].get(SLOT)]

    def _start_agent(self, node_id: str, ip: str) -> _Node:
        """Start the agent of node ``node_id`` (not waiting for it to be up)."""
        is_servers = node_id == self._server_node
        agent = _Agent.options(
            # On that node and nowhere else, and never restarted: its dashboards died with it.
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
            num_cpus=0,
            max_restarts=0,
            max_concurrency=AGENT_CONCURRENCY,
        ).remote(self.project_dir if is_servers else None, grace=self.grace, prestart=self.prestart)
        node = _Node(node_id, ip, agent, is_servers)
        with self._lock:
            self._nodes[node_id] = node
        return node

    def _node(self, node_id: str) -> _Node:
        """Node ``node_id`` with its agent, started now if the node joined after the server."""
        # One agent per node, even when launches race to a node that has just joined.
        with self._joining:
            with self._lock:
                node = self._nodes.get(node_id)
            if node is None:
                ip = next(n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == node_id)
                node = self._start_agent(node_id, ip)
                ray.get(node.agent.pid.remote())
                self._follow(node)
        return node

    def _follow(self, node: _Node) -> None:
        node.follower = threading.Thread(
            target=self._report, args=(node,), daemon=True, name=f"sense-ray-{node.ip}"
        )
        node.follower.start()

    def _report(self, node: _Node) -> None:
        """Pass on what node's agent reports, until it is gone."""
        while True:
            try:
                events = ray.get(node.agent.events.remote(POLL_SECONDS))
            except ActorUnavailableError:
                time.sleep(0.5)  # unreachable for a moment; it may answer again
                continue
            except RayActorError:
                if not self._closing.is_set():
                    self._lose(node)
                return
            for event in events:
                try:
                    self._pass_on(node, event)
                except Exception:
                    # The news of the other dashboards must still go through.
                    logger.exception("the Ray backend could not pass on %s from %s", event, node.ip)

    def _pass_on(self, node: _Node, event: tuple) -> None:
        """Tell the listeners one event of node's agent (see :meth:`NodeAgent.events`)."""
        if event[0] == "running":
            try:
                self.report_running(event[1])
            finally:
                # Recorded: the job, held until now, starts (and sees itself running).
                node.agent.heard.remote(event[1])
        else:
            _, dashboard_id, code, reason = event
            self._ended(dashboard_id, code, reason)

    def _lose(self, node: _Node) -> None:
        """Node's agent is gone, with every process it ran: its dashboards have failed."""
        with self._lock:
            self._nodes.pop(node.node_id, None)
        alive = any(n["Alive"] for n in ray.nodes() if n["NodeID"] == node.node_id)
        why = (
            f"the sense agent on Ray node {node.ip} died"
            if alive
            else f"Ray node {node.ip} was lost"
        )
        for dashboard_id, dashboard in list(self._dashboards.items()):
            if dashboard.node is node and not dashboard.ended.is_set():
                logger.warning("dashboard %d failed: %s", dashboard_id, why)
                if not dashboard.log_here:
                    with open_no_link(self.state.log_path(dashboard_id), "ab") as log:
                        log.write(f"\n({why}: this dashboard's output stayed there)\n".encode())
                    dashboard.log_here = True
                self._ended(dashboard_id, None, "lost")

    def _ended(self, dashboard_id: int, code: int | None, reason: str) -> None:
        """Dashboard ``dashboard_id`` has ended: keep its output, free its room, tell."""
        dashboard = self._dashboards.get(dashboard_id)
        if dashboard is None or dashboard.ended.is_set():
            return
        try:
            if not dashboard.log_here:
                self._keep_log(dashboard_id, dashboard)
            remove_placement_group(dashboard.group)
            dashboard.exit_code = code
            self.report_exit(dashboard_id, code, reason)
        finally:
            dashboard.ended.set()

    def _keep_log(self, dashboard_id: int, dashboard: _Dashboard) -> None:
        """Copy an ended dashboard's output from its node to this machine."""
        agent = dashboard.node.agent
        offset = 0
        path = self.state.log_path(dashboard_id)
        path.unlink(missing_ok=True)
        with open_no_link(path, "ab") as log:
            try:
                while chunk := ray.get(agent.read_log.remote(dashboard_id, offset, CHUNK)):
                    log.write(chunk)
                    offset += len(chunk)
            except RayActorError:
                log.write(
                    f"\n(the rest stayed on Ray node {dashboard.node.ip}, now gone)\n".encode()
                )
        dashboard.log_here = True
        agent.forget.remote(dashboard_id)

    # -- helpers ------------------------------------------------------------------------------

    def _script_on(self, node: _Node, script: str) -> str:
        """``script`` as the node finds it: in Ray's copy of the project, off the server's node."""
        if script and not node.is_servers and os.path.isabs(script):
            relative = os.path.relpath(script, self.project_dir)
            if not relative.startswith(os.pardir):
                return relative
        return script


def _check_address(address: str | None) -> None:
    """Refuse a Ray Client's address (``ray://``, given or in ``$RAY_ADDRESS``), before any
    connection: the server must run on a node of the cluster (see the module's text)."""
    address = address or os.environ.get("RAY_ADDRESS", "")
    if address.startswith(CLIENT_SCHEME):
        raise SenseConfigError(
            f"the ray backend cannot work through Ray Client ({address}): run the server on a "
            "node of the cluster, with --ray-address HEAD_IP:6379 (the head's GCS port) or auto"
        )


def _alive_nodes() -> list[dict]:
    """The nodes of the cluster that are up, as :func:`ray.nodes` describes them."""
    return [node for node in ray.nodes() if node["Alive"]]


def _wait_for_agents(calls: list[ray.ObjectRef]) -> None:
    """Wait for ``calls`` to agents; an agent that is gone has nothing left to do."""
    for call in calls:
        with contextlib.suppress(RayActorError):
            ray.get(call)
