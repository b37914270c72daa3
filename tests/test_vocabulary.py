"""One vocabulary for client and server: dashboard statuses and the SENSE_* variables."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sense import variables
from sense.status import ACTIVE, ENDED, Status

#: The user guide's "Environment" section holds the table of every variable.
GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guide.md"


def test_a_status_is_the_string_the_api_sends():
    assert Status("running") is Status.RUNNING
    assert Status.RUNNING == "running"
    assert json.dumps({"status": Status.FAILED}) == '{"status": "failed"}'
    assert str(Status.STOPPED) == "stopped" and f"{Status.STARTING}" == "starting"
    assert "starting" in ACTIVE  # the JSON's plain strings are found in the sets


def test_every_status_is_either_active_or_ended():
    assert set(Status) == ACTIVE | ENDED and not ACTIVE & ENDED
    assert [s for s in Status if s.is_ended] == [Status.STOPPED, Status.FAILED]


def documented_variables() -> set[str]:
    """Every SENSE_* name of the user guide's Environment table, with {i} as in the table."""
    section = GUIDE.read_text().split("## Environment", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"`(SENSE_[A-Z_{}i]+)`", section))


def test_the_table_holds_every_variable_of_the_user_guide_in_every_spelling():
    in_table = {name for entry in variables.FIXED + variables.NUMBERED for name in entry}
    assert in_table == documented_variables()


@pytest.mark.parametrize(
    ("name", "reserved"),
    [
        ("SENSE_API_KEY", True),
        ("SENSE_PUBLIC_DNS", True),
        ("SENSE_PORT12", True),
        ("SENSE_PORT3_PUBLIC", True),
        ("SENSE_PUBLIC_PORT3", True),
        ("SENSE_PORTS", False),
        ("SENSE_PORT3_PUBLICX", False),
        ("XSENSE_API_KEY", False),
        ("SENSE_LOCAL_MAX_WORKERS", False),
        ("ROLE", False),
    ],
)
def test_a_name_is_reserved_when_the_dashboard_context_sets_it(name, reserved):
    assert variables.is_reserved(name) is reserved


def test_a_numbered_variable_is_spelled_both_ways():
    assert variables.numbered(variables.PUBLIC_PORT, 4) == (
        "SENSE_PORT4_PUBLIC",
        "SENSE_PUBLIC_PORT4",
    )
