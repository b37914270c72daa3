"""What the client's tests send and expect: a project, its token, its dashboards."""

from __future__ import annotations

import base64

TOKEN = "tok-3f9a"
OWNER = "alice"
PROJECT = "cluster-demo"
PROJECT_PATH = f"/users/{OWNER}/projects/{PROJECT}"
MASTER_ID = 3
BASIC_AUTH = "Basic " + base64.b64encode(f"{TOKEN}:".encode()).decode()


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
