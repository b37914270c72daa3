"""networkInfo, getAuth and the dashboard context, read from the environment in both spellings."""

from __future__ import annotations

import re

import pytest

import sense

SEED_SPELLING = {
    "SENSE_DNS_PUBLIC": "dash-7.senseplatform.com",
    "SENSE_PORT1": "3000",
    "SENSE_PORT1_PUBLIC": "49153",
    "SENSE_PORT2": "8888",
    "SENSE_PORT2_PUBLIC": "49154",
    "SENSE_SSH_PORT_PUBLIC": "49155",
    "SENSE_SSH_PASSWORD": "hunter2",
    "SENSE_PROJECT_IP": "10.0.3.7",
}
LATER_SPELLING = {
    "SENSE_PUBLIC_DNS": "dash-7.senseplatform.com",
    "SENSE_PORT1": "3000",
    "SENSE_PUBLIC_PORT1": "49153",
    "SENSE_PORT2": "8888",
    "SENSE_PUBLIC_PORT2": "49154",
    "SENSE_PUBLIC_SSH_PORT": "49155",
    "SENSE_SSH_PASSWORD": "hunter2",
    "SENSE_PROJECT_IP": "10.0.3.7",
}
EXPECTED_INFO = {
    "public_dns": "dash-7.senseplatform.com",
    "public_port_mapping": {3000: 49153, 8888: 49154, 22: 49155},
    "ssh_password": "hunter2",
    "project_ip": "10.0.3.7",
}


@pytest.mark.parametrize("variables", [SEED_SPELLING, LATER_SPELLING], ids=["seed", "later"])
def test_network_info_reads_either_generation_of_variables(clean_env, variables):
    for name, value in variables.items():
        clean_env.setenv(name, value)
    assert sense.networkInfo() == EXPECTED_INFO
    assert sense.network_info() == EXPECTED_INFO


def test_port_mapping_keys_and_values_are_ints_the_ssh_entry_too(clean_env):
    for name, value in SEED_SPELLING.items():
        clean_env.setenv(name, value)
    mapping = sense.networkInfo()["public_port_mapping"]
    assert all(type(k) is int and type(v) is int for k, v in mapping.items())
    assert mapping[22] == 49155


def test_without_ssh_variables_there_is_no_port_22_and_no_password(clean_env):
    clean_env.setenv("SENSE_PROJECT_IP", "127.0.1.4")
    clean_env.setenv("SENSE_PUBLIC_DNS", "localhost")
    clean_env.setenv("SENSE_PORT1", "8080")
    clean_env.setenv("SENSE_PUBLIC_PORT1", "8080")
    assert sense.networkInfo() == {
        "public_dns": "localhost",
        "public_port_mapping": {8080: 8080},
        "ssh_password": None,
        "project_ip": "127.0.1.4",
    }


def test_network_info_off_a_dashboard_names_the_project_ip_and_how_to_run_locally(clean_env):
    with pytest.raises(sense.SenseConfigError) as raised:
        sense.networkInfo()
    assert "SENSE_PROJECT_IP" in str(raised.value)
    assert "sense.local.start()" in str(raised.value)
    assert "sense run" in str(raised.value)
    assert isinstance(raised.value, RuntimeError)  # what the original raised


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SENSE_PORT1", "http"),
        ("SENSE_PORT1_PUBLIC", "4915x"),
        ("SENSE_SSH_PORT_PUBLIC", "2 2"),
        # Numbers that int() would take, but that are no port, or not written as one.
        *[("SENSE_PORT2_PUBLIC", v) for v in ("0x50", "+80", " 80", "8_0", "٨٠", "-1")],
        *[("SENSE_PORT2", v) for v in ("0", "65536", "99999")],
    ],
)
def test_a_port_that_is_not_decimal_from_1_to_65535_is_named_with_its_value(clean_env, name, value):
    for key, val in SEED_SPELLING.items():
        clean_env.setenv(key, val)
    clean_env.setenv(name, value)
    with pytest.raises(
        sense.SenseConfigError,
        match=f"{name} should be a port number, not {re.escape(repr(value))}",
    ):
        sense.networkInfo()


