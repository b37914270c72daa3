"""The dashboard context: what the platform tells a dashboard through its environment.

Every value is read at call time, never cached, so that a notebook that
points itself at another server (``sense.local.start()``) is seen at once.
Two generations of the platform spelled some variables differently; both
spellings are read, the seed's first.
"""

from __future__ import annotations

import os

from sense.errors import SenseConfigError

DEFAULT_API_URL = "https://api.senseplatform.com"

_HOW_TO_RUN_LOCALLY = (
    "This process does not look like a Sense dashboard. To run locally, call "
    "sense.local.start() first, or run your script with `sense run SCRIPT`."
)


def lookup(*names: str) -> str | None:
    """The value of the first of ``names`` that is set and not empty, else None."""
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


def require(*names: str) -> str:
    """The value of the first of ``names`` that is set, else a SenseConfigError naming them."""
    value = lookup(*names)
    if value is None:
        raise SenseConfigError(f"{' or '.join(names)} is not set. {_HOW_TO_RUN_LOCALLY}")
    return value


def api_url() -> str:
    """The API root, without a trailing slash."""
    return (lookup("SENSE_API_URL") or DEFAULT_API_URL).rstrip("/")


def project_url() -> str:
    """The URL of this dashboard's project: ``{API}/users/{owner}/projects/{project}``."""
    url = lookup("SENSE_PROJECT_URL")
    if url:
        return url.rstrip("/")
    owner = require("SENSE_OWNER_ID")
    project = require("SENSE_PROJECT_ID")
    return f"{api_url()}/users/{owner}/projects/{project}"


def dashboard_id() -> str:
    """This dashboard's id."""
    return require("SENSE_DASHBOARD_ID")


def master_id() -> str | None:
    """The id of this dashboard's master; None on a master (the variable is empty or unset)."""
    return lookup("SENSE_MASTER_ID")


def cluster_master_id() -> str:
    """The id of the master of this dashboard's cluster: its master's, or its own on a master."""
    return master_id() or dashboard_id()


def auth() -> dict[str, str]:
    """REST credentials ``{"user": ..., "pass": ...}``: the token, else username and password."""
    token = lookup("SENSE_API_TOKEN", "SENSE_API_KEY")
    if token:
        return {"user": token, "pass": ""}
    username = lookup("SENSE_USERNAME")
    password = os.environ.get("SENSE_PASSWORD")
    if username and password is not None:
        return {"user": username, "pass": password}
    raise SenseConfigError(
        "No REST credentials: set SENSE_API_TOKEN (or SENSE_API_KEY), or SENSE_USERNAME and "
        f"SENSE_PASSWORD. {_HOW_TO_RUN_LOCALLY}"
    )
