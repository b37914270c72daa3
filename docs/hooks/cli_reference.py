"""MkDocs hook: the help of the ``sense`` command, from its own parser, into cli.md.

Where cli.md holds ``<!-- sense --help -->``, the page gets the help that
``sense --help`` and ``sense COMMAND --help`` print, so it lists every
subcommand and option and cannot drift from the command.

Example
-------
>>> "usage: sense run" in reference()        # doctest: +SKIP
True
"""

from __future__ import annotations

import argparse
import os

MARKER = "<!-- sense --help -->"
#: The width argparse wraps the help at (it reads COLUMNS), the same on every machine.
WIDTH = "100"


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Put the command's help where the page has the marker."""
    return markdown.replace(MARKER, reference()) if MARKER in markdown else markdown


def reference() -> str:
    """Markdown: the help of ``sense``, then a section per subcommand."""
    from sense.local.cli import _parser

    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        parser = _parser()
        sections = [_block(parser.format_help())]
        for name, command in _subcommands(parser).items():
            sections += [f"## `sense {name}`", _block(command.format_help())]
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved
    return "\n\n".join(sections)


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _block(text: str) -> str:
    return f"```text\n{text.rstrip()}\n```"
