"""Properties of install's translation, over generated names: never an option, never a shell."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sense
from sense import installer

# Anything a process argument can hold: no NUL, no lone surrogate.
argument_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40
)
shell_text = st.text(alphabet=";|&$`'\"<>(){}*?~!# \n\tab-=/", max_size=30)
option_name = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20
).filter(lambda name: not name.startswith("-"))


@given(names=st.lists(argument_text | shell_text, min_size=1, max_size=4))
def test_an_accepted_package_name_is_one_argument_that_pip_cannot_read_as_an_option(names):
    try:
        packages = installer.package_args(names)
    except ValueError:
        assert any(not name.strip() or name.lstrip().startswith("-") for name in names)
        return
    argv = installer.pip_command(packages, [], user=False)
    assert argv[4 : 4 + len(names)] == names
    assert not any(argument.lstrip().startswith("-") for argument in argv[4 : 4 + len(names)])


@given(
    flags=st.lists(option_name, max_size=3),
    arguments=st.dictionaries(option_name, argument_text, max_size=3),
)
def test_flags_and_arguments_become_options_and_values_never_new_options(flags, arguments):
    argv = installer.option_args(flags, arguments)
    expected = [f"-{f}" if len(f) == 1 else f"--{f}" for f in flags]
    for key, value in arguments.items():
        expected += [f"-{key}", value] if len(key) == 1 else [f"--{key}={value}"]
    assert argv == expected


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=shell_text.filter(lambda n: n.strip() and not n.lstrip().startswith("-")))
def test_shell_syntax_in_a_name_reaches_the_process_untouched(recording_python, name):
    recording_python.unlink(missing_ok=True)
    with pytest.raises(sense.InstallError):
        sense.install(name)
    assert json.loads(recording_python.read_text())[3] == name
