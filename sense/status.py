"""The life cycle of a dashboard: ``starting`` → ``running`` → ``stopped`` or ``failed``.

The REST API sends statuses as plain strings; :class:`Status` is a ``str``,
so a member equals its string and JSON shows it unchanged.

>>> Status("running") == "running", Status.FAILED.is_ended
(True, True)
"""

from __future__ import annotations

import enum


class Status(str, enum.Enum):
    """The status of a dashboard, as the REST API spells it."""

    STARTING = "starting"
    RUNNING = "running"
    STOPPED = "stopped"
    FAILED = "failed"

    # As enum.StrEnum (Python 3.11) does: a member shows as its value in str(), f-strings and URLs.
    __str__ = str.__str__
    __format__ = str.__format__

    @property
    def is_ended(self) -> bool:
        """Whether the dashboard's process has ended, for good: it never runs again."""
        return self in ENDED


#: Statuses of a dashboard whose process has not ended yet.
ACTIVE = frozenset({Status.STARTING, Status.RUNNING})
#: Statuses of a dashboard whose process has ended.
ENDED = frozenset({Status.STOPPED, Status.FAILED})