def test_an_empty_ssh_port_variable_counts_as_unset(clean_env):
    for key, val in SEED_SPELLING.items():
        clean_env.setenv(key, val)
    clean_env.setenv("SENSE_SSH_PORT_PUBLIC", "")
    assert sense.networkInfo()["public_port_mapping"] == {3000: 49153, 8888: 49154}


def test_a_private_port_without_its_public_port_names_both_spellings(clean_env):
    clean_env.setenv("SENSE_PROJECT_IP", "10.0.3.7")
    clean_env.setenv("SENSE_PUBLIC_DNS", "localhost")
    clean_env.setenv("SENSE_PORT1", "3000")
    with pytest.raises(sense.SenseConfigError, match="SENSE_PORT1_PUBLIC or SENSE_PUBLIC_PORT1"):
        sense.networkInfo()


def test_a_missing_public_dns_is_named(clean_env):
    clean_env.setenv("SENSE_PROJECT_IP", "10.0.3.7")
    with pytest.raises(sense.SenseConfigError, match="SENSE_DNS_PUBLIC or SENSE_PUBLIC_DNS"):
        sense.networkInfo()


@pytest.mark.parametrize("name", ["SENSE_API_TOKEN", "SENSE_API_KEY"])
def test_get_auth_gives_the_token_with_an_empty_password(clean_env, name):
    clean_env.setenv(name, "tok-1")
    clean_env.setenv("SENSE_USERNAME", "alice")
    clean_env.setenv("SENSE_PASSWORD", "secret")
    assert sense.getAuth() == {"user": "tok-1", "pass": ""}
    assert sense.get_auth() == {"user": "tok-1", "pass": ""}


def test_get_auth_without_a_token_gives_username_and_password(clean_env):
    clean_env.setenv("SENSE_USERNAME", "alice")
    clean_env.setenv("SENSE_PASSWORD", "secret")
    assert sense.getAuth() == {"user": "alice", "pass": "secret"}


def test_get_auth_without_credentials_names_the_variables_to_set(clean_env):
    clean_env.setenv("SENSE_USERNAME", "alice")  # a username alone is not enough
    with pytest.raises(sense.SenseConfigError) as raised:
        sense.getAuth()
    message = str(raised.value)
    for name in ("SENSE_API_TOKEN", "SENSE_API_KEY", "SENSE_USERNAME", "SENSE_PASSWORD"):
        assert name in message


@pytest.mark.parametrize("missing", ["SENSE_OWNER_ID", "SENSE_PROJECT_ID", "SENSE_DASHBOARD_ID"])
def test_a_rest_call_without_its_context_names_the_missing_variable(
    master_env, httpserver, missing
):
    master_env.delenv(missing)
    with pytest.raises(sense.SenseConfigError, match=missing):
        sense.getWorkers()
    assert httpserver.log == []


def test_nothing_is_sent_without_credentials(master_env, httpserver):
    master_env.delenv("SENSE_API_TOKEN")
    with pytest.raises(sense.SenseConfigError, match="SENSE_API_TOKEN"):
        sense.launchWorkers(2)
    assert httpserver.log == []


def test_the_highest_port_is_a_port(clean_env):
    for key, val in SEED_SPELLING.items():
        clean_env.setenv(key, val)
    clean_env.setenv("SENSE_PORT1_PUBLIC", "65535")
    assert sense.networkInfo()["public_port_mapping"][3000] == 65535


@pytest.mark.parametrize("name", ["SENSE_API_URL", "SENSE_PROJECT_URL"])
@pytest.mark.parametrize(
    "value",
    ["localhost", "127.0.0.1:8000", "ftp://x", ":99999", "http://[::1", "http://h:0", "http://:80"],
)
def test_a_malformed_api_address_is_a_config_error_naming_the_variable(
    master_env, httpserver, name, value
):
    master_env.setenv(name, value)
    with pytest.raises(sense.SenseConfigError, match=f"^{name} is {re.escape(repr(value))}"):
        sense.getWorkers()
    assert httpserver.log == []


def test_a_malformed_api_address_is_shown_without_its_credentials(master_env):
    master_env.setenv("SENSE_API_URL", "ftp://alice:pw-5@example.com")
    with pytest.raises(sense.SenseConfigError) as raised:
        sense.getWorkers()
    assert "pw-5" not in str(raised.value)
    assert "'ftp://example.com'" in str(raised.value)
