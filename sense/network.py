"""How this dashboard can be reached: from its project, and from outside."""

from __future__ import annotations

from sense import environment
from sense.errors import SenseConfigError

SSH_PORT = 22


def _port(names: tuple[str, ...]) -> int | None:
    """The port in the first of ``names`` that is set, as an int; None if none is set."""
    for name in names:
        value = environment.lookup(name)
        if value is None:
            continue
        try:
            return int(value)
        except ValueError:
            raise SenseConfigError(f"{name} should be a port number, not {value!r}") from None
    return None


def port_mapping() -> dict[int, int]:
    """Private port to public port, read from SENSE_PORT1, SENSE_PORT2, ... until one is missing."""
    mapping: dict[int, int] = {}
    i = 1
    while (private := _port((f"SENSE_PORT{i}",))) is not None:
        public_names = (f"SENSE_PORT{i}_PUBLIC", f"SENSE_PUBLIC_PORT{i}")
        public = _port(public_names)
        if public is None:
            raise SenseConfigError(
                f"SENSE_PORT{i} is set but its public port is not: set {' or '.join(public_names)}"
            )
        mapping[private] = public
        i += 1
    ssh = _port(("SENSE_SSH_PORT_PUBLIC", "SENSE_PUBLIC_SSH_PORT"))
    if ssh is not None:
        mapping[SSH_PORT] = ssh
    return mapping


def info() -> dict:
    """This dashboard's contact information; see :func:`sense.networkInfo`."""
    # The project address first: its absence is the sign of not being on a dashboard at all.
    project_ip = environment.require("SENSE_PROJECT_IP")
    return {
        "public_dns": environment.require("SENSE_DNS_PUBLIC", "SENSE_PUBLIC_DNS"),
        "public_port_mapping": port_mapping(),
        "ssh_password": environment.lookup("SENSE_SSH_PASSWORD"),
        "project_ip": project_ip,
    }
