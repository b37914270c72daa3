"""Every error that ``sense`` raises.

One base class, :class:`SenseError`, so that ``except sense.SenseError``
catches them all. Where an error is also a builtin kind it inherits both
(as ``requests`` does), so code written for the original library, which
raised ``RuntimeError`` when it was not on a dashboard, keeps working.
"""

from __future__ import annotations

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

    The workers that did launch have been stopped again before this is raised.

    Attributes
    ----------
    failures : list of (int, Exception)
        For each failed launch, its position in the request order and the error.
    stopped : list of dict
        The dashboards that had launched and were stopped again.
    not_stopped : list of (id, Exception)
        Dashboards that had launched but could not be stopped (stop them by hand);
        id None: the project could not be listed to find launches whose answers were lost.
    """

    def __init__(
        self,
        n: int,
        failures: list[tuple[int, Exception]],
        stopped: list[dict],
        not_stopped: list[tuple[object, Exception]] = (),
    ) -> None:
        lines = [f"{len(failures)} of {n} worker launches failed"]
        lines += [f"  launch {index}: {error}" for index, error in failures]
        if stopped:
            ids = ", ".join(str(dashboard["id"]) for dashboard in stopped)
            lines.append(f"  the {len(stopped)} that launched were stopped again: {ids}")
        for dashboard_id, error in not_stopped:
            if dashboard_id is None:
                lines.append(
                    f"  could not check for launches whose answers were lost ({error}): "
                    "sense.getWorkers() shows what runs"
                )
            else:
                lines.append(f"  launched but could not be stopped: {dashboard_id}: {error}")
        first = failures[0][1]
        super().__init__(
            "\n".join(lines),
            status_code=getattr(first, "status_code", None),
            method=getattr(first, "method", ""),
            url=getattr(first, "url", ""),
        )
        self.failures = failures
        self.stopped = stopped
        self.not_stopped = list(not_stopped)

    def __str__(self) -> str:
        # The summary already names every failed request.
        return self.message


class SenseConnectionError(SenseError, ConnectionError):
    """The REST API could not be reached, or did not answer within the timeout."""


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
