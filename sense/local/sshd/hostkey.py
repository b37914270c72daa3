"""The SSH server's host key: made once per project, kept in ``.sense/ssh_host_key``.

Kept, so that the ``known_hosts`` entry a client made stays valid when the
server restarts; owner-only, because whoever holds it can pose as this server.

Example
-------
>>> key = load_or_create_host_key(Path("/tmp/demo/.sense/ssh_host_key"))  # doctest: +SKIP
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import asyncssh

from sense.errors import SenseError

ALGORITHM = "ssh-ed25519"


class HostKeyError(SenseError):
    """The host key file is not one this server can trust or read."""


def load_or_create_host_key(path: Path) -> asyncssh.SSHKey:
    """The key in ``path``; made and saved there first (mode 0600) if there is none.

    Raises
    ------
    HostKeyError
        The file is a symbolic link, is not owned by this user, may be read by
        others, or does not hold a private key.
    """
    try:
        # O_EXCL and O_NOFOLLOW: never write through a file or link someone else planted.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return _load(path)
    key = asyncssh.generate_private_key(ALGORITHM, comment="sense local server")
    with os.fdopen(fd, "wb") as file:
        file.write(key.export_private_key())
    return key


def _load(path: Path) -> asyncssh.SSHKey:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as error:
        raise HostKeyError(
            f"cannot read the SSH host key {path} ({error.strerror}); it must be a file, not a link"
        ) from None
    with os.fdopen(fd, "rb") as file:
        status = os.fstat(file.fileno())
        if not stat.S_ISREG(status.st_mode) or status.st_uid != os.getuid():
            raise HostKeyError(f"the SSH host key {path} is not a file of yours: remove it")
        if status.st_mode & 0o077:
            raise HostKeyError(
                f"the SSH host key {path} may be read by others: remove it (a new one is made)"
            )
        data = file.read()
    try:
        return asyncssh.import_private_key(data)
    except (asyncssh.KeyImportError, ValueError):
        raise HostKeyError(
            f"{path} does not hold an SSH private key: remove it (a new one is made)"
        ) from None
