"""Workers' output on the console of ``sense run``, each line prefixed by who printed it.

Example
-------
>>> follower = LogFollower(project, state.log_path, sys.stdout)   # doctest: +SKIP
>>> follower.start(); ...; follower.stop()                         # doctest: +SKIP
[worker 3] hello from 127.0.0.4
"""

from __future__ import annotations

import threading

from sense.local.statedir import open_no_link
from sense.local.store import ACTIVE

POLL_SECONDS = 0.1


class LogFollower:
    """Copies every dashboard's new log lines to ``out`` in a background thread.

    Parameters
    ----------
    project : LocalProject
        Whose dashboards to follow.
    log_path : callable(dashboard_id) -> path
        Where each dashboard's log is.
    out : text file
        Where the prefixed lines go.
    after : int
        Follow only dashboards with a greater id: those of this run, not of the history,
        nor the master itself, whose output is on the console already.
    """

    def __init__(self, project, log_path, out, *, after: int) -> None:
        self.project = project
        self.log_path = log_path
        self.out = out
        self.after = after
        self._offsets: dict[int, int] = {}
        self._partial: dict[int, bytes] = {}
        self._names: dict[int, str] = {}
        #: The dashboards followed: those that have not ended, as of the last poll.
        self._following: dict[int, dict] = {}
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
        for dashboard_id in sorted(self._partial):
            self._print_rest(dashboard_id)

    def _print_rest(self, dashboard_id: int) -> None:
        """Print the unfinished last line of a dashboard that has ended, if any."""
        rest = self._partial.pop(dashboard_id, b"")
        if rest:
            self._print(dashboard_id, rest)

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
            self._following[dashboard["id"]] = dashboard
            self._newest = max(self._newest, dashboard["id"])
        still_active = {d["id"] for d in active + new if d["status"] in ACTIVE}
        for dashboard_id, dashboard in sorted(self._following.items()):
            # An ended dashboard's log is complete: this copy holds its last words.
            self._copy(dashboard)
            if dashboard_id not in still_active:
                del self._following[dashboard_id]
                self._print_rest(dashboard_id)
                self._offsets.pop(dashboard_id, None)

    def _copy(self, dashboard: dict) -> None:
        dashboard_id = dashboard["id"]
        try:
            with open_no_link(self.log_path(dashboard_id)) as log:
                log.seek(self._offsets.get(dashboard_id, 0))
                data = log.read()
        except FileNotFoundError:
            return
        if not data:
            return
        self._offsets[dashboard_id] = self._offsets.get(dashboard_id, 0) + len(data)
        *lines, rest = (self._partial.pop(dashboard_id, b"") + data).split(b"\n")
        self._partial[dashboard_id] = rest
        who = "worker" if dashboard["master_id"] is not None else "dashboard"
        self._names[dashboard_id] = f"{who} {dashboard_id}"
        for line in lines:
            self._print(dashboard_id, line)

    def _print(self, dashboard_id: int, line: bytes) -> None:
        text = line.decode(errors="replace").rstrip("\r")
        self.out.write(f"[{self._names[dashboard_id]}] {text}\n")
        self.out.flush()
