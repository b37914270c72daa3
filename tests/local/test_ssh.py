"""SSH into a dashboard, with real clients: OpenSSH's ``ssh`` and ``scp`` (through ``sshpass``)
and paramiko for the terminal. The password always travels in ``SSHPASS``, never on a
command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import shutil
import socket
import stat
import subprocess
from pathlib import Path

import psutil
import pytest
from conftest import read_exports, sense_command, wait_for
from legacy_client import load_published_client
from needs import require
from test_local_abuse import listening_addresses
from waiting import left_running, strays

import sense
from sense.errors import SenseError
from sense.local import LocalServer
from sense.local.sshd.throttle import LoginThrottle

pytestmark = pytest.mark.timeout(90)

SSHPASS_WRONG_PASSWORD = 5  # sshpass's exit status when the server asks for the password again
REAPER = "reaper.py"
# Two sleeps, each pid printed: one that left the session and the process group and whose
# parent ended (a double fork, as daemons do), and one in the foreground.
TWO_SLEEPS = "(setsid sleep 1000 </dev/null >/dev/null 2>&1 & echo $!); echo $$; exec sleep 1000"


@pytest.fixture(autouse=True)
def no_ssh_strays(tmp_path):
    """Fail a test that leaves a process of an SSH session behind (after 30 s: the machine
    may be busy)."""
    yield
    session = [
        process
        for process in psutil.process_iter(["cmdline", "cwd"])
        if (process.info["cwd"] or "").startswith(str(tmp_path))
        and any(REAPER in part or "sleep" in part for part in process.info["cmdline"] or [])
    ]
    alive = strays(session, timeout=30)
    assert not alive, f"SSH session processes left running: {[p.pid for p in alive]}"


class Ssh:
    """OpenSSH aimed at one SSH server, logging in as ``sense`` with ``password``."""

    def __init__(self, port: int | str, password: str, known_hosts, *options: str) -> None:
        for program in ("ssh", "scp", "sshpass"):
            require(shutil.which(program) is not None, f"{program} is not installed (see .ci/run)")
        self.port = str(port)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SENSE_")}
        self.env["SSHPASS"] = password
        self.options = [
            "-F",
            os.devnull,
            "-o",
            f"UserKnownHostsFile={known_hosts}",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "PreferredAuthentications=password",
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "ConnectTimeout=10",
            *options,
        ]

    def command(self, *remote: str, user: str = "sense") -> list[str]:
        return [
            "sshpass",
            "-e",
            "ssh",
            *self.options,
            "-p",
            self.port,
            f"{user}@127.0.0.1",
            *remote,
        ]

    def run(self, *remote: str, user: str = "sense", **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("input", "")
        return subprocess.run(
            self.command(*remote, user=user),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
            **kwargs,
        )

    def popen(self, *remote: str) -> subprocess.Popen:
        return subprocess.Popen(
            self.command(*remote),
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def scp(self, source: str, target: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["sshpass", "-e", "scp", *self.options, "-P", self.port, source, target],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
        )


def end_with_children(process: subprocess.Popen) -> None:
    """Kill ``process`` (sshpass) and what it started (ssh), if they still run."""
    with contextlib.suppress(psutil.NoSuchProcess):
        for child in psutil.Process(process.pid).children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
    process.kill()
    process.wait()


def ssh_port(server: LocalServer) -> int:
    return int(server.master_environment()["SENSE_SSH_PORT_PUBLIC"])


def master_ssh(server: LocalServer, tmp_path, *options: str) -> Ssh:
    """OpenSSH logging in to ``server``'s master with the password of its environment."""
    env = server.master_environment()
    known_hosts = tmp_path / "known_hosts"
    return Ssh(env["SENSE_SSH_PORT_PUBLIC"], env["SENSE_SSH_PASSWORD"], known_hosts, *options)


def worker_ssh(server, api, tmp_path, startup_code="", **launch) -> tuple[dict, Ssh]:
    """A worker, and OpenSSH logging in to it with the password it finds in its environment.

    The worker hands its password over in a file, as its own code could (the environment of
    a forked process, as the system shows it, is the prestarted engine's).
    """
    hand_over = (
        "import os\n"
        "with open('password-' + os.environ['SENSE_DASHBOARD_ID'], 'w') as file:\n"
        "    file.write(os.environ['SENSE_SSH_PASSWORD'])\n"
    )
    idle = "import time\nwhile True:\n    time.sleep(60)\n"
    worker = api.launch(startup_code=hand_over + (startup_code or idle), **launch)
    api.wait_status(worker["id"], "running")
    handed_over = Path(server.project_dir) / f"password-{worker['id']}"
    password = wait_for(lambda: handed_over.exists() and handed_over.read_text())
    return worker, Ssh(ssh_port(server), password, tmp_path / "known_hosts")


