"""The backend seam: who places and runs a project's dashboards.

A backend is chosen by name: ``"local"`` (processes on this machine, the
default), ``"ray"`` (processes on the nodes of a Ray cluster), or a third
party's through the entry-point group ``sense.backends``. The project asks
a backend to :meth:`Backend.launch` a :class:`LaunchSpec`, stores the
:class:`Placement` it gets back, and learns of each dashboard's life through
the listeners it :meth:`Backend.subscribe`\\ s.

Example
-------
>>> backend = RayBackend(project_dir, state_dir, grace=3.0)   # doctest: +SKIP
>>> backend.subscribe(on_running=print, on_exit=print)         # doctest: +SKIP
>>> placement = backend.launch(LaunchSpec(7, "worker", "sense-ipython-engine", "small",
...                                       code="print('hi')", context=my_context))  # doctest: +SKIP
>>> placement.project_ip                                        # doctest: +SKIP
'10.0.0.12'
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar


@dataclass(frozen=True)
class Placement:
    """What only placement knows, returned by :meth:`Backend.launch`.

    Attributes
    ----------
    handle : dict
        JSON-able, with ``"backend"`` naming the backend that made it: enough for that
        backend to find and end the dashboard's processes after a server restart.
    project_ip : str
        The address other dashboards reach this one on.
    ports : dict of int to int
        Private port to public port; at least one port, free where the dashboard runs.
    """

    handle: dict
    project_ip: str
    ports: dict[int, int]


def _no_context(placement: Placement) -> dict[str, str]:
    return {}


@dataclass
class LaunchSpec:
    """Everything a backend needs to place and start one dashboard.

    ``code``, else ``script`` with ``argv``, else nothing (the dashboard idles
    until stopped). ``env`` is the caller's own variables only; ``context``
    makes the ``SENSE_*`` variables once the placement is known. ``console``
    asks for the output on the server's own terminal (``sense run``'s
    master; the local backend only).
    """

    dashboard_id: int
    name: str
    engine: str
    size: str | int
    code: str = ""
    script: str = ""
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    context: Callable[[Placement], dict[str, str]] = _no_context
    console: bool = False


class Backend(abc.ABC):
    """Places, starts, watches and stops dashboards, and serves their output.

    Parameters
    ----------
    project_dir : str
        The project: a dashboard runs in it (or in a copy of it, where it is not).
    state_dir : Path
        The project's ``.sense/`` directory, for what the backend keeps (logs).
    grace : float
        Seconds between SIGTERM and SIGKILL when a dashboard is stopped.
    **options
        The backend's own settings (for example ``ray_address``).
    """

    name: ClassVar[str]

    def __init__(self, project_dir: str, state_dir: Path, *, grace: float, **options) -> None:
        self.project_dir = str(project_dir)
        self.state_dir = Path(state_dir)
        self.grace = grace

    # -- what it accepts ----------------------------------------------------------------------

    @abc.abstractmethod
    def check(self, engine: str, size: str | int) -> str | None:
        """None if a dashboard of ``engine`` and ``size`` can run here, else why not (-> 422)."""

    @abc.abstractmethod
    def capacity(self) -> int:
        """How many dashboards may run at once (the quota)."""

    # -- life cycle ---------------------------------------------------------------------------

    @abc.abstractmethod
    def launch(self, spec: LaunchSpec) -> Placement:
        """Place and start a dashboard; return once its process exists (status starting).

        Its environment is the backend's base (the environment where it runs, ``SENSE_*``
        removed), then ``spec.context(placement)``, then ``spec.env``. Running and exit
        are reported to the listeners of :meth:`subscribe`.
        """

    @abc.abstractmethod
    def stop(self, dashboard_id: int) -> None:
        """SIGTERM the dashboard's process group, SIGKILL after the grace; return once ended."""

    @abc.abstractmethod
    def interrupt(self, dashboard_id: int) -> None:
        """SIGINT the dashboard, as Ctrl-C in a terminal would."""

    @abc.abstractmethod
    def wait(self, dashboard_id: int, timeout: float | None = None) -> int | None:
        """Wait for the dashboard to end; its exit code, or None (still running, or no code)."""

    @abc.abstractmethod
    def read_logs(
        self, dashboard_id: int, offset: int = 0, limit: int | None = None
    ) -> Iterator[bytes]:
        """The output from byte ``offset`` (negative: from the end), at most ``limit`` bytes,
        in chunks."""

    @abc.abstractmethod
    def log_size(self, dashboard_id: int) -> int:
        """How many bytes of output the dashboard has written so far."""

    @abc.abstractmethod
    def recover(self, handles: Iterable[tuple[int, dict]]) -> None:
        """End whatever still runs of dashboards an earlier server run started."""

    @abc.abstractmethod
    def shutdown(self) -> None:
        """Stop every dashboard and let go of what the backend holds."""

    # -- reporting ----------------------------------------------------------------------------

    @abc.abstractmethod
    def subscribe(
        self,
        on_running: Callable[[int], None],
        on_exit: Callable[[int, int | None, str], None],
    ) -> None:
        """Be told when a dashboard runs, and when it ends: ``on_exit(id, exit_code, reason)``
        (``exit_code`` is None when there is none, as for a dashboard on a lost node)."""
