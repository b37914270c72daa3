"""Workers' output on the console of ``sense run``, each line prefixed by who printed it.

Logs are read a chunk at a time and a line is shown in pieces past
:data:`MAX_LINE` bytes, so that following takes little memory whatever the
workers print, a long line without an end included.

Example
-------
>>> follower = LogFollower(project, sys.stdout, after=1)           # doctest: +SKIP
>>> follower.start(); ...; follower.stop()                         # doctest: +SKIP
[worker 3] hello from 127.0.0.4
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

from sense.local.store import ACTIVE

POLL_SECONDS = 0.1
#: A line longer than this is shown in pieces of this many bytes.
MAX_LINE = 64 * 1024


#: What a worker must not send to the console, as a terminal multiplexer filters it: escape
#: sequences (CSI; OSC such as a window title or an OSC 52 clipboard write; DCS, SOS, PM and
#: APC strings, to their end or the line's; any other) and control characters but the tab.
#: A carriage return or backspace would let a worker write over another's ``[worker N]``.
_UNSAFE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b[\]PX^_][^\x07\x1b]*(?:\x07|\x1b\\|$)"
    r"|\x1b[ -/]*[0-~]?"
    r"|[\x00-\x08\x0a-\x1f\x7f-\x9f]"
)
#: Colours and other character attributes (SGR): kept.
_SGR = re.compile(r"\x1b\[[0-9;:]*m")
_RESET = "\x1b[0m"


def for_the_console(text: str) -> str:
    r"""``text`` with its colours (SGR) kept and every other escape sequence and control
    character (the tab aside) taken out; reset at its end if it set a colour.

    >>> for_the_console("\x1b[31mred\x1b[0m\rforged\x1b]0;title\x07\tend")
    '\x1b[31mred\x1b[0mforged\tend\x1b[0m'
    """
    kept = _UNSAFE.sub(lambda found: found[0] if _SGR.fullmatch(found[0]) else "", text)
    return kept + _RESET if "\x1b" in kept else kept


@dataclass
class _Tail:
    """How far the follower has read one dashboard's log."""

    name: str
    #: Bytes of the log already read.
    offset: int = 0
    #: The start of a line whose end has not been read yet.
    partial: bytes = b""


class LogFollower:
    """Copies every dashboard's new log lines to ``out`` in a background thread.

    Parameters
    ----------
    project : LocalProject
        Whose dashboards to follow.
    out : text file
        Where the prefixed lines go.
    after : int
        Follow only dashboards with a greater id: those of this run, not of the history,
        nor the master itself, whose output is on the console already.
    """

    def __init__(self, project, out, *, after: int) -> None:
        self.project = project
        self.out = out
        self.after = after
        #: The dashboards followed: those that had not ended at the last poll.
        self._tails: dict[int, _Tail] = {}
        #: The newest dashboard seen: any later one is new, even if it has ended already.
        self._newest = after
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sense-log-follower", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Copy what is left, the last unfinished lines included, and stop."""
        self._stopping.set()
        self._thread.join()
        self.poll()
        for tail in self._tails.values():
            self._print_rest(tail)

    def _run(self) -> None:
        while not self._stopping.wait(POLL_SECONDS):
            self.poll()

    def poll(self) -> None:
        """Copy the lines written since the last poll by the dashboards that run or just ended.

        Two small listings, not the project's history: the dashboards that have not
        ended, and those newer than the last poll (a short job may have ended already).
        """
        active = self.project.dashboards(status=ACTIVE, after=self.after)
        new = self.project.dashboards(after=self._newest)
        for dashboard in active + new:
            if dashboard["id"] not in self._tails:
                who = "worker" if dashboard["master_id"] is not None else "dashboard"
                self._tails[dashboard["id"]] = _Tail(f"{who} {dashboard['id']}")
            self._newest = max(self._newest, dashboard["id"])
        still_active = {d["id"] for d in active + new if d["status"] in ACTIVE}
        for dashboard_id, tail in sorted(self._tails.items()):
            # An ended dashboard's log is complete: this copy holds its last words.
            self._copy(dashboard_id, tail)
            if dashboard_id not in still_active:
                del self._tails[dashboard_id]
                self._print_rest(tail)

    def _copy(self, dashboard_id: int, tail: _Tail) -> None:
        _, chunks = self.project.read_logs(dashboard_id, tail.offset)
        for chunk in chunks:
            tail.offset += len(chunk)
            *lines, tail.partial = (tail.partial + chunk).split(b"\n")
            for line in lines:
                self._print(tail, line)
            while len(tail.partial) > MAX_LINE:
                self._print(tail, tail.partial[:MAX_LINE])
                tail.partial = tail.partial[MAX_LINE:]

    def _print_rest(self, tail: _Tail) -> None:
        """Print the unfinished last line of a dashboard that has ended, if any."""
        if tail.partial:
            self._print(tail, tail.partial)
            tail.partial = b""

    def _print(self, tail: _Tail, line: bytes) -> None:
        text = for_the_console(line.decode(errors="replace").rstrip("\r"))
        self.out.write(f"[{tail.name}] {text}\n")
        # One write a line: the master's own lines, on the same console, fall between them.
        self.out.flush()
