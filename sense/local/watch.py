"""What the web page follows: changes among the dashboards, and a dashboard's output.

Both are polled, cheaply: a look at the dashboards reads the active ones
and those that changed since the last look, never the whole history; a
look at an output reads what was written since, a bounded piece at a time.

Example
-------
>>> watch = DashboardWatch(project)                    # doctest: +SKIP
>>> watch.poll()      # the first look: every active dashboard   # doctest: +SKIP
>>> watch.poll()      # later looks: only what changed           # doctest: +SKIP
"""

from __future__ import annotations

import codecs
from collections.abc import Callable

from sense.local.store import ACTIVE

#: The most bytes of output read at once.
CHUNK = 64 * 1024
#: A follower further behind than this skips to the end (the download has it all).
BEHIND_LIMIT = 1024 * 1024
#: How many looks an ended dashboard is still watched, for its last changes (its exit code).
LINGER = 3


def read_log(project, dashboard_id: int, offset: int, limit: int) -> tuple[bytes, int]:
    """At most ``limit`` bytes (and :data:`CHUNK`) of a dashboard's output from byte ``offset``.

    The one place the web page reads a log, through the project's backend.

    Returns
    -------
    tuple
        The bytes, and the size of the whole output at that moment.

    Examples
    --------
    >>> data, size = read_log(project, 7, 0, 100)      # doctest: +SKIP
    """
    size, chunks = project.read_logs(dashboard_id, offset, max(0, min(limit, CHUNK)))
    return b"".join(chunks), size


Reader = Callable[[int, int], tuple[bytes, int]]


class DashboardWatch:
    """The changes among a project's dashboards since the last :meth:`poll`.

    Parameters
    ----------
    project : LocalProject
        Whose dashboards to watch.
    """

    def __init__(self, project) -> None:
        self.project = project
        #: The engine's pid of each active dashboard that has one, by id (for the load).
        self.leaders: dict[int, int] = {}
        #: ``{"used": dashboards launched through the API and active, "total": the quota}``.
        self.quota: dict[str, int] = {}
        self._shown: dict[int, dict] = {}
        self._linger: dict[int, int] = {}
        self._last_id = _last_id(project.store.get)

    def poll(self) -> list[dict]:
        """The dashboards (as the API shows them) that changed since the last look.

        The first look returns every active dashboard.
        """
        store = self.project.store
        rows = {row["id"]: row for row in store.select(status=ACTIVE)}
        # Dashboards launched since the last look that already ended were never active in a look.
        newest = max(rows, default=0)
        while True:
            candidate = self._last_id + 1
            row = rows.get(candidate) or store.get(candidate)
            if row is None and candidate > newest:
                break
            if row is not None:
                rows[candidate] = row
            self._last_id = candidate
        # Dashboards that ended since the last look: their last state.
        for dashboard_id in self._shown.keys() - rows.keys():
            row = store.get(dashboard_id)
            if row is not None:
                rows[dashboard_id] = row
        changed = []
        for dashboard_id, row in sorted(rows.items()):
            shown = self.project.public(row)
            if self._shown.get(dashboard_id) != shown:
                changed.append(shown)
            self._shown[dashboard_id] = shown
            if row["status"] in ACTIVE:
                self._linger.pop(dashboard_id, None)
            elif self._linger.setdefault(dashboard_id, LINGER) <= 1:
                del self._shown[dashboard_id], self._linger[dashboard_id]
            else:
                self._linger[dashboard_id] -= 1
        active = [row for row in rows.values() if row["status"] in ACTIVE]
        self.leaders = {row["id"]: row["handle"]["pid"] for row in active if "pid" in row["handle"]}
        self.quota = {
            "used": sum(row["kind"] == "api" for row in active),
            "total": self.project.backend.capacity(),
        }
        return changed


def _last_id(get: Callable[[int], dict | None]) -> int:
    """The highest dashboard id, in a few lookups rather than a listing of the history.

    Ids run 1, 2, 3, ... (rows are never deleted): double a guess until it is
    past the end, then halve the interval between the last hit and the miss.
    """
    found, missed = 0, 1
    while get(missed) is not None:
        found, missed = missed, missed * 2
    while missed - found > 1:
        middle = (found + missed) // 2
        if get(middle) is not None:
            found = middle
        else:
            missed = middle
    return found


class LogFollow:
    """A dashboard's output from a byte offset on, as text, one bounded piece at a time.

    Parameters
    ----------
    read : callable(offset, limit) -> (bytes, size)
        Reads the output (:func:`read_log` of one dashboard).
    offset : int
        Where to start; see :func:`tail_offset`.

    Examples
    --------
    >>> follow = LogFollow(functools.partial(read_log, project, 7), 0)   # doctest: +SKIP
    >>> start, text, skipped = follow.read()                            # doctest: +SKIP
    """

    def __init__(self, read: Reader, offset: int) -> None:
        self._read = read
        self._offset = offset
        # Pieces may end inside a character: the decoder keeps its first bytes for the next.
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    @property
    def position(self) -> int:
        """The offset of the first byte not returned as text yet."""
        return self._offset - len(self._decoder.getstate()[0])

    def read(self) -> tuple[int, str, int]:
        """The next piece: where its text starts, the text ('' if nothing new), bytes skipped.

        A follower more than :data:`BEHIND_LIMIT` behind skips to the last
        :data:`CHUNK` bytes first, from the start of a line.
        """
        skipped = 0
        data, size = self._read(self._offset, CHUNK)
        if size - self._offset > BEHIND_LIMIT:
            start = tail_offset(self._read, CHUNK)
            skipped = start - self.position
            self._offset = start
            self._decoder.reset()
            data, _ = self._read(start, CHUNK)
        start = self.position
        self._offset += len(data)
        return start, self._decoder.decode(data), skipped


def tail_offset(read: Reader, tail: int) -> int:
    """Where the last ``tail`` bytes of an output start, moved on to the start of a line."""
    _, size = read(0, 0)
    start = max(0, size - tail)
    if start == 0:
        return 0
    data, _ = read(start, min(tail, CHUNK))
    return start + _line_start(data)


def earlier(read: Reader, before: int) -> tuple[int, str]:
    """The output's piece that ends at byte ``before``, from the start of a line: offset, text."""
    start = max(0, before - CHUNK)
    data, _ = read(start, before - start)
    if start > 0:
        cut = _line_start(data)
        data, start = data[cut:], start + cut
    return start, data.decode(errors="replace")


def _line_start(data: bytes) -> int:
    """Where the first whole line in ``data`` starts; with none, the first whole character."""
    newline = data.find(b"\n")
    if 0 <= newline < len(data) - 1:
        return newline + 1
    offset = 0
    while offset < len(data) and data[offset] & 0xC0 == 0x80:  # UTF-8 continuation bytes
        offset += 1
    return offset
