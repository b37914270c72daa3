"""Installing packages into the running interpreter with pip, as a notebook needs it.

pip runs as ``sys.executable -m pip``, an argument list and never a shell,
its output copied line by line to this process's ``sys.stdout`` and
``sys.stderr`` (where a notebook cell shows it), and the new package is
importable at once: no restart.
"""

from __future__ import annotations

import collections
import importlib
import importlib.util
import os
import site
import subprocess
import sys
import sysconfig
import threading
from collections.abc import Iterable, Mapping
from typing import IO

from sense.errors import InstallError

#: How many of pip's last lines an InstallError carries.
TAIL_LINES = 20


def package_args(package_name: str | Iterable[str]) -> list[str]:
    """The requirement strings of ``package_name``, each checked not to be read as a pip option."""
    if isinstance(package_name, str):
        names = [package_name]
    elif isinstance(package_name, Iterable) and not isinstance(package_name, (bytes, Mapping)):
        names = list(package_name)
    else:
        raise ValueError(
            f"install() takes a package name (a str) or a list of them, not {package_name!r}"
        )
    if not names:
        raise ValueError("install() needs a package name")
    for name in names:
        if not isinstance(name, str):
            raise ValueError(f"a package name must be a string, not {name!r}")
        if not name.strip():
            raise ValueError("a package name must not be empty")
        if name.lstrip().startswith("-"):
            raise ValueError(
                f"package name {name!r} starts with '-', so pip would read it as an option; "
                "pass options through flags= or arguments="
            )
    return names


def option_args(flags: Iterable[str], arguments: Mapping[str, str]) -> list[str]:
    """pip's options, exactly as the original translated them.

    Examples
    --------
    >>> option_args(["U", "use-mirrors"], {"d": "./downloads", "mirrors": "http://URL"})
    ['-U', '--use-mirrors', '-d', './downloads', '--mirrors=http://URL']
    """
    if isinstance(flags, str):
        raise ValueError(f"flags must be a list of strings, such as [{flags!r}]")
    if not isinstance(flags, Iterable) or isinstance(flags, (bytes, Mapping)):
        raise ValueError(f"flags must be a list of strings, such as ['U'], not {flags!r}")
    if not isinstance(arguments, Mapping):
        raise ValueError(
            f"arguments must be a dict of str to str, such as {{'d': './dl'}}, not {arguments!r}"
        )
    argv = []
    for flag in flags:
        argv.append(_option(flag, "flag"))
    for key, value in arguments.items():
        option = _option(key, "argument")
        if not isinstance(value, str):
            raise ValueError(f"the value of argument {key!r} must be a string, not {value!r}")
        argv += [option, value] if len(key) == 1 else [f"{option}={value}"]
    return argv


def _option(name: str, kind: str) -> str:
    if not isinstance(name, str) or not name or name.startswith("-") or "=" in name:
        raise ValueError(
            f"pip {kind} {name!r} should be an option name without dashes, such as 'U' or "
            "'no-index'"
        )
    return f"-{name}" if len(name) == 1 else f"--{name}"


def user_install_allowed() -> bool:
    """Whether pip accepts ``--user`` here: not in a virtual environment, and user site enabled."""
    in_virtualenv = sys.prefix != sys.base_prefix
    return not in_virtualenv and bool(site.ENABLE_USER_SITE)


def pip_command(packages: list[str], options: list[str], user: bool) -> list[str]:
    """The argv that installs ``packages``: ``python -m pip install PACKAGE [--user] OPTIONS``."""
    return [
        sys.executable,
        "-m",
        "pip",
        "install",
        *packages,
        *(["--user"] if user else []),
        *options,
    ]


def run_pip(argv: list[str]) -> None:
    """Run pip, copying its output to this process's streams as it comes.

    Raises
    ------
    InstallError
        pip is missing, or exited with a non-zero status.
    """
    if importlib.util.find_spec("pip") is None:
        raise InstallError(
            f"pip is not installed for {sys.executable}; get it with "
            f"`{sys.executable} -m ensurepip --upgrade`"
        )
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    # Without this, pip's own output reaches the pipe in blocks, long after the fact.
    child_env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env,
        text=True,
        errors="replace",
    )
    # stderr is copied by a helper thread so that neither pipe can fill up and stall pip.
    err_copier = threading.Thread(
        target=_copy_lines, args=(process.stderr, sys.stderr, tail), daemon=True
    )
    err_copier.start()
    _copy_lines(process.stdout, sys.stdout, tail)
    err_copier.join()
    returncode = process.wait()
    if returncode != 0:
        output = "".join(tail)
        raise InstallError(
            f"pip exited with status {returncode}:\n{output}", returncode=returncode, output=output
        )


def _copy_lines(source: IO[str], destination: IO[str], tail: collections.deque[str]) -> None:
    for line in source:
        tail.append(line)
        destination.write(line)
        destination.flush()
    source.close()


def make_importable(user: bool) -> None:
    """Let this process import what pip just installed, without a restart."""
    target = site.getusersitepackages() if user else sysconfig.get_path("purelib")
    if os.path.isdir(target) and target not in sys.path:
        # A user site directory that did not exist at start-up is not on sys.path yet.
        site.addsitedir(target)
    importlib.invalidate_caches()


def install(
    package_name: str | Iterable[str],
    flags: Iterable[str] = (),
    arguments: Mapping[str, str] | None = None,
) -> None:
    """Install with pip into this interpreter; see :func:`sense.install`."""
    packages = package_args(package_name)
    options = option_args(flags, {} if arguments is None else arguments)
    user = user_install_allowed()
    run_pip(pip_command(packages, options, user))
    make_importable(user)