def test_a_command_runs_in_the_worker_s_project_with_its_environment(
    server, api, project_dir, tmp_path
):
    worker, ssh = worker_ssh(server, api, tmp_path, env={"GREETING": "hello"})
    done = ssh.run(
        'echo "$SENSE_DASHBOARD_ID $SENSE_MASTER_ID $GREETING"; pwd; cat; exit 3',
        input="from stdin\n",
    )
    assert done.stdout == (
        f"{worker['id']} {server.master['id']} hello\n{project_dir}\nfrom stdin\n"
    ), done.stderr
    assert done.returncode == 3


def test_network_info_gives_the_port_and_password_that_log_into_this_dashboard(
    local_master, tmp_path
):
    info = sense.networkInfo()
    port = info["public_port_mapping"][22]
    assert type(port) is int
    ssh = Ssh(port, info["ssh_password"], tmp_path / "known_hosts")
    assert ssh.run("echo $SENSE_DASHBOARD_ID").stdout == f"{local_master.master['id']}\n"


def test_an_interactive_shell_has_a_terminal_that_follows_window_resizes(server, tmp_path):
    require(importlib.util.find_spec("paramiko") is not None, "paramiko is not installed")
    import paramiko

    env = server.master_environment()
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect(
        "127.0.0.1",
        int(env["SENSE_SSH_PORT_PUBLIC"]),
        username="sense",
        password=env["SENSE_SSH_PASSWORD"],
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
    )
    try:
        shell = client.invoke_shell(term="xterm", width=80, height=24)
        shell.settimeout(10)
        output = b""

        def read_until(text: bytes) -> None:
            nonlocal output
            while text not in output:
                output += shell.recv(4096)

        shell.send(b"stty size\n")
        read_until(b"24 80")
        shell.resize_pty(width=132, height=40)
        shell.send(b"stty size\n")
        read_until(b"40 132")
        shell.send(b"tty; echo id=$SENSE_DASHBOARD_ID; exit\n")
        read_until(f"id={server.master['id']}".encode())
        assert b"/dev/pts/" in output
        assert shell.recv_exit_status() == 0
    finally:
        client.close()


def test_scp_copies_files_into_the_project_and_back(server, project_dir, tmp_path):
    ssh = master_ssh(server, tmp_path)
    sent = tmp_path / "data.csv"
    sent.write_text("a,b\n1,2\n")
    copied = ssh.scp(str(sent), "sense@127.0.0.1:data.csv")
    assert copied.returncode == 0, copied.stderr
    assert (project_dir / "data.csv").read_text() == "a,b\n1,2\n"
    back = ssh.scp(f"sense@127.0.0.1:{project_dir}/data.csv", str(tmp_path / "back.csv"))
    assert back.returncode == 0, back.stderr
    assert (tmp_path / "back.csv").read_text() == "a,b\n1,2\n"


def test_a_wrong_password_another_user_and_an_ended_dashboard_s_password_are_refused(
    server, api, tmp_path
):
    worker, ssh = worker_ssh(server, api, tmp_path)
    assert ssh.run("true").returncode == 0
    assert ssh.run("true", user="root").returncode == SSHPASS_WRONG_PASSWORD
    wrong = Ssh(ssh.port, "not-the-password", tmp_path / "known_hosts").run("true")
    assert wrong.returncode == SSHPASS_WRONG_PASSWORD
    assert "Permission denied" in wrong.stderr
    api("PATCH", f"/dashboards/{worker['id']}", json={"status": "stopped"})
    assert ssh.run("true").returncode == SSHPASS_WRONG_PASSWORD


def test_stopping_a_dashboard_ends_what_runs_over_ssh_and_closes_the_session(server, api, tmp_path):
    worker, ssh = worker_ssh(server, api, tmp_path)
    with ssh.popen(TWO_SLEEPS) as session:
        escaped, foreground = (psutil.Process(int(session.stdout.readline())) for _ in range(2))
        api("PATCH", f"/dashboards/{worker['id']}", json={"status": "stopped"})
        alive = left_running([escaped, foreground], timeout=5)
        assert not alive
        assert session.wait(timeout=10) != 0
        assert f"dashboard {worker['id']} has ended" in session.stderr.read()


