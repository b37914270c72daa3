"""The ``.sense/`` directory of a local project: database, logs, token, lock.

Example
-------
>>> state = StateDir("/tmp/myproject")            # doctest: +SKIP
>>> state.lock(); token = state.token()           # doctest: +SKIP
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
from pathlib import Path

from sense.errors import SenseError

DIRECTORY = ".sense"


class ProjectBusyError(SenseError):
    """Another local server already serves this project directory."""


class StateDir:
    """Paths and files under ``<project>/.sense/``, created on first use.

    Parameters
    ----------
    project_dir : str or Path
        The project directory; ``.sense/`` is made inside it, readable by its owner only.
    """

    def __init__(self, project_dir: str | os.PathLike) -> None:
        self.project_dir = Path(project_dir).resolve()
        self.path = self.project_dir / DIRECTORY
        self.log_dir = self.path / "logs"
        self.code_dir = self.path / "code"
        self.db_path = self.path / "sense.db"
        self.server_file = self.path / "server.json"
        self._lock_fd: int | None = None
        self.log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.code_dir.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.path, 0o700)
        ignore = self.path / ".gitignore"
        if not ignore.exists():
            # The state of a run has no place in the project's version control.
            ignore.write_text("*\n")

    def log_path(self, dashboard_id: int) -> Path:
        """Where dashboard ``dashboard_id`` writes its output."""
        return self.log_dir / f"{dashboard_id}.log"

    def code_path(self, dashboard_id: int) -> Path:
        """Where dashboard ``dashboard_id``'s startup code is saved while it runs."""
        return self.code_dir / f"{dashboard_id}.py"

    def token(self) -> str:
        """The project's API token: read from ``token``, or made and saved with mode 0600."""
        path = self.path / "token"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            os.chmod(path, 0o600)
            token = path.read_text().strip()
            if token:
                return token
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        token = secrets.token_urlsafe(32)
        with os.fdopen(fd, "w") as file:
            file.write(token + "\n")
        return token

    def lock(self) -> None:
        """Hold the project for this process until it ends (the kernel lets go even after SIGKILL).

        Raises
        ------
        ProjectBusyError
            Another process holds it: two servers on one project would kill each other's workers.
        """
        fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            owner = self.read_server_file().get("pid", "another process")
            raise ProjectBusyError(
                f"{self.project_dir} is already served by a local Sense server (pid {owner}); "
                "stop it first, or use another project directory"
            ) from None
        self._lock_fd = fd

    def unlock(self) -> None:
        """Let go of the project."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def write_server_file(self, url: str, project_url: str) -> None:
        """Tell the ``sense ps``/``logs``/``stop`` commands where the running server is."""
        record = {"url": url, "project_url": project_url, "pid": os.getpid()}
        self.server_file.write_text(json.dumps(record) + "\n")

    def read_server_file(self) -> dict:
        """What :meth:`write_server_file` wrote, or ``{}``."""
        try:
            return json.loads(self.server_file.read_text())
        except (OSError, ValueError):
            return {}

    def remove_server_file(self) -> None:
        """The server is gone."""
        self.server_file.unlink(missing_ok=True)
