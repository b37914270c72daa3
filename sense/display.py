"""How dashboards look where people read them: a table in a notebook, progress while waiting.

Lists of dashboards stay plain lists of plain dicts: instead of wrapping
them, an HTML formatter for ``list`` and ``dict`` is registered with the
running IPython, and it declines (returns None) for anything that is not
dashboards. IPython is never imported here; it is used only when the
process already runs it.
"""

from __future__ import annotations

import html
import sys
import time
from typing import Any, TextIO

#: The columns of the dashboard table.
COLUMNS = ("id", "status", "size", "project_ip", "started_at")
_DASHBOARD_KEYS = frozenset({"id", "status", "master_id"})


def _is_dashboard(value: Any) -> bool:
    return isinstance(value, dict) and value.keys() >= _DASHBOARD_KEYS


def dashboards_html(value: Any) -> str | None:
    """An HTML table of a dashboard or a list of dashboards; None for anything else.

    Examples
    --------
    >>> dashboards_html([{"id": 7, "status": "running", "master_id": 3}])[:7]
    '<table>'
    >>> dashboards_html([1, 2]) is None
    True
    """
    if _is_dashboard(value):
        rows = [value]
    elif isinstance(value, list) and value and all(_is_dashboard(item) for item in value):
        rows = value
    else:
        return None
    header = "".join(f"<th>{name}</th>" for name in COLUMNS)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape(_cell(row.get(name)))}</td>" for name in COLUMNS)
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def _running_shell():
    """The IPython shell this process runs, if any, without importing IPython."""
    ipython = sys.modules.get("IPython")
    return ipython.get_ipython() if ipython is not None else None


def register_html_formatter() -> None:
    """Show dashboards as tables in the running IPython; nothing happens outside IPython."""
    shell = _running_shell()
    if shell is None:
        return
    formatter = shell.display_formatter.formatters["text/html"]
    for kind in (list, dict):
        previous = formatter.for_type(kind)
        if getattr(previous, "__module__", None) == __name__:
            continue  # registered already (sense was reloaded)

        def format_html(value, previous=previous):
            table = dashboards_html(value)
            if table is None and previous is not None:
                return previous(value)
            return table

        formatter.for_type(kind, format_html)


class Progress:
    """A one-line progress report that rewrites itself: in place in a notebook, on a terminal.

    Silent where neither (a log file, a pipe), so that logs do not fill up.

    Examples
    --------
    >>> progress = Progress("running", total=4, stream=io.StringIO())  # doctest: +SKIP
    >>> progress.update(reached=2, failed=0)  # doctest: +SKIP
    """

    def __init__(self, goal: str, total: int, stream: TextIO | None = None) -> None:
        self.goal = goal
        self.total = total
        self.started = time.monotonic()
        self.stream = sys.stderr if stream is None else stream
        self.handle = None
        self.on_terminal = False
        shell = _running_shell()
        if shell is not None and hasattr(shell, "kernel"):
            from IPython.display import display  # already loaded: the kernel runs it

            self.handle = display({"text/plain": self._line(0, 0)}, raw=True, display_id=True)
        else:
            self.on_terminal = _isatty(self.stream)

    def _line(self, reached: int, failed: int) -> str:
        waited = time.monotonic() - self.started
        line = f"awaiting workers: {reached} of {self.total} {self.goal}"
        if failed:
            line += f", {failed} failed"
        return f"{line} ({waited:.1f} s)"

    def update(self, reached: int, failed: int) -> None:
        line = self._line(reached, failed)
        if self.handle is not None:
            self.handle.update({"text/plain": line}, raw=True)
        elif self.on_terminal:
            self.stream.write("\r" + line)
            self.stream.flush()

    def close(self) -> None:
        if self.on_terminal:
            self.stream.write("\n")
            self.stream.flush()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
