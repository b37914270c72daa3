"""``sense.awaitPeers``: the cluster's workers as a peer reaches them, once they listen."""

from __future__ import annotations

import json
import socket

import pytest
from conftest import Api, wait_for

import sense

pytestmark = pytest.mark.timeout(90)

#: A worker that listens on its own first port, answering each connection with its id, and
#: prints the ids of its peers once they all listen.
LISTENS = """
import contextlib, json, os, socket, threading, sense
server = socket.create_server((sense.networkInfo()["project_ip"], int(os.environ["SENSE_PORT1"])))
def answer():
    while True:
        connection, _ = server.accept()
        with contextlib.suppress(OSError), connection:
            connection.sendall(os.environ["SENSE_DASHBOARD_ID"].encode())
threading.Thread(target=answer, daemon=True).start()
peers = sense.awaitPeers(n={others}, timeout_seconds=60)
print(json.dumps([p["id"] for p in peers]), flush=True)
threading.Event().wait()
"""


def greeting(host: str, port: int) -> str:
    with socket.create_connection((host, port), timeout=10) as connection:
        return connection.recv(64).decode()


def test_peers_are_listed_with_their_addresses_once_they_all_listen(local_master):
    launched = sense.launchWorkers(3, startupCode=LISTENS.format(others=2))
    try:
        peers = sense.awaitPeers(n=3, timeout_seconds=60)
        ids = [w["id"] for w in launched]
        assert [p["id"] for p in peers] == ids
        running = {w["id"]: w for w in sense.getWorkers()}
        for peer in peers:
            mapping = running[peer["id"]]["public_port_mapping"]
            assert (peer["host"], peer["port"]) == (
                running[peer["id"]]["project_ip"],
                next(iter(mapping)),
            )
            assert greeting(peer["host"], peer["port"]) == str(peer["id"])
        api = Api(local_master)
        for worker in launched:

            def printed(worker=worker):
                lines = api.logs(worker["id"]).splitlines()
                return json.loads(lines[0]) if lines else None

            printed.__name__ = f"worker {worker['id']} to print its peers"
            assert wait_for(printed, 60) == [i for i in ids if i != worker["id"]]
    finally:
        sense.stopWorkers()


def test_a_peer_that_does_not_listen_is_named_when_the_time_is_up(local_master):
    idle = sense.launchWorkers(1)[0]
    try:
        with pytest.raises(
            TimeoutError, match=rf"{idle['id']} \(127\.[0-9.]+:[0-9]+ not listening\)"
        ):
            sense.awaitPeers(timeout_seconds=1)
        with pytest.raises(TimeoutError, match=r"1 more \(only 1 of 2 launched\)"):
            sense.awaitPeers(n=2, port=9, timeout_seconds=0)
    finally:
        sense.stopWorkers()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"n": -1}, "n must be None or an int from 0"),
        ({"n": True}, "n must be None"),
        ({"port": 0}, "port must be None or an int from 1"),
        ({"port": "80"}, "port must be None"),
        ({"timeout_seconds": float("nan")}, "timeout_seconds must be a finite number"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_asked(arguments, message):
    with pytest.raises(ValueError, match=message):
        sense.awaitPeers(**arguments)