def test_sigkill_of_the_server_ends_what_runs_over_ssh(project_dir, tmp_path):
    served = sense_command("server", cwd=project_dir)
    try:
        exports = dict(read_exports(served))
        ssh = Ssh(
            exports["SENSE_SSH_PORT_PUBLIC"],
            exports["SENSE_SSH_PASSWORD"],
            tmp_path / "known_hosts",
        )
        with ssh.popen(TWO_SLEEPS) as session:
            sleeps = [psutil.Process(int(session.stdout.readline())) for _ in range(2)]
            served.kill()
            alive = left_running(sleeps, timeout=5)
            assert not alive
            session.wait(timeout=10)
    finally:
        served.kill()
        served.wait()
        served.stdout.close()


def test_the_host_key_is_kept_so_known_hosts_stays_valid_across_restarts(tmp_path):
    first, other = tmp_path / "first", tmp_path / "other"
    first.mkdir()
    other.mkdir()
    # The alias names the server in known_hosts whatever port it gets.
    alias = ("-o", "HostKeyAlias=my-project")
    with LocalServer(first, ssh_port=0) as server:
        server.attach(set_environ=False)
        learned = master_ssh(server, tmp_path, *alias, "-o", "StrictHostKeyChecking=accept-new")
        assert learned.run("true").returncode == 0
    key = first / ".sense" / "ssh_host_key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    for project, expected in ((first, 0), (other, 255)):
        with LocalServer(project) as server:
            server.attach(set_environ=False)
            strict = master_ssh(server, tmp_path, *alias, "-o", "StrictHostKeyChecking=yes")
            checked = strict.run("true")
            assert checked.returncode == expected, checked.stderr
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in checked.stderr


@pytest.mark.parametrize("planted", ["a link", "readable by others"])
def test_a_host_key_that_cannot_be_trusted_stops_the_server_before_it_starts(
    project_dir, tmp_path, planted
):
    state = project_dir / ".sense"
    state.mkdir(mode=0o700)
    key = state / "ssh_host_key"
    if planted == "a link":
        target = tmp_path / "elsewhere"
        target.write_text("not yours\n")
        key.symlink_to(target)
    else:
        key.write_text("a key\n")
        key.chmod(0o644)
    # Refused by the check of the whole state folder, or by the host key's own.
    with pytest.raises(SenseError, match="ssh_host_key"):
        LocalServer(project_dir)
    assert not (state / "server.json").exists()
    if planted == "a link":
        assert target.read_text() == "not yours\n"
    key.unlink()
    with LocalServer(project_dir):  # nothing was left held
        pass


def test_the_ssh_port_listens_where_the_api_listens(server):
    assert listening_addresses(os.getpid(), ssh_port(server)) == ["127.0.0.1"]


def test_the_password_is_in_no_answer_of_the_rest_api_and_no_repr(server, api, tmp_path):
    worker, ssh = worker_ssh(
        server, api, tmp_path, startup_code="import time\nprint('working')\ntime.sleep(600)"
    )
    passwords = [ssh.env["SSHPASS"], server.master_environment()["SENSE_SSH_PASSWORD"]]
    answers = [
        api("GET", "").text,
        api("GET", "/dashboards").text,
        api("GET", f"/dashboards/{worker['id']}").text,
        api("GET", f"/dashboards/{server.master['id']}/workers").text,
        api("GET", f"/dashboards/{worker['id']}/logs").text,
        repr(server),
        repr(server.project.info),
    ]
    for password in passwords:
        assert not [answer for answer in answers if password in answer]


def test_without_ssh_the_variables_are_absent_and_network_info_still_works(
    project_dir, monkeypatch
):
    with LocalServer(project_dir, ssh_port=None) as server:
        server.attach(set_environ=False)
        environment = server.master_environment()
    assert not [name for name in environment if "SSH" in name]
    assert not (project_dir / ".sense" / "ssh_host_key").exists()
    for name in list(os.environ):
        if name.startswith("SENSE_"):
            monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    info = sense.networkInfo()
    assert 22 not in info["public_port_mapping"]
    assert info["ssh_password"] is None


def test_the_published_0_1_2_client_reads_the_ssh_endpoint_that_logs_in(local_master, tmp_path):
    legacy = load_published_client(tmp_path)
    info = legacy.network_info()
    # 0.1.2 put the SSH entry in as strings, as the platform's users knew it.
    assert info["public_port_mapping"]["22"] == os.environ["SENSE_PUBLIC_SSH_PORT"]
    ssh = Ssh(info["public_port_mapping"]["22"], info["ssh_password"], tmp_path / "known_hosts")
    assert ssh.run("echo $SENSE_DASHBOARD_ID").stdout == f"{local_master.master['id']}\n"


