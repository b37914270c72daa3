"""The dashboard context: the environment variables through which a dashboard learns who it is.

Every variable of the README's "Environment" table is set in every spelling
that either generation of the platform read, so that clients of both
generations run unchanged.

Example
-------
>>> project = Project("/tmp/demo", "ada", "demo", "http://127.0.0.1:8000", "t0k3n")
>>> context(project, {"id": 7, "master_id": 3, "project_ip": "127.0.0.8",
...                   "public_port_mapping": {"8080": 8080}})["SENSE_MASTER_ID"]
'3'
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sense.local.sshd.access import SshAccess

PUBLIC_DNS = "localhost"

RESERVED = re.compile(
    r"SENSE_(API_URL|OWNER_ID|PROJECT_ID|PROJECT_URL|DASHBOARD_ID|MASTER_ID|API_TOKEN|API_KEY"
    r"|USERNAME|PASSWORD|PROJECT_IP|DNS_PUBLIC|PUBLIC_DNS|SSH_PORT_PUBLIC|PUBLIC_SSH_PORT"
    r"|SSH_PASSWORD|PORT\d+|PORT\d+_PUBLIC|PUBLIC_PORT\d+)"
)


@dataclass(frozen=True)
class Project:
    """A local project: where it lives, whose it is, and how to reach its API."""

    directory: str
    owner_id: str
    project_id: str
    api_url: str
    token: str = field(repr=False)
    #: The SSH endpoint of every dashboard; None where the backend offers none.
    ssh: SshAccess | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """``{API}/users/{owner}/projects/{project}``."""
        return f"{self.api_url}/users/{self.owner_id}/projects/{self.project_id}"


def is_reserved(name: str) -> bool:
    """Whether ``name`` is a context variable, which a caller's ``env`` may not set."""
    return RESERVED.fullmatch(name) is not None


def context(project: Project, dashboard: dict) -> dict[str, str]:
    """The ``SENSE_*`` variables of ``dashboard`` (a row with id, master_id, address, ports)."""
    master = dashboard.get("master_id")
    variables = {
        "SENSE_API_URL": project.api_url,
        "SENSE_OWNER_ID": project.owner_id,
        "SENSE_PROJECT_ID": project.project_id,
        "SENSE_PROJECT_URL": project.url,
        "SENSE_DASHBOARD_ID": str(dashboard["id"]),
        # Empty, not absent, on a master: the 0.1.2 client reads it unconditionally.
        "SENSE_MASTER_ID": "" if master is None else str(master),
        "SENSE_API_TOKEN": project.token,
        "SENSE_API_KEY": project.token,
        "SENSE_PROJECT_IP": dashboard["project_ip"],
        "SENSE_DNS_PUBLIC": PUBLIC_DNS,
        "SENSE_PUBLIC_DNS": PUBLIC_DNS,
    }
    ports = sorted(dashboard.get("public_port_mapping", {}).items(), key=lambda item: int(item[0]))
    for i, (private, public) in enumerate(ports, start=1):
        variables[f"SENSE_PORT{i}"] = str(private)
        variables[f"SENSE_PORT{i}_PUBLIC"] = str(public)
        variables[f"SENSE_PUBLIC_PORT{i}"] = str(public)
    if project.ssh is not None:
        variables["SENSE_SSH_PORT_PUBLIC"] = variables["SENSE_PUBLIC_SSH_PORT"] = str(
            project.ssh.port
        )
        variables["SENSE_SSH_PASSWORD"] = project.ssh.password(dashboard["id"])
    return variables
