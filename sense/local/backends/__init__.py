"""Where dashboards run: the interface every backend implements, and finding one by name.

The project (:mod:`sense.local.project`) decides *what* may run: who may
launch, the quota, that a master's workers end with it. A backend decides
*where and how*: it places a dashboard, starts its process, stops it,
reports its end and serves its output. Two are built in, ``"local"``
(process groups on this machine) and ``"ray"`` (across a Ray cluster);
others plug in through the entry-point group ``sense.backends``::

    [project.entry-points."sense.backends"]
    slurm = "sense_slurm:SlurmBackend"

Example
-------
>>> backend_class = load("local")
>>> backend_class.name
'local'
"""

from __future__ import annotations

import abc
import importlib
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from sense.errors import SenseError

if TYPE_CHECKING:
    from sense.local.statedir import StateDir

ENTRY_POINT_GROUP = "sense.backends"
#: Seconds between SIGTERM and SIGKILL when a dashboard is stopped.
DEFAULT_GRACE = 3.0
BUILT_IN = {
    "local": "sense.local.backends.local:LocalBackend",
    "ray": "sense.local.backends.ray:RayBackend",
}
#: The package each built-in backend needs beyond ``sense[local]``; its extra has its name.
NEEDS = {"ray": "ray"}

#: ``on_running(dashboard_id)``: the process is up, its code about to start.
RunningListener = Callable[[int], None]
#: ``on_exit(dashboard_id, exit_code, reason)``: it has ended. The exit code is None when
#: there is none to tell (the node it ran on was lost); ``reason`` is one of :data:`REASONS`.
ExitListener = Callable[[int, "int | None", str], None]
#: Why a dashboard ended: it was stopped, its code ended, or it was lost with its node.
REASONS = ("stopped", "exited", "lost")


class UnknownBackendError(SenseError, LookupError):
    """No backend of that name is built in or installed."""


class BackendNotInstalledError(SenseError, ImportError):
    """A built-in backend whose extra is not installed: the message names the ``pip install``."""


class NoRoomError(OSError):
    """The backend has no room for the dashboard now: the launch is refused as one past the
    quota is (HTTP 429), and nothing of it is left. The message says how many fit."""


@dataclass(frozen=True)
class Placement:
    """Where a dashboard landed: what only placement knows.

    Attributes
    ----------
    handle : dict
        JSON-able; has ``"backend"``, the backend's name, and whatever that backend needs
        to find and end the dashboard's processes after the server restarts.
    project_ip : str
        The address on which the project's other dashboards reach this one.
    ports : dict of int to int
        Private port to public port.
    """

    handle: dict
    project_ip: str
    ports: dict[int, int]


@dataclass
class LaunchSpec:
    """Everything a backend needs to place and start one dashboard.

    ``context`` gives the ``SENSE_*`` variables for a placement: the backend
    calls it once it knows where the dashboard lands, and the process's
    environment is the backend's base environment, then those, then ``env``.
    ``console`` asks to share the server's own terminal (the script of
    ``sense run``) instead of a log.
    """

    dashboard_id: int
    name: str
    context: Callable[[Placement], dict[str, str]]
    engine: str = "sense-ipython-engine"
    size: str | int = "small"
    code: str = ""
    script: str = ""
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    console: bool = False


