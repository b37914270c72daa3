"""The dashboard context: what the platform tells a dashboard through its environment.

Every value is read at call time, never cached, so that a notebook that
points itself at another server (``sense.local.start()``) is seen at once.
Two generations of the platform spelled some variables differently; both
spellings are read, the seed's first (the table is :mod:`sense.variables`).
"""

from __future__ import annotations

import os

from sense import urls, variables
from sense.errors import SenseConfigError

DEFAULT_API_URL = "https://api.senseplatform.com"

_HOW_TO_RUN_LOCALLY = (
    "This process does not look like a Sense dashboard. To run locally, call "
    "sense.local.start() first, or run your script with `sense run SCRIPT`."
)


def lookup(names: tuple[str, ...]) -> str | None:
    """The value of the first of ``names`` that is set and not empty, else None."""
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


def require(names: tuple[str, ...]) -> str:
    """The value of the first of ``names`` that is set, else a SenseConfigError naming them."""
    value = lookup(names)
    if value is None:
        raise SenseConfigError(f"{' or '.join(names)} is not set. {_HOW_TO_RUN_LOCALLY}")
    return value


def _url(names: tuple[str, ...]) -> str | None:
    """The URL in the first of ``names`` that is set, without a trailing slash; checked."""
    url = lookup(names)
    if url is None:
        return None
    problem = urls.problem(url)
    if problem is not None:
        raise SenseConfigError(
            f"{' or '.join(names)} is {urls.without_userinfo(url)!r}, not an API address: {problem}"
        )
    return url.rstrip("/")


def api_url() -> str:
    """The API root, without a trailing slash."""
    return _url(variables.API_URL) or DEFAULT_API_URL


def project_url() -> str:
    """The URL of this dashboard's project: ``{API}/users/{owner}/projects/{project}``."""
    url = _url(variables.PROJECT_URL)
    if url is not None:
        return url
    owner = require(variables.OWNER_ID)
    project = require(variables.PROJECT_ID)
    return f"{api_url()}/users/{owner}/projects/{project}"


def dashboard_id() -> str:
    """This dashboard's id."""
    return require(variables.DASHBOARD_ID)


def master_id() -> str | None:
    """The id of this dashboard's master; None on a master (the variable is empty or unset)."""
    return lookup(variables.MASTER_ID)


def cluster_master_id() -> str:
    """The id of the master of this dashboard's cluster: its master's, or its own on a master."""
    return master_id() or dashboard_id()


def auth() -> dict[str, str]:
    """REST credentials ``{"user": ..., "pass": ...}``: the token, else username and password."""
    token = lookup(variables.API_TOKEN)
    if token:
        return {"user": token, "pass": ""}
    username = lookup(variables.USERNAME)
    (password_name,) = variables.PASSWORD
    password = os.environ.get(password_name)
    if username and password is not None:
        return {"user": username, "pass": password}
    raise SenseConfigError(
        f"No REST credentials: set {' or '.join(variables.API_TOKEN)}, or "
        f"{' and '.join(variables.USERNAME + variables.PASSWORD)}. {_HOW_TO_RUN_LOCALLY}"
    )
