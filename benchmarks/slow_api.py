"""A stand-in Sense API that answers every request after a fixed delay (run as a process).

    python benchmarks/slow_api.py PORT_FILE [DELAY_SECONDS]

Listens on 127.0.0.1, any free port, and writes the port to PORT_FILE. It
keeps dashboards in memory: enough of the REST contract for launching,
listing and stopping, so that what is measured is the client.
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from sense import proof

#: The token of the benchmark's client (client_overhead.py), whose knowledge the API proves.
TOKEN = "bench-token"

DELAY = float(sys.argv[2]) if len(sys.argv) > 2 else 0.020
dashboards: dict[int, dict] = {}
ids = itertools.count(1)
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the platform's API
    disable_nagle_algorithm = True  # else each answer waits on a delayed ACK (40 ms)

    def log_message(self, *args):
        pass

    def _answer(self, status: int, body) -> None:
        time.sleep(DELAY)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def do_GET(self):
        target = urlsplit(self.path)
        if target.path == proof.ROUTE:  # asked once per client, as of the local server
            nonce = parse_qs(target.query).get("nonce", [""])[0]
            self._answer(200, {"proof": proof.answer(TOKEN, nonce)})
        elif target.path.endswith("/dashboards"):  # list filters are ignored
            with lock:
                self._answer(200, list(dashboards.values()))
        else:
            self._answer(200, {"id": "bench", "owner_id": "bench"})

    def do_POST(self):
        body = self._body()
        with lock:
            new_id = next(ids)
            dashboards[new_id] = {"id": new_id, "status": "running", **body}
        self._answer(201, dashboards[new_id])

    def do_PATCH(self):
        self._body()
        dashboard_id = int(self.path.rsplit("/", 1)[1])
        with lock:
            dashboards[dashboard_id]["status"] = "stopped"
        self._answer(200, dashboards[dashboard_id])


class Server(ThreadingHTTPServer):
    daemon_threads = True
    # The listen backlog, set before the socket listens: the default (5) drops the
    # connections of 100 concurrent launches, which the client then retries a second later.
    request_queue_size = 256


if __name__ == "__main__":
    server = Server(("127.0.0.1", 0), Handler)
    with open(sys.argv[1], "w") as port_file:
        port_file.write(str(server.server_address[1]))
    server.serve_forever()
