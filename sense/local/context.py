"""The dashboard context: the environment variables through which a dashboard learns who it is.

Every variable of the "Environment" table of docs/guide.md is set in every spelling
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

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sense import variables

if TYPE_CHECKING:
    from sense.local.sshd.access import SshAccess

PUBLIC_DNS = "localhost"


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


def context(project: Project, dashboard: dict) -> dict[str, str]:
    """The ``SENSE_*`` variables of ``dashboard`` (a row with id, master_id, address, ports).

    Each in every spelling of :mod:`sense.variables`, the table the client reads them by.
    """
    master = dashboard.get("master_id")
    values = [
        (variables.API_URL, project.api_url),
        (variables.OWNER_ID, project.owner_id),
        (variables.PROJECT_ID, project.project_id),
        (variables.PROJECT_URL, project.url),
        (variables.DASHBOARD_ID, str(dashboard["id"])),
        # Empty, not absent, on a master: the 0.1.2 client reads it unconditionally.
        (variables.MASTER_ID, "" if master is None else str(master)),
        (variables.API_TOKEN, project.token),
        (variables.PROJECT_IP, dashboard["project_ip"]),
        (variables.PUBLIC_DNS, PUBLIC_DNS),
    ]
    ports = sorted(dashboard.get("public_port_mapping", {}).items(), key=lambda item: int(item[0]))
    for i, (private, public) in enumerate(ports, start=1):
        values.append((variables.numbered(variables.PRIVATE_PORT, i), str(private)))
        values.append((variables.numbered(variables.PUBLIC_PORT, i), str(public)))
    if project.ssh is not None:
        values.append((variables.SSH_PORT_PUBLIC, str(project.ssh.port)))
        values.append((variables.SSH_PASSWORD, project.ssh.password(dashboard["id"])))
    return {name: value for names, value in values for name in names}
