"""The client that users of 2014 installed: ``sense`` 0.1.2 from PyPI, run on Python 3.

It is Python 2 code, but its module compiles on Python 3; it only imports two
packages of Python 2 days, which the shims below stand in for: ``futures``
(the backport of ``concurrent.futures``) and ``simplejson`` (``json``).

Example
-------
>>> legacy = load_published_client(tmp_path)   # doctest: +SKIP
>>> legacy.network_info()["public_port_mapping"]["22"]  # doctest: +SKIP
'41234'
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import json
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType

from needs import require

VERSION = "0.1.2"
SHIMS = {"futures": concurrent.futures, "simplejson": json}


def load_published_client(directory: Path, version: str = VERSION) -> ModuleType:
    """Download ``sense==version``'s source from PyPI into ``directory`` and import its module.

    Skips the calling test (fails it under CI) when PyPI cannot be reached.
    """
    download = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"),
            *("--quiet", "--dest", str(directory), f"sense=={version}"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    last_line = (download.stderr.strip().splitlines() or ["no output"])[-1]
    require(download.returncode == 0, f"sense {version} could not be downloaded: {last_line}")
    name = f"sense_{version.replace('.', '_')}"
    path = directory / f"{name}.py"
    with tarfile.open(directory / f"sense-{version}.tar.gz") as archive:
        path.write_bytes(archive.extractfile(f"sense-{version}/sense.py").read())
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    # Only for the import: the module keeps what it imported under its own names.
    shims = {name: shim for name, shim in SHIMS.items() if name not in sys.modules}
    sys.modules.update(shims)
    try:
        spec.loader.exec_module(module)
    finally:
        for name in shims:
            del sys.modules[name]
    return module
