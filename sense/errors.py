"""Every error that ``sense`` raises.

One base class, :class:`SenseError`, so that ``except sense.SenseError``
catches them all. Where an error is also a builtin kind it inherits both
(as ``requests`` does), so code written for the original library, which
raised ``RuntimeError`` when it was not on a dashboard, keeps working.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "InstallError",
    "LaunchError",
    "SenseAPIError",
    "SenseConfigError",
    "SenseConnectionError",
    "SenseError",
]


class SenseError(Exception):
    """Base class of every error raised by ``sense``."""


class SenseConfigError(SenseError, RuntimeError):
    """The environment lacks something a call needs (usually: not on a dashboard)."""


class SenseAPIError(SenseError):
    """The REST API answered with an error status.

    Attributes
    ----------
    status_code : int or None
        The HTTP status of the answer.
    method, url : str
        The request that failed (the URL never carries credentials).
    message : str
        The server's own error message.
    """

    def __init__(
        self, message: str, *, status_code: int | None = None, method: str = "", url: str = ""
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.method = method
        self.url = url

    def __str__(self) -> str:
        where = f"{self.method} {self.url}: " if self.method else ""
        status = f"{self.status_code} " if self.status_code is not None else ""
        return f"{where}{status}{self.message}"


class LaunchError(SenseAPIError):
    """Some of the workers of one ``launchWorkers`` call could not be launched.

    The first failure stops the sending of more launches (the call fails
    anyway), and the workers that did launch are stopped again before this
    is raised. The message sums up: how many failed, each distinct error
    once, which workers were stopped, and which may still run.

    Attributes
    ----------
    failures : list of (int, Exception)
        For each failed launch, its position in the request order and the error.
    not_sent : int
        How many launches were never sent, because a failure came first.
    stopped : list of dict
        The dashboards that had launched and were stopped again.
    not_stopped : list of (id, Exception)
        Dashboards that had launched but could not be stopped, and may still run
        (stop them by hand); id None: the project could not be listed to find
        launches whose answers were lost (their dashboards are named ``name``).
    name : str
        The name that every dashboard of the call was launched with.
    """

    def __init__(
        self,
        n: int,
        failures: list[tuple[int, Exception]],
        stopped: list[dict],
        not_stopped: list[tuple[object, Exception]] = (),
        *,
        not_sent: int = 0,
        name: str = "",
    ) -> None:
        lines = [f"{len(failures)} of {n} worker launches failed"]
        if not_sent:
            lines[0] += f"; {not_sent} were not sent (a failure stops the sending)"
        for message, indexes in _by_message(failures):
            which = f"launch {indexes[0]}" if len(indexes) == 1 else f"launches {_some(indexes)}"
            lines.append(f"  {which}: {message}")
        if stopped:
            ids = _some([dashboard["id"] for dashboard in stopped])
            lines.append(f"  the {len(stopped)} that launched were stopped again: {ids}")
        for message, ids in _by_message(not_stopped):
            if ids == [None]:
                lines.append(
                    f"  could not check for launches whose answers were lost ({message}): "
                    f"any dashboard named {name!r} may still run; "
                    "sense.getWorkers() shows what runs"
                )
            else:
                lines.append(
                    f"  launched but could not be stopped: {_some(ids)} (they may still run): "
                    f"{message}"
                )
        first = failures[0][1]
        super().__init__(
            "\n".join(lines),
            status_code=getattr(first, "status_code", None),
            method=getattr(first, "method", ""),
            url=getattr(first, "url", ""),
        )
        self.failures = failures
        self.not_sent = not_sent
        self.stopped = stopped
        self.not_stopped = list(not_stopped)
        self.name = name

    def __str__(self) -> str:
        # The summary already names every failed request.
        return self.message


#: How many distinct error messages, and how many ids, a LaunchError's summary shows at most.
SHOWN = 10


def _by_message(pairs: Iterable[tuple[object, Exception]]) -> list[tuple[str, list]]:
    """(message, the keys that met it) for the first SHOWN distinct messages, in order."""
    grouped: dict[str, list] = {}
    for key, error in pairs:
        grouped.setdefault(str(error), []).append(key)
    return list(grouped.items())[:SHOWN]


def _some(items: list) -> str:
    """The first SHOWN items, and how many more there are."""
    shown = ", ".join(str(item) for item in items[:SHOWN])
    return shown if len(items) <= SHOWN else f"{shown} and {len(items) - SHOWN} more"


class SenseConnectionError(SenseError, ConnectionError):
    """The REST API could not be reached, or did not answer within the timeout.

    Attributes
    ----------
    unreachable : bool
        True when no connection could be made at all (refused, no route, the
        proxy failed): the request never reached the API.
    """

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


class InstallError(SenseError):
    """pip could not install the package.

    Attributes
    ----------
    returncode : int or None
        pip's exit code (None when pip could not be started at all).
    output : str
        The last lines pip printed.
    """

    def __init__(self, message: str, *, returncode: int | None = None, output: str = "") -> None:
        self.returncode = returncode
        self.output = output
        super().__init__(message)
