"""The cluster's peers as a dashboard reaches them: each worker's address and port, once it
listens there (see :func:`sense.awaitPeers`)."""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING

from sense import environment, workers
from sense.status import ACTIVE, Status

if TYPE_CHECKING:
    from sense.client import Client

#: Seconds a check that a peer listens waits for its connection to be accepted.
CONNECT_TIMEOUT = 1.0


def await_(client: Client, n: int | None, port: int | None, timeout_seconds: float) -> list[dict]:
    """Wait until the peers listen; see :func:`sense.awaitPeers`."""
    _check_args(n, port)
    workers.check_timeout(timeout_seconds)
    own, master_id = environment.dashboard_id(), environment.cluster_master_id()
    deadline = time.monotonic() + timeout_seconds
    while True:
        found = [
            d
            for d in workers.listing(client, statuses=ACTIVE, master_id=master_id)
            if str(d["id"]) != own
        ]
        peers = [_peer(d, port) for d in found if d["status"] == Status.RUNNING]
        waiting = [p for p in peers if not _listens(p)]
        if len(peers) == len(found) >= (n or 0) and not waiting:
            return sorted(peers, key=lambda p: p["id"])
        if time.monotonic() >= deadline:
            raise TimeoutError(_late(n, found, peers, waiting, timeout_seconds))
        time.sleep(min(workers.POLL_INTERVAL, max(0.0, deadline - time.monotonic())))


def _check_args(n: object, port: object) -> None:
    for name, value, low in (("n", n, 0), ("port", port, 1)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 65535
        ):
            raise ValueError(f"awaitPeers: {name} must be None or an int from {low}, not {value!r}")


def _peer(dashboard: dict, port: int | None) -> dict:
    """Where ``dashboard`` is reached from inside the project: its ``project_ip``, and ``port``
    or else its own first port (its ``SENSE_PORT1``, the first key of its mapping)."""
    if port is None:
        port = next(iter(dashboard.get("public_port_mapping") or {}), None)
        if port is None:
            raise ValueError(f"awaitPeers: dashboard {dashboard['id']} has no port: give port=")
    return {"id": dashboard["id"], "host": dashboard["project_ip"], "port": port}


def _listens(peer: dict) -> bool:
    """Whether ``peer`` accepts a connection on its port (the connection is closed at once)."""
    try:
        socket.create_connection((peer["host"], peer["port"]), CONNECT_TIMEOUT).close()
    except OSError:
        return False
    return True


def _late(n, found, peers, waiting, timeout_seconds) -> str:
    """What :class:`TimeoutError` says: who was not there yet, and why."""
    starting = [str(d["id"]) for d in found if d["status"] != Status.RUNNING]
    missing = [f"{p['id']} ({p['host']}:{p['port']} not listening)" for p in waiting]
    missing += [f"{i} (starting)" for i in starting]
    if n is not None and len(found) < n:
        missing.append(f"{n - len(found)} more (only {len(found)} of {n} launched)")
    return f"awaitPeers: after {timeout_seconds} s, not every peer listens: {', '.join(missing)}"
