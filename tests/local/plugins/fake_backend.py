"""An in-memory backend: dashboards that run nowhere, ended when a test says so.

For the project's rules, tested without processes, and installed by the
tests as a third-party backend (entry point ``fake`` of ``sense.backends``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import ClassVar

from sense.local.backends import Backend, LaunchSpec, Placement


class FakeBackend(Backend):
    """Records what it is asked; ``finish`` ends a dashboard as a process would."""

    name = "fake"
    #: Every handle that ``recover`` was given, across instances (it is a class method).
    recovered: ClassVar[list[dict]] = []

    def __init__(self, project_dir, state, *, capacity: int = 3, **options) -> None:
        super().__init__(project_dir, state, **options)
        self.launched: dict[int, LaunchSpec] = {}
        self.environments: dict[int, dict[str, str]] = {}
        self.stopped: list[int] = []
        self._capacity = capacity
        self._ended: dict[int, threading.Event] = {}

    def refusal(self, engine: str, size) -> str | None:
        return None if engine == "fake-engine" else f"engine {engine!r} is not fake enough"

    def capacity(self) -> int:
        return self._capacity

    def attach(self, dashboard_id: int) -> Placement:
        return Placement({"backend": self.name}, "10.0.0.1", {9000: 19000})

    def launch(self, spec: LaunchSpec) -> Placement:
        placement = Placement(
            {"backend": self.name, "slot": spec.dashboard_id},
            f"10.0.0.{spec.dashboard_id + 1}",
            {9000: 19000 + spec.dashboard_id},
        )
        self.launched[spec.dashboard_id] = spec
        self.environments[spec.dashboard_id] = {**spec.context(placement), **spec.env}
        self._ended[spec.dashboard_id] = threading.Event()
        return placement

    def finish(self, dashboard_id: int, exit_code: int | None, reason: str = "exited") -> None:
        """End a dashboard as if its process had (``lost``: as if its node had gone)."""
        self._ended[dashboard_id].set()
        self.report_exit(dashboard_id, exit_code, reason)

    def stop(self, dashboard_id: int) -> None:
        self.stopped.append(dashboard_id)
        if dashboard_id in self._ended and not self._ended[dashboard_id].is_set():
            self.finish(dashboard_id, 143, "stopped")

    def interrupt(self, dashboard_id: int) -> None:
        self.finish(dashboard_id, 130)

    def wait(self, dashboard_id: int, timeout: float | None = None) -> int | None:
        return 0 if self._ended[dashboard_id].wait(timeout) else None

    def read_logs(self, dashboard_id: int, offset: int = 0, limit=None) -> Iterator[bytes]:
        yield f"log of {dashboard_id}\n".encode()[offset:]

    def log_size(self, dashboard_id: int) -> int:
        return len(f"log of {dashboard_id}\n")

    @classmethod
    def recover(cls, handles: Iterable[dict]) -> None:
        cls.recovered.extend(handles)

    def shutdown(self) -> None:
        for dashboard_id in list(self._ended):
            self.stop(dashboard_id)