# -- the back-off after failed logins ------------------------------------------------------------

ANY_RATE = float("inf")  # no cap over all sources: one source's back-off alone


def waits_of(*attempts: tuple[str, bool] | float, **throttle) -> list[float]:
    """The waits a throttle imposes on ``attempts`` (address, right password?), in order, on a
    clock of its own that the waits advance; a number among them is seconds that pass."""
    now, waits = [0.0], []

    async def record(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    async def attempt_all() -> None:
        throttled = LoginThrottle(sleep=record, clock=lambda: now[0], **throttle)
        for attempt in attempts:
            if isinstance(attempt, float):
                now[0] += attempt
                continue
            address, right = attempt
            assert await throttled.attempt(address, lambda right=right: right) is right

    asyncio.run(attempt_all())
    return waits


def test_failed_logins_from_one_address_are_answered_ever_more_slowly():
    assert waits_of(*[("192.0.2.1", False)] * 8, rate=ANY_RATE) == [0, 0, 0, 1, 2, 4, 8, 10]


def test_another_address_is_not_slowed_and_a_success_does_not_start_afresh():
    guesses = [("192.0.2.1", False)] * 4
    assert waits_of(*guesses, ("192.0.2.2", False), rate=ANY_RATE) == [0, 0, 0, 1, 0]
    right_then_wrong = [("192.0.2.1", True), ("192.0.2.1", False)]
    assert waits_of(*guesses, *right_then_wrong, rate=ANY_RATE) == [0, 0, 0, 1, 2]


def test_failed_logins_are_forgiven_after_a_quiet_while():
    guesses = [("192.0.2.1", False)] * 5
    assert waits_of(*guesses, 601.0, *guesses, rate=ANY_RATE) == [0, 0, 0, 1, 2] * 2


def test_every_loopback_address_counts_as_one_source():
    loopback = ["127.0.0.1", "127.0.0.5", "127.1.2.3", "::1", "::ffff:127.0.0.9"]
    guesses = [(address, False) for address in loopback * 2]
    assert waits_of(*guesses[:8], rate=ANY_RATE) == [0, 0, 0, 1, 2, 4, 8, 10]


def test_an_ipv6_address_counts_by_its_64_block():
    block = [("2001:db8::1", False), ("2001:db8::2:3", False), ("2001:db8::ffff", False)]
    other = ("2001:db8:0:1::1", False)
    assert waits_of(*block, *block, other, rate=ANY_RATE) == [0, 0, 0, 1, 2, 4, 0]


def test_failures_from_all_sources_together_are_answered_two_a_second_at_most():
    guesses = [(f"192.0.2.{host}", False) for host in range(1, 6)]
    assert waits_of(*guesses) == [0, 0.5, 0.5, 0.5, 0.5]
    assert waits_of(*guesses[:1], 10.0, *guesses[1:2]) == [0, 0]


def test_a_right_password_is_answered_at_once_while_wrong_ones_wait(server, tmp_path):
    right = master_ssh(server, tmp_path)
    wrong = Ssh(right.port, "not-the-password", tmp_path / "known_hosts", "-v")
    logs = [tmp_path / f"wrong-{n}.log" for n in range(15)]
    guesses = []
    try:
        for log in logs:
            with log.open("w") as stderr:
                guesses.append(
                    subprocess.Popen(
                        wrong.command("true"),
                        env=wrong.env,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=stderr,
                    )
                )

        def all_sent() -> bool:
            return all("Next authentication method: password" in log.read_text() for log in logs)

        wait_for(all_sent, 60, what="15 wrong passwords to be sent")
        # Answered within Ssh.run's 30 s: before, it waited behind the 15 (some 95 s).
        assert right.run("echo in").stdout == "in\n"
        assert [guess.poll() for guess in guesses].count(None) > 0  # some still wait
    finally:
        for guess in guesses:
            end_with_children(guess)


def test_a_second_server_cannot_take_the_ssh_port_of_the_first(server, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    port = ssh_port(server)
    with pytest.raises(OSError, match=f"SSH port 127.0.0.1:{port}"):
        LocalServer(other, ssh_port=port)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        assert sock.recv(4).startswith(b"SSH-")
