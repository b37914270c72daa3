"""The Host check (issue 21, item 7): a page whose name was rebound to loopback reaches
nothing; the names the server answers as, and those ``--allow-host`` adds, work."""

from __future__ import annotations

import pytest
import requests
from conftest import sense_command, wait_for

from sense.local import LocalServer
from sense.local.hosts import HostNameError

pytestmark = pytest.mark.timeout(60)


def _port(server: LocalServer) -> str:
    return server.url.rsplit(":", 1)[1]


def test_a_request_by_another_name_is_refused_naming_the_option(api, server):
    host = f"evil.example:{_port(server)}"
    for path in ("/health", "/", "/web/static/page.js"):
        answer = requests.get(server.url + path, headers={"Host": host}, timeout=10)
        assert answer.status_code == 400, path
        assert "--allow-host" in answer.json()["error"]
    # A rebound page is its own origin: the same-origin check, reading Host, would pass it.
    launch = {"master_id": server.master["id"], "startup_code": "open('pwned', 'w')"}
    headers = {"Host": host, "Origin": f"http://{host}", "Sec-Fetch-Site": "same-origin"}
    refused = api("POST", "/dashboards", json=launch, headers=headers)
    assert refused.status_code == 400
    assert [d["id"] for d in api("GET", "/dashboards").json()] == [server.master["id"]]


def test_the_listen_address_and_localhost_are_served(api, server):
    for name in ("127.0.0.1", "localhost", "LOCALHOST"):
        headers = {"Host": f"{name}:{_port(server)}"}
        assert requests.get(f"{server.url}/health", headers=headers, timeout=10).ok, name
        assert api("GET", "", headers=headers).ok, name


def test_allow_hosts_adds_names_and_a_bad_one_is_refused_before_anything_is_made(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    for bad in ("http://sense.test", "sense.test:8000", "*.test", "", "a b"):
        with pytest.raises(HostNameError, match="--allow-host"):
            LocalServer(project, allow_hosts=[bad])
    assert not (project / ".sense").exists()
    with LocalServer(project, allow_hosts=["Sense.Test"], ssh_port=None) as server:
        headers = {"Host": f"sense.test:{_port(server)}"}
        assert requests.get(f"{server.url}/health", headers=headers, timeout=10).ok
        other = {"Host": f"other.test:{_port(server)}"}
        assert requests.get(f"{server.url}/health", headers=other, timeout=10).status_code == 400


def test_sense_server_takes_repeated_allow_host_options(project_dir):
    process = sense_command(
        "server",
        "--allow-host",
        "one.test",
        "--allow-host",
        "two.test",
        "--project-dir",
        str(project_dir),
        cwd=project_dir,
    )
    try:
        line = wait_for(lambda: (text := process.stdout.readline()).startswith("Local") and text)
        url = line.split(" at ")[-1].strip()
        for name in ("one.test", "two.test"):
            headers = {"Host": f"{name}:{url.rsplit(':', 1)[1]}"}
            assert requests.get(f"{url}/health", headers=headers, timeout=10).ok, name
    finally:
        process.terminate()
        process.communicate(timeout=30)
    refused = sense_command("server", "--allow-host", "x:1", cwd=project_dir)
    output = refused.communicate(timeout=30)[0]
    assert refused.returncode == 1 and "--allow-host 'x:1'" in output


@pytest.mark.parametrize(
    ("listen", "by_ip"),
    # Every address: reached by any IP address of the machine. IPv6: Host in brackets.
    [("0.0.0.0", "127.0.0.2"), ("::1", "[::1]")],
)
def test_a_server_on_another_address_answers_its_ip_addresses_and_no_name(tmp_path, listen, by_ip):
    project = tmp_path / "project"
    project.mkdir()
    try:
        server = LocalServer(project, host=listen, ssh_port=None)
    except OSError as error:  # no IPv6 here
        pytest.skip(f"cannot listen on {listen}: {error}")
    with server:
        url = server.url.replace("0.0.0.0", "127.0.0.1")
        port = url.rsplit(":", 1)[1]
        for host, status in ((f"{by_ip}:{port}", 200), (f"evil.example:{port}", 400)):
            answer = requests.get(f"{url}/health", headers={"Host": host}, timeout=10)
            assert answer.status_code == status, host
