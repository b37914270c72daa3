"""How busy the machine and each dashboard are: CPU and memory, sampled every few seconds.

A dashboard's processes are the process group its engine leads, plus every
descendant of that group (one that moved to a session of its own is still
its parent's child). CPU is measured from the CPU time the processes used
between two samples: a dashboard's as a percentage of one core (200 is two
busy cores), the machine's as a percentage of all its cores. Memory is
resident memory (RSS), summed over the processes.

Sampling happens only while someone asks (the web page's event stream does,
every tick): :meth:`LoadMonitor.update` takes a new sample when the last one
is :data:`INTERVAL` seconds old, and keeps the last :data:`HISTORY_SECONDS`.

Example
-------
>>> monitor = LoadMonitor()
>>> sample = monitor.update({7: os.getpid()})[-1]
>>> sorted(sample["dashboards"]["7"])
['cpu', 'memory', 'processes']
"""

from __future__ import annotations

import collections
import os
import threading
import time

import psutil

INTERVAL = 2.0
HISTORY_SECONDS = 300.0
#: How long the very first sample measures, since it has no sample before it to compare with.
FIRST_WINDOW = 0.2


class LoadMonitor:
    """Samples of the machine's load and of each dashboard's, the last few minutes of them.

    Parameters
    ----------
    interval : float
        Seconds between two samples.
    keep : float
        Seconds of samples to keep.
    """

    def __init__(self, interval: float = INTERVAL, keep: float = HISTORY_SECONDS) -> None:
        self.interval = interval
        self._history: collections.deque[dict] = collections.deque(maxlen=int(keep / interval) + 1)
        self._lock = threading.Lock()
        self._machine_times = None
        self._sampled_at = 0.0
        #: CPU seconds each process had used at the last sample, by (pid, creation time).
        self._cpu_seconds: dict[tuple[int, float], float] = {}

    def update(self, leaders: dict[int, int]) -> list[dict]:
        """Sample now if the last sample is ``interval`` old; the samples kept, oldest first.

        Parameters
        ----------
        leaders : dict
            The pid of each running dashboard's engine (its process group's leader), by id.

        Returns
        -------
        list of dict
            ``{"time": epoch seconds, "cpu": % of the machine, "cpus": n, "memory": bytes
            used, "memory_total": bytes, "dashboards": {"7": {"cpu": % of one core,
            "memory": bytes, "processes": n}}}``.
        """
        with self._lock:
            if not self._history or time.time() - self._history[-1]["time"] >= self.interval:
                if self._machine_times is None:
                    self._measure(leaders)  # a starting point, so that CPU has a time to compare
                    time.sleep(FIRST_WINDOW)
                self._history.append(self._measure(leaders))
            return list(self._history)

    def _measure(self, leaders: dict[int, int]) -> dict:
        now = time.monotonic()
        elapsed = now - self._sampled_at
        times = psutil.cpu_times()
        cpu = None
        if self._machine_times is not None:
            total = sum(times) - sum(self._machine_times)
            idle = _idle(times) - _idle(self._machine_times)
            cpu = round(max(0.0, 100.0 * (1.0 - idle / total)), 1) if total > 0 else 0.0
        memory = psutil.virtual_memory()
        tree = _ProcessTree()
        seen: dict[tuple[int, float], float] = {}
        dashboards = {}
        for dashboard_id, leader in leaders.items():
            used = 0.0
            rss = 0
            processes = 0
            others = set(leaders.values()) - {leader}
            for process in tree.dashboard(leader, others):
                try:
                    with process.oneshot():
                        key = (process.pid, process.create_time())
                        cpu_times = process.cpu_times()
                        rss += process.memory_info().rss
                except psutil.Error:
                    continue  # ended meanwhile
                seconds = cpu_times.user + cpu_times.system
                seen[key] = seconds
                processes += 1
                # A process born since the last sample used all its CPU time in between.
                born_since = key[1] > time.time() - elapsed
                before = self._cpu_seconds.get(key, 0.0 if born_since else seconds)
                used += max(0.0, seconds - before)
            dashboards[str(dashboard_id)] = {
                "cpu": round(100.0 * used / elapsed, 1) if cpu is not None else None,
                "memory": rss,
                "processes": processes,
            }
        self._machine_times = times
        self._sampled_at = now
        self._cpu_seconds = seen
        return {
            "time": time.time(),
            "cpu": cpu,
            "cpus": psutil.cpu_count() or 1,
            "memory": memory.total - memory.available,
            "memory_total": memory.total,
            "dashboards": dashboards,
        }


def _idle(times) -> float:
    return times.idle + getattr(times, "iowait", 0.0)


class _ProcessTree:
    """Every process of the machine at one moment, by process group and by parent."""

    def __init__(self) -> None:
        self.groups: dict[int, list[int]] = collections.defaultdict(list)
        self.children: dict[int, list[int]] = collections.defaultdict(list)
        for process in psutil.process_iter(["ppid"]):
            try:
                group = os.getpgid(process.pid)
            except OSError:
                continue  # ended meanwhile
            self.groups[group].append(process.pid)
            self.children[process.info["ppid"]].append(process.pid)

    def dashboard(self, leader: int, others: set[int]) -> list[psutil.Process]:
        """The processes of the dashboard whose engine is ``leader``: its group and descendants.

        The descendants of ``others`` (the other dashboards' leaders) are theirs: the
        master that is the server's own process has every worker among its children.
        """
        pids = set(self.groups.get(leader, ())) | {leader}
        waiting = list(pids)
        while waiting:
            for child in self.children.get(waiting.pop(), ()):
                if child not in pids and child not in others:
                    pids.add(child)
                    waiting.append(child)
        found = []
        for pid in sorted(pids):
            try:
                found.append(psutil.Process(pid))
            except psutil.Error:
                continue
        return found
