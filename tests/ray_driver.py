"""A small server stand-in: a Ray driver that runs a RayBackend, commanded over stdin.

Tests run it as its own process so that they can SIGKILL it as they would
the server, or run it inside another host's namespaces::

    python tests/ray_driver.py ADDRESS PROJECT_DIR

Each line in is one JSON command, each line out one JSON answer or event:

- ``{"launch": {"id": 1, "code": "...", "size": "small", "env": {...}}}`` →
  ``{"launched": 1, "project_ip": ..., "port": ..., "pid": ..., "node_id": ...}``
  (or ``{"failed": 1, "error": ...}``);
- ``{"logs": 1}`` → ``{"logs": 1, "text": ...}``; ``{"stop": 1}`` → ``{"stopped": 1}``;
- events, whenever they happen: ``{"running": 1}``, ``{"exit": 1, "code": ..., "reason": ...}``.

End of input shuts the backend down (``{"shutdown": true}``) and ends the driver.
Every dashboard's context carries ``SENSE_DASHBOARD_ID``, ``SENSE_PROJECT_IP``
and ``SENSE_PORT1``. :class:`Driver` is the tests' side of it.

Example
-------
>>> with Driver(cluster.address, project_dir) as driver:          # doctest: +SKIP
...     driver.launch(1, code="print('hi')")["project_ip"]
'127.0.0.3'
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time

import psutil

from sense.local.backends import LaunchSpec, Placement
from sense.local.backends.ray import RayBackend
from sense.local.statedir import StateDir

_print_lock = threading.Lock()


def say(message: dict) -> None:
    with _print_lock:
        print(json.dumps(message), flush=True)


def context_of(dashboard_id: int):
    def context(placement: Placement) -> dict[str, str]:
        (port,) = placement.ports
        return {
            "SENSE_DASHBOARD_ID": str(dashboard_id),
            "SENSE_PROJECT_IP": placement.project_ip,
            "SENSE_PORT1": str(port),
        }

    return context


def launch(backend: RayBackend, request: dict) -> dict:
    spec = LaunchSpec(
        dashboard_id=request["id"],
        name="worker",
        engine="sense-ipython-engine",
        size=request.get("size", "small"),
        code=request.get("code", ""),
        env=request.get("env", {}),
        context=context_of(request["id"]),
    )
    try:
        placement = backend.launch(spec)
    except Exception as error:
        return {"failed": spec.dashboard_id, "error": str(error)}
    (port,) = placement.ports
    return {
        "launched": spec.dashboard_id,
        "project_ip": placement.project_ip,
        "port": port,
        "pid": placement.handle["pid"],
        "node_id": placement.handle["node_id"],
    }


def main(address: str, project_dir: str) -> None:
    # Without a prestarted engine: the tests find its dashboards by their environment.
    backend = RayBackend(
        project_dir, StateDir(project_dir), grace=1.0, ray_address=address, prestart=False
    )
    backend.subscribe(
        on_running=lambda dashboard_id: say({"running": dashboard_id}),
        on_exit=lambda dashboard_id, code, reason: say(
            {"exit": dashboard_id, "code": code, "reason": reason}
        ),
    )
    say({"ready": True})
    for line in sys.stdin:
        command = json.loads(line)
        if "launch" in command:
            say(launch(backend, command["launch"]))
        elif "logs" in command:
            text = b"".join(backend.read_logs(command["logs"])).decode(errors="replace")
            say({"logs": command["logs"], "text": text})
        elif "stop" in command:
            backend.stop(command["stop"])
            say({"stopped": command["stop"]})
    backend.shutdown()
    say({"shutdown": True})


class Driver:
    """This script as a child process (``prefix``, e.g. ``nsenter ...``, runs it elsewhere).

    Answers are read in the order they come; events are collected in :attr:`events`.
    """

    def __init__(self, address: str, project_dir, *, prefix: tuple[str, ...] = ()) -> None:
        self.process = subprocess.Popen(
            [*prefix, sys.executable, __file__, address, str(project_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.events: list[dict] = []
        self._answers: queue.Queue[dict] = queue.Queue()
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        self.answer("ready", timeout=120)

    def _read(self) -> None:
        for line in self.process.stdout:
            message = json.loads(line)
            if "running" in message or "exit" in message:
                with self._changed:
                    self.events.append(message)
                    self._changed.notify_all()
            else:
                self._answers.put(message)
        self._answers.put({"ended": self.process.wait()})

    def answer(self, key: str, timeout: float = 60) -> dict:
        message = self._answers.get(timeout=timeout)
        if key not in message:
            raise AssertionError(f"the driver answered {message}, not {key!r}")
        return message

    def command(self, command: dict, key: str, timeout: float = 60) -> dict:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self.answer(key, timeout)

    def launch(self, dashboard_id: int, **request) -> dict:
        return self.command({"launch": {"id": dashboard_id, **request}}, "launched")

    def logs(self, dashboard_id: int) -> str:
        return self.command({"logs": dashboard_id}, "logs")["text"]

    def event(self, kind: str, dashboard_id: int, timeout: float = 30) -> dict:
        """Wait for the event ``kind`` ("running" or "exit") of dashboard ``dashboard_id``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for event in self.events:
                    if event.get(kind) == dashboard_id:
                        return event
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {kind} event of {dashboard_id}: {self.events}")
                self._changed.wait(left)

    def kill(self) -> None:
        """SIGKILL the driver, as a server can be (and the ``prefix`` command it runs under)."""
        for process in psutil.Process(self.process.pid).children(recursive=True):
            process.kill()
        self.process.kill()
        self.process.wait()

    def __enter__(self) -> Driver:
        return self

    def __exit__(self, *exc_info) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process.stdout.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
