"""A stand-in API whose process dies at once after it has answered a number of launches.

    python tests/dying_api.py LAUNCHES

prints the port it listens on (127.0.0.1), answers the first LAUNCHES
``POST``s with a new dashboard (ids 10, 11, ...), and exits abruptly when
the next request arrives, as a server that crashes does: every connection
drops, and later ones are refused.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from api_data import challenge_answer


def main() -> None:
    launches = int(sys.argv[1])
    answered = []
    # One request at a time: each answer is written whole before the process can die.
    one_at_a_time = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            # Only the challenge, which a client asks before it sends the token.
            body = challenge_answer(self.path)
            if body is None:
                self.send_error(501)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with one_at_a_time:
                if len(answered) == launches:
                    os._exit(0)
                answered.append(10 + len(answered))
                body = json.dumps({"id": answered[-1], "status": "starting", "master_id": 3})
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
