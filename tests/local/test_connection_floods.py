"""Another local user opens thousands of connections and says nothing, or half a request:
the server goes on answering its own user, and closes what waits too long.

The server is ``sense server`` in a process of its own, allowed 1024 open files (and up to
2048), as many systems set: a flood past that would leave it no descriptor to answer with.
"""

from __future__ import annotations

import contextlib
import resource
import selectors
import socket
import threading
import time

import psutil
import pytest
import requests
from conftest import read_exports, sense_command
from test_ssh import Ssh

from sense.local.server import REQUEST_TIMEOUT
from sense.local.sshd.server import MAX_WAITING as SSH_MAX_WAITING

pytestmark = pytest.mark.timeout(180)

FLOOD = 3000
HALF_A_REQUEST = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n"  # the blank line never comes
OPEN_FILES = (1024, 2048)


def few_open_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, OPEN_FILES)


@pytest.fixture
def served(project_dir):
    """``sense server`` with few open files allowed: its process and its exports."""
    process = sense_command("server", cwd=project_dir, preexec_fn=few_open_files)
    # What it says later is read all along: a full pipe would stop the server.
    output = threading.Thread(target=process.stdout.read, daemon=True)
    try:
        exports = dict(read_exports(process))
        output.start()
        yield process, exports
    finally:
        process.terminate()
        process.wait(timeout=60)
        output.join(timeout=60)
        process.stdout.close()


@pytest.fixture
def flood():
    """Open ``FLOOD`` connections to a port, each sent ``first``; all closed at the end."""
    opened: list[socket.socket] = []

    def open_connections(port: int, first: bytes = b"") -> list[socket.socket]:
        for _ in range(FLOOD):
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            except OSError:
                break  # the server no longer accepts: what the test checks next shows it
            opened.append(sock)
            # It may be closed already, to make room: as the test expects.
            with contextlib.suppress(OSError):
                sock.sendall(first)
        return opened

    yield open_connections
    for sock in opened:
        sock.close()


def closed_by_the_server(socks: list[socket.socket], at_least: int, timeout: float) -> int:
    """Wait until ``at_least`` of ``socks`` are closed by the server, at most ``timeout`` s;
    return how many were."""
    closed = 0
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while closed < at_least and time.monotonic() < deadline:
            for key, _ in selector.select(deadline - time.monotonic()):
                try:
                    if key.fileobj.recv(4096):
                        continue  # a greeting (SSH's): not the end yet
                except OSError:
                    pass  # reset: closed too
                selector.unregister(key.fileobj)
                closed += 1
    return closed


def test_half_sent_requests_neither_stop_the_answers_nor_stay_open(served, flood):
    _, exports = served
    api = exports["SENSE_API_URL"]
    port = int(api.rsplit(":", 1)[1])
    waiting = flood(port, HALF_A_REQUEST)
    assert requests.get(f"{api}/health", timeout=30).status_code == 200
    launched = requests.post(
        exports["SENSE_PROJECT_URL"] + "/dashboards",
        json={"master_id": exports["SENSE_DASHBOARD_ID"], "code": "print(42)"},
        auth=(exports["SENSE_API_TOKEN"], ""),
        timeout=30,
    )
    assert launched.status_code == 201, launched.text
    assert len(waiting) == FLOOD
    # Every one closed: the oldest at once to make room, the rest once their time is up.
    assert closed_by_the_server(waiting, FLOOD, REQUEST_TIMEOUT + 30) == FLOOD


def test_idle_connections_to_the_ssh_port_do_not_keep_a_login_out(served, flood, tmp_path):
    _, exports = served
    port = exports["SENSE_SSH_PORT_PUBLIC"]
    waiting = flood(int(port))
    ssh = Ssh(port, exports["SENSE_SSH_PASSWORD"], tmp_path / "known_hosts")
    logged_in = ssh.run("echo in")
    assert logged_in.stdout == "in\n", logged_in.stderr
    assert len(waiting) == FLOOD
    # All but the newest few closed to make room (those wait for their login timeout).
    at_least = FLOOD - SSH_MAX_WAITING
    assert closed_by_the_server(waiting, at_least, 30) >= at_least


def test_the_server_allows_itself_as_many_open_files_as_the_system_lets_it(served):
    process, _ = served
    assert psutil.Process(process.pid).rlimit(psutil.RLIMIT_NOFILE) == (2048, 2048)
