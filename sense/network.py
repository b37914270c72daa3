"""How this dashboard can be reached: from its project, and from outside."""

from __future__ import annotations

import re

from sense import environment, variables
from sense.errors import SenseConfigError

SSH_PORT = 22
_DECIMAL = re.compile(r"[0-9]+")


def _port(names: tuple[str, ...]) -> int | None:
    """The port in the first of ``names`` that is set, as an int; None if none is set."""
    for name in names:
        value = environment.lookup((name,))
        if value is None:
            continue
        # Only plain ASCII digits: int() would also take " 80", "+80", "8_0" and "٨٠".
        if _DECIMAL.fullmatch(value) is None or not 1 <= int(value) <= 65535:
            raise SenseConfigError(
                f"{name} should be a port number, not {value!r}: one of 1 to 65535, in digits"
            )
        return int(value)
    return None


def port_mapping() -> dict[int, int]:
    """Private port to public port, read from SENSE_PORT1, SENSE_PORT2, ... until one is missing."""
    mapping: dict[int, int] = {}
    i = 1
    while (private := _port(variables.numbered(variables.PRIVATE_PORT, i))) is not None:
        public_names = variables.numbered(variables.PUBLIC_PORT, i)
        public = _port(public_names)
        if public is None:
            (private_name,) = variables.numbered(variables.PRIVATE_PORT, i)
            raise SenseConfigError(
                f"{private_name} is set but its public port is not: set {' or '.join(public_names)}"
            )
        mapping[private] = public
        i += 1
    ssh = _port(variables.SSH_PORT_PUBLIC)
    if ssh is not None:
        mapping[SSH_PORT] = ssh
    return mapping


def info() -> dict:
    """This dashboard's contact information; see :func:`sense.networkInfo`."""
    # The project address first: its absence is the sign of not being on a dashboard at all.
    project_ip = environment.require(variables.PROJECT_IP)
    return {
        "public_dns": environment.require(variables.PUBLIC_DNS),
        "public_port_mapping": port_mapping(),
        "ssh_password": environment.lookup(variables.SSH_PASSWORD),
        "project_ip": project_ip,
    }
