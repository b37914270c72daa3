"""Who may log in over SSH: user ``sense`` with the password of a running dashboard.

Each dashboard's password is derived from a key made when the server starts
and kept only in its memory (HMAC-SHA256 of the dashboard id): every
dashboard gets its own, unguessable without the key, nothing about it is
stored, and a restart of the server (which ends every dashboard) makes every
old password worthless. Standard library only: the dashboard context needs
the passwords without importing the SSH server.

Example
-------
>>> access = SshAccess(port=2222)
>>> password = access.password(7)
>>> access.dashboard_for("sense", password, running=[3, 7])
7
>>> access.dashboard_for("sense", password, running=[3]) is None     # ended: refused
True
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable

USER = "sense"


class SshAccess:
    """The SSH endpoint as dashboards see it: its port, and each dashboard's password.

    Parameters
    ----------
    port : int
        Where the SSH server listens (``SENSE_SSH_PORT_PUBLIC``).
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self._key = secrets.token_bytes(32)

    def password(self, dashboard_id: int) -> str:
        """The SSH password of dashboard ``dashboard_id``: 24 URL-safe characters."""
        digest = hmac.new(self._key, str(dashboard_id).encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:18]).decode()

    def dashboard_for(self, user: str, password: str, running: Iterable[int]) -> int | None:
        """The dashboard among ``running`` whose password ``password`` is, for user ``sense``.

        Every candidate is compared, in constant time, so that the time taken says
        nothing about how close a guess came.
        """
        found = None
        for dashboard_id in running:
            if hmac.compare_digest(self.password(dashboard_id).encode(), password.encode()):
                found = dashboard_id
        return found if user == USER else None

    def __repr__(self) -> str:
        return f"<SshAccess port {self.port}>"
