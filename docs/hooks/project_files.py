"""MkDocs hook: files of the project that the pages show, kept where the project keeps them.

benchmarks.md includes ``benchmarks/RESULTS.md``, whose chart sits beside it; the
chart is added to the site under the name that page links it by.

Example
-------
>>> sorted(SHOWN)
['cluster_startup.png']
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

#: Name in the site -> the project's file, relative to mkdocs.yml.
SHOWN = {"cluster_startup.png": "benchmarks/cluster_startup.png"}


def on_files(files, config):
    """Add each of :data:`SHOWN` to the site's files."""
    root = Path(config.config_file_path).parent
    for name, source in SHOWN.items():
        files.append(File.generated(config, name, abs_src_path=str(root / source)))
    return files