class Backend(abc.ABC):
    """Runs dashboards for one project.

    Parameters
    ----------
    project_dir : path
        The project: where its dashboards run, and what is shipped to where they run.
    state : StateDir
        The project's ``.sense/`` folder, for what the backend keeps (logs, ...).
    grace : float
        Seconds between asking a dashboard to stop (SIGTERM) and forcing it (SIGKILL).
    max_workers : int, optional
        How many dashboards may run at once; the backend's own default otherwise.

    A backend may take more keyword options of its own (``ray_address``, ...).
    """

    #: The name it is chosen by, also kept in each handle it makes.
    name: ClassVar[str]
    #: Whether its dashboards run on the server's machine, where its SSH server can reach them.
    offers_ssh: ClassVar[bool] = False
    #: The engines it runs, as a regular expression found in their names (None: any);
    #: the API's OpenAPI description says so.
    engine_pattern: ClassVar[str | None] = None

    def __init__(
        self,
        project_dir: str | Path,
        state: StateDir,
        *,
        grace: float = DEFAULT_GRACE,
        max_workers: int | None = None,
    ) -> None:
        self.project_dir = str(project_dir)
        self.state = state
        self.grace = grace
        self.max_workers = max_workers
        self._running_listeners: list[RunningListener] = []
        self._exit_listeners: list[ExitListener] = []

    @classmethod
    def check_options(cls, **options) -> None:
        """Refuse options it cannot work with, before anything of the server is made.

        Called with the backend's own keyword options (those :meth:`__init__` takes besides
        the common ones); none is refused by default.
        """
        return None

    # -- reporting -------------------------------------------------------------------------------

    def subscribe(self, on_running: RunningListener | None, on_exit: ExitListener) -> None:
        """Be told when a dashboard's process is up, and when it has ended.

        Listeners are called in the order they subscribed.
        """
        if on_running is not None:
            self._running_listeners.append(on_running)
        self._exit_listeners.append(on_exit)

    def report_running(self, dashboard_id: int) -> None:
        """Tell the listeners that a dashboard's process is up."""
        for listener in self._running_listeners:
            _tell(listener, f"dashboard {dashboard_id} runs", dashboard_id)

    def report_exit(self, dashboard_id: int, exit_code: int | None, reason: str) -> None:
        """Tell the listeners that a dashboard has ended."""
        what = f"dashboard {dashboard_id} ended (exit code {exit_code}, {reason})"
        for listener in self._exit_listeners:
            _tell(listener, what, dashboard_id, exit_code, reason)

    # -- what it accepts -------------------------------------------------------------------------

    def refusal(self, engine: str, size: str | int) -> str | None:
        """Why a dashboard of this engine and size cannot run here, or None if it can."""
        if self.engine_pattern is not None and not re.search(self.engine_pattern, engine):
            return f"engine {engine!r} is not available on the {self.name} backend"
        return None

    def listen_host(self) -> str | None:
        """Where the API must listen for its dashboards to reach it, or None for loopback.

        A server given no ``host`` listens there (see :class:`sense.local.LocalServer`).
        """
        return None

    @abc.abstractmethod
    def capacity(self) -> int:
        """How many dashboards may run at once (the quota)."""

    # -- life cycle ------------------------------------------------------------------------------

    @abc.abstractmethod
    def attach(self, dashboard_id: int) -> Placement:
        """The placement of the server's own process, made a master dashboard."""

    @abc.abstractmethod
    def launch(self, spec: LaunchSpec) -> Placement:
        """Place and start a dashboard; return once its process exists.

        Raises
        ------
        NoRoomError
            There is no room for it now (a full cluster); nothing of it is left.
        OSError
            It could not be started; nothing of it is left.
        """

    @abc.abstractmethod
    def stop(self, dashboard_id: int) -> None:
        """End a dashboard (SIGTERM, then SIGKILL after the grace) and return once it has."""

    @abc.abstractmethod
    def interrupt(self, dashboard_id: int) -> None:
        """Interrupt a dashboard as Ctrl-C in a terminal would (SIGINT)."""

    @abc.abstractmethod
    def wait(self, dashboard_id: int, timeout: float | None = None) -> int | None:
        """Wait for a dashboard to end; its exit code, or None if it is still running."""

    @abc.abstractmethod
    def read_logs(
        self, dashboard_id: int, offset: int = 0, limit: int | None = None
    ) -> Iterator[bytes]:
        """A dashboard's output from byte ``offset`` (negative: that far from the end), in chunks.

        Memory stays bounded whatever the log's size; at most ``limit`` bytes when given.
        """

    @abc.abstractmethod
    def log_size(self, dashboard_id: int) -> int:
        """How many bytes of output a dashboard has written so far."""

    @classmethod
    @abc.abstractmethod
    def recover(cls, handles: Iterable[dict]) -> None:
        """End whatever still runs of dashboards that an earlier run of the server started.

        A class method: a restarted server hands each stored handle to the backend
        that made it, which may not be the one it runs with now.
        """

    @abc.abstractmethod
    def shutdown(self) -> None:
        """Stop every dashboard, and let go of what the backend holds."""


def _tell(listener: Callable, what: str, *args) -> None:
    """Call a listener; if it fails (a full disk, say), one line says so, not a traceback.

    A backend's watching threads must go on whatever its listeners meet.
    """
    try:
        listener(*args)
    except Exception as error:
        print(f"sense: {what}, but that could not be recorded: {error}", file=sys.stderr)


def load(name: str) -> type[Backend]:
    """The backend class called ``name``: a built-in one, or one installed as an entry point.

    Raises
    ------
    UnknownBackendError
        None of that name; the message lists those that can run here.
    BackendNotInstalledError
        A built-in one whose extra is missing (``pip install 'sense[ray]'``).
    """
    if name in BUILT_IN:
        return _built_in(name)
    installed = {point.name: point for point in entry_points(group=ENTRY_POINT_GROUP)}
    if name in installed:
        return installed[name].load()
    usable, missing = [*installed], []
    for built_in in BUILT_IN:
        try:
            _built_in(built_in)
        except BackendNotInstalledError:
            missing.append(f"{built_in} needs pip install 'sense[{built_in}]'")
        else:
            usable.append(built_in)
    known = "; ".join([", ".join(sorted(usable)), *missing])
    raise UnknownBackendError(f"no backend called {name!r} (there are: {known})")


def _built_in(name: str) -> type[Backend]:
    """The built-in backend ``name``; its extra's missing package named with the fix."""
    module_name, _, class_name = BUILT_IN[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        needed = NEEDS.get(name)
        if needed is None or (error.name or "").partition(".")[0] != needed:
            raise
        raise BackendNotInstalledError(
            f"the {name} backend needs {needed}, which is not installed: "
            f"pip install 'sense[{name}]'"
        ) from None
    return getattr(module, class_name)


def dashboard_environment(
    base: Mapping[str, str], context: Mapping[str, str], env: Mapping[str, str]
) -> dict[str, str]:
    """A dashboard process's environment: ``base`` (where it runs), its context, the caller's env.

    The ``SENSE_*`` variables of ``base`` are left out: when the server itself
    runs on a dashboard, its context must not leak into its workers' own.
    """
    merged = {name: value for name, value in base.items() if not name.startswith("SENSE_")}
    # Output should reach the log as it is printed, not when a buffer fills.
    merged.setdefault("PYTHONUNBUFFERED", "1")
    merged.update(context)
    merged.update(env)
    return merged
