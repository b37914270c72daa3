"""Helpers for a Sense dashboard: install packages, find its addresses, run workers."""

from sense.errors import (
    InstallError,
    LaunchError,
    SenseAPIError,
    SenseConfigError,
    SenseConnectionError,
    SenseError,
)

__version__ = "1.0.0"
