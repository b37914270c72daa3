"""sense.install with the real pip: wheels the tests build, no network, no shell."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
import venv
from pathlib import Path

import pytest
from wheels import build_wheel

import sense
from sense import installer

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def offline_pip(monkeypatch):
    """pip with no configuration of this machine's (no extra index, no find-links)."""
    for name in list(os.environ):
        if name.startswith("PIP_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    return monkeypatch


def run_in(python: str | Path, code: str, **env: str) -> subprocess.CompletedProcess:
    """Run ``code`` with another interpreter that imports this checkout's ``sense``."""
    child_env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **env}
    return subprocess.run(
        [str(python), "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=child_env,
        timeout=120,
    )


def test_a_wheel_installs_into_a_fresh_virtualenv_and_imports_in_the_same_process(
    tmp_path, offline_pip
):
    env_dir = tmp_path / "env"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    wheel = build_wheel(tmp_path, "sensedemo", source="ANSWER = 42\n")
    result = run_in(
        python,
        f"""
        import sense
        sense.install({str(wheel)!r}, flags=["no-index"])
        import sensedemo
        print("answer", sensedemo.ANSWER, sensedemo.__file__)
        """,
    )
    assert result.returncode == 0, result.stderr
    assert "Successfully installed sensedemo-1.0" in result.stdout
    answer_line = result.stdout.strip().splitlines()[-1]
    assert answer_line.startswith("answer 42 ")
    # In a virtual environment, into that environment (pip would refuse --user there).
    assert Path(answer_line.split()[-1]).is_relative_to(env_dir)


def test_outside_a_virtualenv_it_installs_for_the_user_and_imports_at_once(tmp_path, offline_pip):
    base_python = Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}"
    if not base_python.exists():
        pytest.skip("no base interpreter beside this virtual environment")
    purelib = Path(sysconfig.get_path("purelib", vars={"base": sys.base_prefix}))
    if (purelib.parent / "EXTERNALLY-MANAGED").exists():
        pytest.skip("the base interpreter is externally managed (PEP 668)")
    user_base = tmp_path / "userbase"  # does not exist yet: not on sys.path at start
    wheel = build_wheel(tmp_path, "sensedemo_user", source="WHERE = 'user site'\n")
    result = run_in(
        base_python,
        f"""
        import sense, sense.installer
        assert sense.installer.user_install_allowed()
        sense.install({str(wheel)!r}, flags=["no-index"])
        import sensedemo_user
        print(sensedemo_user.WHERE, sensedemo_user.__file__)
        """,
        PYTHONUSERBASE=str(user_base),
    )
    assert result.returncode == 0, result.stderr
    where, path = result.stdout.strip().splitlines()[-1].rsplit(" ", 1)
    assert where == "user site"
    assert Path(path).is_relative_to(user_base)


def test_a_missing_pip_says_how_to_get_it(tmp_path):
    env_dir = tmp_path / "nopip"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    result = run_in(
        env_dir / "bin" / "python",
        """
        import sense
        try:
            sense.install("anything")
        except sense.InstallError as error:
            print(repr(error.returncode), error)
        """,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("None pip is not installed for ")
    assert "-m ensurepip --upgrade" in result.stdout


def test_a_failing_install_raises_install_error_with_pips_exit_code_and_output(offline_pip, capfd):
    with pytest.raises(sense.InstallError) as raised:
        sense.install("sense-no-such-package-4e1d", flags=["no-index"])
    error = raised.value
    assert error.returncode == 1
    assert "No matching distribution found for sense-no-such-package-4e1d" in error.output
    assert "exited with status 1" in str(error)
    # pip's own words reached this process's stderr too, as a notebook cell would show them.
    assert "No matching distribution" in capfd.readouterr().err


def test_a_shell_command_in_a_package_name_runs_nothing(tmp_path, offline_pip, monkeypatch):
    marker = tmp_path / "F"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(sense.InstallError):
        sense.install(f"x; touch {marker}", flags=["no-index"])
    assert not marker.exists()


def test_the_package_name_reaches_pip_as_one_argument(recording_python):
    with pytest.raises(sense.InstallError) as raised:
        sense.install("x; rm -rf ~", flags=["U", "use-mirrors"], arguments={"d": "./dl"})
    assert raised.value.returncode == 3
    argv = json.loads(recording_python.read_text())
    user = ["--user"] if installer.user_install_allowed() else []
    assert argv == [
        "-m",
        "pip",
        "install",
        "x; rm -rf ~",
        *user,
        "-U",
        "--use-mirrors",
        "-d",
        "./dl",
    ]


def test_a_list_of_packages_goes_to_one_pip_run(recording_python):
    with pytest.raises(sense.InstallError):
        sense.install(["alpha>=1", "beta"])
    assert json.loads(recording_python.read_text())[3:5] == ["alpha>=1", "beta"]


@pytest.mark.parametrize(
    "name", ["", "   ", "-r", "--index-url=http://evil.example", " -e .", [], ["ok", "-e."], [7]]
)
def test_a_package_name_pip_would_read_as_an_option_is_refused_before_pip_runs(
    recording_python, name
):
    with pytest.raises(ValueError):
        sense.install(name)
    assert not recording_python.exists()


@pytest.mark.parametrize(
    ("flags", "arguments"),
    [("U", {}), (["-U"], {}), ([""], {}), ([None], {}), ([], {"index-url": 5}), ([], {"a=b": "c"})],
)
def test_malformed_flags_and_arguments_are_refused_before_pip_runs(
    recording_python, flags, arguments
):
    with pytest.raises(ValueError):
        sense.install("ok", flags=flags, arguments=arguments)
    assert not recording_python.exists()


def test_flags_and_arguments_translate_exactly_as_the_seed_describes():
    assert installer.option_args(
        ["U", "use-mirrors"], {"d": "./downloads", "mirrors": "http://URL"}
    ) == ["-U", "--use-mirrors", "-d", "./downloads", "--mirrors=http://URL"]


def test_user_install_is_not_used_inside_a_virtualenv():
    in_virtualenv = sys.prefix != sys.base_prefix
    if not in_virtualenv:
        pytest.skip("the test suite is not running in a virtual environment")
    assert installer.user_install_allowed() is False
    assert "--user" not in installer.pip_command(["x"], [], installer.user_install_allowed())


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: sense.install(None), "a package name \\(a str\\) or a list of them, not None"),
        (lambda: sense.install(b"six"), "a package name \\(a str\\) or a list of them, not b'six'"),
        (lambda: sense.install([b"six"]), "must be a string, not b'six'"),
        (lambda: sense.install("six", flags=None), "flags must be a list of strings"),
        (lambda: sense.install("six", flags=b"U"), "flags must be a list of strings"),
        (lambda: sense.install("six", arguments=["d"]), "arguments must be a dict"),
    ],
    ids=["None", "bytes", "list of bytes", "flags None", "flags bytes", "arguments list"],
)
def test_arguments_of_the_wrong_kind_say_what_is_expected_before_pip_runs(
    recording_python, call, message
):
    with pytest.raises(ValueError, match=message):
        call()
    assert not recording_python.exists()
