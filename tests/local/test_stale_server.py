"""The token reaches only the server that holds the project: never whoever took the port of
one that was killed (a stale ``.sense/server.json``, a shell whose ``SENSE_*`` outlived it)."""

from __future__ import annotations

import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
from conftest import read_exports, sense_command, wait_for

import sense
from sense.local import LocalServer

pytestmark = pytest.mark.timeout(60)


class PortThief:
    """Another program that listens on a port a server let go of, and records every request
    that reaches it; it answers each with an empty list, as if it were an empty project."""

    def __init__(self, port: int) -> None:
        self.requests: list[tuple[str, dict]] = []
        thief = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def record_and_answer(self):
                thief.requests.append((self.path, dict(self.headers)))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"[]")

            do_GET = do_POST = do_PATCH = do_PUT = record_and_answer

        self.server = wait_for(lambda: self._bind(port, Handler), what=f"port {port} to be free")
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def _bind(port: int, handler) -> ThreadingHTTPServer | None:
        try:
            return ThreadingHTTPServer(("127.0.0.1", port), handler)
        except OSError:  # the server's socket is not closed yet
            return None

    def credentials_received(self) -> list[str]:
        return [path for path, headers in self.requests if "Authorization" in headers]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def killed_server(project_dir):
    """``sense server`` killed by SIGKILL (its ``server.json`` left behind), and a thief on
    its port; yields the thief and the variables the server had printed."""
    server = sense_command("server", cwd=project_dir)
    exports = dict(read_exports(server))
    server.send_signal(signal.SIGKILL)
    server.communicate(timeout=30)
    assert (project_dir / ".sense" / "server.json").exists()
    thief = PortThief(urlsplit(exports["SENSE_PROJECT_URL"]).port)
    yield thief, exports
    thief.close()


def test_sense_ps_after_the_server_was_killed_sends_no_token_to_its_port(
    project_dir, killed_server
):
    thief, _ = killed_server
    ps = sense_command("ps", cwd=project_dir)
    output, _ = ps.communicate(timeout=30)
    assert ps.returncode == 1
    assert "no local Sense server runs for" in output
    assert "server.json names pid" in output  # the stale record, named
    assert thief.requests == []


@pytest.mark.parametrize("command", [["ps"], ["logs", "2"], ["stop", "2"]])
def test_a_shell_whose_variables_outlived_the_server_sends_no_token(
    tmp_path, killed_server, command
):
    thief, exports = killed_server
    run = sense_command(*command, cwd=tmp_path, env=exports)
    output, _ = run.communicate(timeout=30)
    assert run.returncode == 1
    assert "does not prove that it is the local Sense server" in output
    assert "the credentials were not sent" in output
    assert thief.requests, "the challenge should have reached the thief"
    assert thief.credentials_received() == []


def test_a_client_whose_server_ended_sends_no_token_to_who_takes_its_port(project_dir, clean_env):
    with LocalServer(project_dir, grace=1.0) as server:
        server.attach(set_environ=False)
        token = server.project.info.token
        client = sense.Client(url=server.project_url, auth=(token, ""), retries=0)
        assert [d["id"] for d in client.getDashboards()] == [server.master["id"]]
    # The same client, the moment after: no request of it failed meanwhile.
    thief = PortThief(urlsplit(server.url).port)
    try:
        with pytest.raises(sense.SenseConnectionError, match="does not prove"):
            client.getDashboards()
        assert thief.requests and thief.credentials_received() == []
    finally:
        thief.close()
