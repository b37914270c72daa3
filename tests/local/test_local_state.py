"""A project's ``.sense/`` is trusted only when it is the current user's alone.

Planted state (another user's ``.sense/``, token or logs, or a symbolic link
in it) is refused with one line before anything in it is read or served.
Changing a file's owner takes root: those tests skip, saying so, otherwise.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from conftest import Api, read_exports, sense_command
from needs import require

from sense.local import LocalServer
from sense.local.statedir import UntrustedStateError

pytestmark = pytest.mark.timeout(60)

NOBODY = 65534
PLANTED_TOKEN = "a-token-somebody-else-planted"


@pytest.fixture
def used_project(project_dir) -> Path:
    """A project whose ``.sense/`` holds everything a run leaves: token, logs, db, lock, ..."""
    with LocalServer(project_dir, grace=1.0) as server:
        server.attach(set_environ=False)
        api = Api(server)
        worker = api.launch(startup_code="print('hello')")
        api.wait_status(worker["id"], "stopped")
        record = server.state.server_file.read_bytes()
    # As a server that was SIGKILLed leaves it.
    (project_dir / ".sense" / "server.json").write_bytes(record)
    return project_dir


def snapshot(directory: Path) -> dict:
    """Every entry under ``directory`` with what would show a change to it."""
    return {
        str(path): (info.st_mode, info.st_uid, info.st_size, info.st_mtime_ns)
        for path in sorted(directory.rglob("*"))
        for info in [os.lstat(path)]
    }


def as_root() -> None:
    require(os.geteuid() == 0, "giving a file to another user (chown) takes root")


def refused(project_dir: Path, *words: str) -> None:
    """A server for ``project_dir`` is refused naming ``words``, and nothing there changes."""
    before = snapshot(project_dir)
    with pytest.raises(UntrustedStateError) as error:
        LocalServer(project_dir)
    message = str(error.value)
    assert "\n" not in message
    for word in words:
        assert word in message
    assert snapshot(project_dir) == before


@pytest.mark.parametrize(
    "entry", [".", "token", "logs", "logs/2.log", "sense.db", "server.json", "lock"]
)
def test_state_another_user_owns_is_refused_before_anything_is_used(used_project, entry):
    as_root()
    path = used_project / ".sense" / entry
    os.chown(path, NOBODY, NOBODY, follow_symlinks=False)
    refused(used_project, str(path.resolve()), f"belongs to user id {NOBODY}")


@pytest.mark.parametrize(("entry", "bits"), [(".", stat.S_IWOTH), ("token", stat.S_IWGRP)])
def test_state_others_can_write_is_refused(used_project, entry, bits):
    path = used_project / ".sense" / entry
    path.chmod(stat.S_IMODE(path.stat().st_mode) | bits)
    refused(used_project, "writable by other users", "chmod -R go-w")


@pytest.mark.parametrize("mode", [0o755, 0o750, 0o701])
def test_state_others_can_read_or_enter_is_refused(used_project, mode):
    path = used_project / ".sense"
    path.chmod(mode)
    refused(used_project, str(path.resolve()), f"open to other users (mode {mode:o})", "chmod 700")


def test_a_server_keeps_its_state_closed_to_others_and_starts_again_under_umask_000(tmp_path):
    project = tmp_path / "made" / "by the server"
    old = os.umask(0)
    try:
        for _ in range(2):
            with LocalServer(project, grace=1.0) as server:
                server.attach(set_environ=False)
                api = Api(server)
                api.wait_status(api.launch(startup_code="print('hi')")["id"], "stopped")
    finally:
        os.umask(old)
    # Folders the server made are not for others to write; what .sense/ holds is its own.
    assert stat.S_IMODE(project.stat().st_mode) == 0o755
    assert stat.S_IMODE(project.parent.stat().st_mode) == 0o755
    state = project / ".sense"
    modes = {
        str(path.relative_to(state)): stat.S_IMODE(path.lstat().st_mode)
        for path in [state, *state.rglob("*")]
    }
    assert {"logs/forkserver.log", "logs/2.log", "sense.db", "token"} <= modes.keys()
    wanted = {name: 0o700 if (state / name).is_dir() else 0o600 for name in modes}
    assert modes == wanted


def test_a_symbolic_link_planted_in_the_logs_is_refused(used_project, tmp_path):
    target = tmp_path / "precious"
    target.write_text("precious\n")
    (used_project / ".sense" / "logs" / "3.log").symlink_to(target)
    refused(used_project, "3.log is a symbolic link")
    assert target.read_text() == "precious\n"


def test_output_never_goes_through_a_link_planted_while_the_server_runs(api, server, tmp_path):
    target = tmp_path / "precious"
    target.write_text("precious\n")
    next_id = server.master["id"] + 1
    server.state.log_path(next_id).symlink_to(target)
    answer = api("POST", "/dashboards", json={"master_id": server.master["id"], "code": "1"})
    assert answer.status_code == 400
    assert f"dashboard {next_id} could not start" in answer.json()["error"]
    assert api.get(next_id)["status"] == "failed"
    assert target.read_text() == "precious\n"


def test_sense_server_refuses_a_token_another_user_planted_without_showing_it(project_dir):
    as_root()
    state = project_dir / ".sense"
    state.mkdir(mode=0o700)
    (state / "token").write_text(PLANTED_TOKEN + "\n")
    os.chown(state / "token", NOBODY, NOBODY)
    server = sense_command("server", cwd=project_dir)
    output, _ = server.communicate(timeout=30)
    assert server.returncode == 1
    assert output.startswith("sense: ") and output.count("\n") == 1, output
    assert f"belongs to user id {NOBODY}" in output
    assert PLANTED_TOKEN not in output
    assert not (state / "server.json").exists()


def test_sense_ps_refuses_state_another_user_owns(used_project):
    as_root()
    os.chown(used_project / ".sense", NOBODY, NOBODY)
    ps = sense_command("ps", cwd=used_project)
    output, _ = ps.communicate(timeout=30)
    assert ps.returncode == 1
    assert output.count("\n") == 1 and f"belongs to user id {NOBODY}" in output


@pytest.mark.parametrize("command", [["ps"], ["logs", "1"], ["stop", "2"]])
def test_ps_logs_stop_never_make_a_token(project_dir, command):
    server = sense_command("server", cwd=project_dir)
    try:
        dict(read_exports(server))
        token = project_dir / ".sense" / "token"
        token.unlink()
        client = sense_command(*command, cwd=project_dir)
        output, _ = client.communicate(timeout=30)
        assert client.returncode == 1
        assert "token is missing or empty" in output
        assert not token.exists()
    finally:
        server.terminate()
        server.communicate(timeout=30)
