"""A reverse proxy that misbehaves on purpose, request by request, for fault tests.

It stands between the client and a real server on loopback. For each
request it draws a fault from a seeded random generator: pass it on, hang
up before passing it on, pass it on and hang up before the answer (the
request took effect, its answer is lost), answer slowly, answer 503, or
answer garbage with a 200.
"""

from __future__ import annotations

import http.client
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

FAULTS = ("hang_up_before", "hang_up_after", "slow", "unavailable", "garbage")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}


class ChaosProxy:
    """Proxy to ``upstream`` (an http:// URL) on 127.0.0.1; ``fault_rate`` of requests misbehave.

    Attributes
    ----------
    url : str
        Where to point the client.
    counts : dict
        How many requests met each fault (and ``"pass"``).
    """

    def __init__(self, upstream: str, fault_rate: float, slow_seconds: float, seed: int = 7):
        self.upstream = urlsplit(upstream)
        self.fault_rate = fault_rate
        self.slow_seconds = slow_seconds
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.counts = {name: 0 for name in ("pass", *FAULTS)}
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def handle_one(self):
                proxy.handle(self)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = handle_one

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ChaosProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _draw(self) -> str:
        with self.lock:
            fault = "pass"
            if self.random.random() < self.fault_rate:
                fault = self.random.choice(FAULTS)
            self.counts[fault] += 1
            return fault

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else None
        fault = self._draw()
        if fault == "hang_up_before":
            request.close_connection = True
            return
        if fault == "unavailable":
            self._answer(request, 503, b'{"error": "chaos: unavailable"}')
            return
        if fault == "garbage":
            self._answer(request, 200, b"<html>chaos</html>", "text/html")
            return
        status, data, content_type = self._forward(request, body)
        if fault == "hang_up_after":
            request.close_connection = True
            return
        if fault == "slow":
            time.sleep(self.slow_seconds)
        self._answer(request, status, data, content_type)

    def _forward(self, request: BaseHTTPRequestHandler, body: bytes | None):
        connection = http.client.HTTPConnection(
            self.upstream.hostname, self.upstream.port, timeout=30
        )
        try:
            headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
            connection.request(request.command, request.path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.read(), response.getheader("Content-Type", "")
        finally:
            connection.close()

    @staticmethod
    def _answer(request, status: int, data: bytes, content_type="application/json") -> None:
        request.send_response(status)
        request.send_header("Content-Type", content_type)
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)
