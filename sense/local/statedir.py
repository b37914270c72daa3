"""The ``.sense/`` directory of a local project: database, logs, token, lock.

Everything in it must be the current user's and writable by nobody else:
the token lets whoever reads it run code, and the server runs the code and
appends to the logs it finds there. So a ``.sense/`` that another user
could have planted (say in a world-writable folder) is refused before
anything in it is read, and files are never opened through a symbolic link.

Example
-------
>>> state = StateDir("/tmp/myproject")            # doctest: +SKIP
>>> state.lock(); token = state.token()           # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import stat
from pathlib import Path

from sense.errors import SenseError

DIRECTORY = ".sense"


class ProjectBusyError(SenseError):
    """Another local server already serves this project directory."""


class UntrustedStateError(SenseError):
    """The project's ``.sense/``, or something in it, could be another user's: it is not used."""


class StateDir:
    """Paths and files under ``<project>/.sense/``, created on first use.

    Parameters
    ----------
    project_dir : str or Path
        The project directory; ``.sense/`` is made inside it, readable by its owner only.
    create : bool
        Make what is missing (a server does); without it, only look (``sense ps`` does).

    Raises
    ------
    UntrustedStateError
        ``.sense/`` or an entry in it is not the current user's, is writable by
        others, or is a symbolic link.
    """

    def __init__(self, project_dir: str | os.PathLike, *, create: bool = True) -> None:
        self.project_dir = Path(project_dir).resolve()
        self.path = self.project_dir / DIRECTORY
        self.log_dir = self.path / "logs"
        self.db_path = self.path / "sense.db"
        self.server_file = self.path / "server.json"
        self.token_file = self.path / "token"
        self._lock_fd: int | None = None
        if create:
            _make_folders(self.project_dir)
            with contextlib.suppress(FileExistsError):
                os.mkdir(self.path, 0o700)
        # First .sense/ itself: once it is ours and closed to others, nobody else can put
        # anything in it nor read what is there, and what this process creates there is safe.
        _check_trusted(self.path, private=True)
        if create:
            with contextlib.suppress(FileExistsError):
                os.mkdir(self.log_dir, 0o700)
        for entry in _entries(self.path):
            _check_trusted(entry)
        if create:
            with contextlib.suppress(FileExistsError):
                # The state of a run has no place in the project's version control.
                create_new(self.path / ".gitignore", b"*\n")
            with contextlib.suppress(FileExistsError):
                # Made here with mode 0600: sqlite gives its journal files the database's mode.
                create_new(self.db_path, b"")

    def log_path(self, dashboard_id: int) -> Path:
        """Where dashboard ``dashboard_id`` writes its output."""
        return self.log_dir / f"{dashboard_id}.log"

    def token(self) -> str:
        """The project's API token: read from ``token``, or made and saved with mode 0600."""
        try:
            with open_no_link(self.token_file) as file:
                os.fchmod(file.fileno(), 0o600)
                token = file.read().decode().strip()
        except FileNotFoundError:
            token = ""
        if token:
            return token
        token = secrets.token_urlsafe(32)
        self.token_file.unlink(missing_ok=True)  # an empty one, which a crash may leave
        create_new(self.token_file, token.encode() + b"\n")
        return token

    def read_token(self) -> str | None:
        """The saved token, or None if there is none yet; nothing is created or changed."""
        try:
            with open_no_link(self.token_file) as file:
                return file.read().decode().strip() or None
        except FileNotFoundError:
            return None

    def lock(self) -> None:
        """Hold the project for this process until it ends (the kernel lets go even after SIGKILL).

        Raises
        ------
        ProjectBusyError
            Another process holds it: two servers on one project would kill each other's workers.
        """
        fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
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

    def write_server_file(self, url: str, project_url: str, master_id: int | None = None) -> None:
        """Tell the ``sense ps``/``logs``/``stop`` commands where the running server is, and
        which master dashboard its own process is, if any."""
        record = {
            "url": url,
            "project_url": project_url,
            "pid": os.getpid(),
            "master_id": master_id,
        }
        self.server_file.unlink(missing_ok=True)
        create_new(self.server_file, json.dumps(record).encode() + b"\n")

    def read_server_file(self) -> dict:
        """What :meth:`write_server_file` wrote, or ``{}``."""
        try:
            with open_no_link(self.server_file) as file:
                return json.loads(file.read())
        except (OSError, ValueError):
            return {}

    def is_served_by(self, pid: object) -> bool:
        """Whether process ``pid`` is alive and holds the project's lock: it is the server that
        ``server.json`` names, not a stale record of one that was killed (whose port anyone
        may have taken since)."""
        if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
            return False
        try:
            info = os.stat(self.path / "lock", follow_symlinks=False)
        except FileNotFoundError:
            return False
        holders = _flock_holders(info)
        if holders is not None:
            return pid in holders
        return _is_locked(self.path / "lock") and _is_alive(pid)

    def remove_server_file(self) -> None:
        """The server is gone."""
        self.server_file.unlink(missing_ok=True)


