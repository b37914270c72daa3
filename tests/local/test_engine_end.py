"""How a job's end mirrors Python's, step by step (the engine runs in the dashboards' processes;
``test_local_processes.py`` compares whole endings with ``python -c``)."""

from __future__ import annotations

import io
import sys
import types

import pytest

from sense.local import engine


@pytest.mark.parametrize(
    ("code", "status"),
    [(None, 0), (0, 0), (3, 3), (True, 1), (256 + 7, 7), (-1, 255), (2**70, 255)],
)
def test_sys_exit_codes_become_the_status_python_gives(code, status):
    assert engine._exit_code(code) == status


def test_a_sys_exit_message_is_printed_and_the_status_is_1(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert engine._exit_code("bye") == 1
    assert sys.stderr.getvalue() == "bye\n"


def test_a_sys_exit_message_with_no_standard_error_still_gives_1(monkeypatch):
    monkeypatch.setattr(sys, "stderr", None)
    monkeypatch.setattr(sys, "__stderr__", io.StringIO())
    assert engine._exit_code(["a", "list"]) == 1


def test_globals_are_cleared_as_python_clears_a_module_private_ones_first():
    deleted = []

    class Noted:
        def __init__(self, name):
            self.name = name

        def __del__(self):
            deleted.append(self.name)

    module = types.ModuleType("job_module")
    module.__dict__.update(first=Noted("first"), _private=Noted("_private"), last=Noted("last"))
    module.__builtins__ = __builtins__
    engine._clear_module(module)
    assert deleted == ["_private", "first", "last"]
    assert module.__builtins__ is __builtins__
    assert module.first is module._private is module.last is None


def test_anything_without_a_namespace_in_sys_modules_is_left_alone():
    engine._clear_module(None)
    engine._clear_module(42)


def test_standard_output_that_cannot_be_flushed_is_said_once_and_fails_the_flush(monkeypatch):
    class Unflushable(io.StringIO):
        def flush(self):
            raise OSError(9, "Bad file descriptor")

    monkeypatch.setattr(sys, "stdout", Unflushable())
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not engine._flush_standard_streams()
    assert sys.stderr.getvalue().startswith("Exception ignored in: <")
    assert "OSError: [Errno 9] Bad file descriptor" in sys.stderr.getvalue()
    said = sys.stderr.getvalue()
    assert not engine._flush_standard_streams(quietly=True)
    assert sys.stderr.getvalue() == said


def test_closed_or_missing_standard_streams_are_not_flushed(monkeypatch):
    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr(sys, "stdout", closed)
    monkeypatch.setattr(sys, "stderr", None)
    assert engine._flush_standard_streams()
