"""The original 2013 README's Python code blocks, executed as written against the local server.

The blocks are copied verbatim (the seed README is not part of the clone).
Each runs in the namespace a notebook on Sense would have had: a master
dashboard's environment, and whatever earlier cells of that notebook defined.
"""

# ruff: noqa: E501  (the README's blocks are copied verbatim, long lines included)
from __future__ import annotations

import os
import select
import shutil
import socket
import ssl
import subprocess
import threading

import pytest
from wheels import build_wheel

pytestmark = pytest.mark.timeout(60)

INSTALL_BLOCK = """\
import sense
sense.install("beautifulsoup")
"""

LAUNCH_BLOCK = '''\
import sense
import pickle
info = pickle.dumps(sense.networkInfo())
code = """
import distributedFramework
distributedFramework.contactMaster(%s)
"""%info
sense.launchWorkers(2, "medium", startupCode=code)
'''

REST_BLOCK = """\
import sense
sense.authInfo = getAuth()
url = "https://api.senseplatform.com/users/" + os.environ["SENSE_OWNER_ID"] + "/projects/" + os.environ["SENSE_PROJECT_ID"]
response = requests.get(url, auth=(auth["user"], auth["pass"])).json()
"""

# The module the README imagines: here it reaches the master on its project
# address, on the first port of its public port mapping, and says hello.
DISTRIBUTED_FRAMEWORK = """\
import os, pickle, socket

def contactMaster(info):
    info = pickle.loads(info)
    port = next(iter(info["public_port_mapping"]))
    with socket.create_connection((info["project_ip"], port), timeout=30) as master:
        master.sendall(("hello from worker " + os.environ["SENSE_DASHBOARD_ID"]).encode())
"""


def test_the_install_block_installs_with_pip(local_master, tmp_path, monkeypatch):
    # Offline: pip finds "beautifulsoup" in a folder of wheels, and installs it into a folder.
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    build_wheel(wheels, "beautifulsoup", source="SOUP = 'beautiful'\n")
    target = tmp_path / "target"
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    monkeypatch.setenv("PIP_TARGET", str(target))
    exec(INSTALL_BLOCK, {})
    assert (target / "beautifulsoup.py").read_text() == "SOUP = 'beautiful'\n"


def test_the_launch_block_starts_two_workers_that_contact_the_master(local_master, project_dir):
    (project_dir / "distributedFramework.py").write_text(DISTRIBUTED_FRAMEWORK)
    import sense

    info = sense.networkInfo()
    port = next(iter(info["public_port_mapping"]))
    with socket.create_server((info["project_ip"], port)) as master:
        master.settimeout(30)
        exec(LAUNCH_BLOCK, {})
        greetings = set()
        for _ in range(2):
            connection, _ = master.accept()
            with connection:
                greetings.add(connection.recv(100).decode())
    workers = [d for d in local_master.project.dashboards() if d["master_id"] is not None]
    assert greetings == {f"hello from worker {w['id']}" for w in workers}
    assert {w["size"] for w in workers} == {"medium"}


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a certificate")
# The server answers by that name too, as a server behind such a proxy is told to.
@pytest.mark.parametrize(
    "local_master", [{"allow_hosts": ["api.senseplatform.com"]}], indirect=True
)
def test_the_rest_block_reads_the_project_through_https(local_master, tmp_path, monkeypatch):
    # The block names https://api.senseplatform.com. A real HTTPS proxy in this test
    # answers for that host with a certificate this test made and trusts, and passes
    # the decrypted requests on to the local server: nothing of requests is replaced.
    cert, key = _certificate(tmp_path, "api.senseplatform.com")
    port = int(local_master.url.rsplit(":", 1)[1])
    with _TlsProxy("api.senseplatform.com", port, cert, key) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
        # What earlier cells of the notebook had done; the block itself uses them unqualified.
        namespace: dict = {}
        exec("from sense import *\nimport os, requests, sense\nauth = sense.getAuth()", namespace)
        exec(REST_BLOCK, namespace)
    response = namespace["response"]
    assert response["id"] == local_master.project.info.project_id
    assert response["owner_id"] == os.environ["SENSE_OWNER_ID"]
    assert proxy.tunnels == 1


def _certificate(directory, host: str):
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", f"/CN={host}", "-addext", f"subjectAltName=DNS:{host}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


class _TlsProxy:
    """An HTTPS proxy that answers CONNECT for ``host`` itself, ending TLS with ``cert``,
    and forwards the plain HTTP to 127.0.0.1:``port``."""

    def __init__(self, host: str, port: int, cert, key) -> None:
        self.host, self.port = host, port
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)  # so that the accepting thread sees the end
        self.stopping = threading.Event()
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.tunnels = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        self.stopping.set()
        self.thread.join()
        self.listener.close()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            client.settimeout(None)
            threading.Thread(target=self._tunnel, args=(client,), daemon=True).start()

    def _tunnel(self, client: socket.socket) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            request += client.recv(4096)
        if not request.startswith(f"CONNECT {self.host}:443 ".encode()):
            client.sendall(b"HTTP/1.1 403 Forbidden\r\n\r\n")
            client.close()
            return
        self.tunnels += 1
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        with (
            self.context.wrap_socket(client, server_side=True) as tls,
            socket.create_connection(("127.0.0.1", self.port)) as upstream,
        ):
            _pump(tls, upstream)


def _pump(tls: ssl.SSLSocket, upstream: socket.socket) -> None:
    """Copy bytes both ways until either side closes (one thread: TLS sockets share state)."""
    while True:
        ready = [tls] if tls.pending() else select.select([tls, upstream], [], [], 10)[0]
        if not ready:
            return
        for source in ready:
            target = upstream if source is tls else tls
            data = source.recv(65536)
            if not data:
                return
            target.sendall(data)