_OPEN_FLAGS = {"rb": os.O_RDONLY, "ab": os.O_WRONLY | os.O_APPEND | os.O_CREAT}


def open_no_link(path: str | os.PathLike, mode: str = "rb"):
    """``open(path, mode)`` for ``"rb"`` or ``"ab"``, refusing a symbolic link; new files get 0600.

    Raises ``OSError`` (``ELOOP``) for a link: output never goes through one into another file.
    """
    return os.fdopen(os.open(path, _OPEN_FLAGS[mode] | os.O_NOFOLLOW, 0o600), mode)


def create_new(path: str | os.PathLike, data: bytes) -> None:
    """Make ``path`` with ``data``, mode 0600; ``FileExistsError`` if anything is there already."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def _flock_holders(info: os.stat_result) -> set[int] | None:
    """The processes that hold a ``flock`` on the file of ``info``, from ``/proc/locks``
    (Linux; None elsewhere). Read, not tried: trying would take the lock for a moment."""
    try:
        with open("/proc/locks") as file:
            lines = file.read().splitlines()
    except OSError:
        return None
    device = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    # "1: FLOCK  ADVISORY  WRITE 20918 fe:00:2147297 0 EOF"
    return {
        int(fields[4])
        for fields in map(str.split, lines)
        if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == device
    }


def _is_locked(path: Path) -> bool:
    """Whether another process holds ``path``'s lock: a non-blocking try fails."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # which lets go of the lock, if this took it
    return False


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: not the server of this user's project
        return False
    return True


def _entries(directory: Path):
    """Every path under ``directory``, at any depth, without following symbolic links."""
    with os.scandir(directory) as found:
        for entry in found:
            yield Path(entry.path)
            if entry.is_dir(follow_symlinks=False):
                yield from _entries(Path(entry.path))


def _make_folders(path: Path) -> None:
    """Make ``path`` and its missing parents, mode 0755 at most: a folder that others may
    write lets them plant a ``.sense/`` (``mkdir -p`` gives 0777 under umask 000)."""
    missing = [folder for folder in (path, *path.parents) if not folder.exists()]
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(folder, 0o755)  # the umask may take more away, never add


def _check_trusted(path: Path, *, private: bool = False) -> None:
    """Refuse ``path`` unless it is the current user's, writable by nobody else, and no link;
    if ``private``, open to nobody else at all."""
    info = os.lstat(path)
    me = os.geteuid()
    mode = stat.S_IMODE(info.st_mode)
    planted = "refusing to use this project's state, which another user could have planted"
    if stat.S_ISLNK(info.st_mode):
        problem, remedy = f"is a symbolic link: {planted}", f"remove {path}"
    elif info.st_uid != me:
        problem = f"belongs to user id {info.st_uid}, not to you (user id {me}): {planted}"
        remedy = f"remove {path}"
    elif info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        problem = f"is writable by other users (mode {mode:o}): {planted}"
        remedy = f"check it, then `chmod -R go-w {path}`"
    elif private and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        problem = (
            f"is open to other users (mode {mode:o}): refusing to use this project's state, "
            "where they could read the token, the dashboards' environments and logs"
        )
        remedy = f"`chmod 700 {path}`, and remove {path / 'token'} for a new token"
    else:
        return
    raise UntrustedStateError(f"{path} {problem}; {remedy}")
