"""What the client's tests send and expect: a project, its token, its dashboards."""

from __future__ import annotations

import base64
import itertools
import json
import re
import threading
import time
from urllib.parse import parse_qs

from werkzeug import Response

from sense import proof

TOKEN = "tok-3f9a"
OWNER = "alice"
PROJECT = "cluster-demo"
PROJECT_PATH = f"/users/{OWNER}/projects/{PROJECT}"
MASTER_ID = 3
BASIC_AUTH = "Basic " + base64.b64encode(f"{TOKEN}:".encode()).decode()


def challenge_answer(target: str) -> str | None:
    """The JSON that the local server, knowing :data:`TOKEN`, answers to ``GET target`` if it
    is its challenge (``sense.proof``, asked before a client sends the token); else None."""
    path, _, query = target.partition("?")
    if path != proof.ROUTE:
        return None
    nonce = parse_qs(query).get("nonce", [""])[0]
    return json.dumps({"proof": proof.answer(TOKEN, nonce)})


def raw_challenge_answer(request: bytes) -> bytes | None:
    """The whole HTTP answer to the raw ``request`` if it asks the challenge, else None; the
    connection stays open for the request that follows it."""
    method, target, *_ = [*request.split(b"\r\n", 1)[0].decode(errors="replace").split(), "", ""]
    body = challenge_answer(target) if method == "GET" else None
    if body is None:
        return None
    head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    return f"{head}Content-Length: {len(body)}\r\n\r\n{body}".encode()


def dashboard_json(dashboard_id: int, master_id: int | None = MASTER_ID, status: str = "running"):
    """A dashboard as the API sends it (JSON: the port mapping's keys are strings)."""
    return {
        "id": dashboard_id,
        "name": f"dashboard {dashboard_id}",
        "project_id": PROJECT,
        "owner_id": OWNER,
        "engine": "sense-ipython-engine",
        "size": "small",
        "status": status,
        "master_id": master_id,
        "startup_script": "",
        "startup_code": "",
        "env": {},
        "project_ip": f"127.0.1.{dashboard_id}",
        "public_dns": "localhost",
        "public_port_mapping": {"8080": 18000 + dashboard_id},
        "exit_code": None,
        "created_at": "2026-11-25T19:00:00Z",
        "started_at": "2026-11-25T19:00:01Z",
        "stopped_at": None,
    }


def json_response(body, status=200):
    return Response(json.dumps(body), status=status, content_type="application/json")


class LaunchCounter:
    """A project's launch route: each POST gets the next id; the listing shows what launched."""

    def __init__(self, first_id=10, fail_on=(), hold=None, quota=None):
        """``hold=(k, seconds)``: the k-th launch is answered ``seconds`` late (``held`` is set).

        ``quota``: launches past that many are answered 429, as a server at its quota does.
        """
        self.hold = hold
        self.quota = quota
        self.held = threading.Event()
        self.ids = itertools.count(first_id)
        self.arrivals = itertools.count()
        self.fail_on = set(fail_on)
        self.launched = []
        self.bodies = []
        self.dashboards = []
        self.lock = threading.Lock()

    def __call__(self, request):
        with self.lock:
            body = request.get_json()
            self.bodies.append(body)
            arrival = next(self.arrivals)
            if arrival in self.fail_on:
                return json_response({"error": f"no room for launch {arrival}"}, status=500)
            if self.quota is not None and len(self.launched) >= self.quota:
                error = f"quota of {self.quota} running workers reached"
                return json_response({"error": error}, status=429)
            dashboard_id = next(self.ids)
            self.launched.append(dashboard_id)
            dashboard = dashboard_json(dashboard_id, status="starting")
            dashboard["name"] = body.get("name")
            self.dashboards.append(dashboard)
            held = self.hold is not None and len(self.launched) == self.hold[0]
        if held:
            self.held.set()
            time.sleep(self.hold[1])
        return json_response(dashboard, status=201)

    def bodies_without_name(self):
        return [{k: v for k, v in body.items() if k != "name"} for body in self.bodies]

    def listing(self, request):
        with self.lock:
            return json_response(self.dashboards)

    def serve(self, httpserver, stops=False):
        """Answer launches and the dashboard listing (and with ``stops``, every stop)."""
        path = f"{PROJECT_PATH}/dashboards"
        httpserver.expect_request(path, method="POST").respond_with_handler(self)
        httpserver.expect_request(path, method="GET").respond_with_handler(self.listing)
        if stops:
            any_dashboard = re.compile(rf"{path}/\d+")
            httpserver.expect_request(any_dashboard, method="PATCH").respond_with_handler(
                stop_handler
            )


def stop_handler(request):
    dashboard_id = int(request.path.rsplit("/", 1)[1])
    return json_response(dashboard_json(dashboard_id, status="stopped"))
