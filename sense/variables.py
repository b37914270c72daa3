"""The ``SENSE_*`` variables of the dashboard context, in one table.

Through these variables a dashboard learns who and where it is (docs/guide.md,
"Environment"). Two generations of the platform spelled
some of them differently, so each entry is the tuple of its spellings, the
seed's first: the client reads the first one set, the local server writes
them all, and a caller's ``env`` may set none of them (:func:`is_reserved`).

>>> PUBLIC_DNS
('SENSE_DNS_PUBLIC', 'SENSE_PUBLIC_DNS')
>>> numbered(PUBLIC_PORT, 2)
('SENSE_PORT2_PUBLIC', 'SENSE_PUBLIC_PORT2')
>>> is_reserved("SENSE_PUBLIC_PORT12"), is_reserved("SENSE_LOCAL_MAX_WORKERS")
(True, False)
"""

from __future__ import annotations

import re

API_URL = ("SENSE_API_URL",)
OWNER_ID = ("SENSE_OWNER_ID",)
PROJECT_ID = ("SENSE_PROJECT_ID",)
PROJECT_URL = ("SENSE_PROJECT_URL",)
DASHBOARD_ID = ("SENSE_DASHBOARD_ID",)
MASTER_ID = ("SENSE_MASTER_ID",)
API_TOKEN = ("SENSE_API_TOKEN", "SENSE_API_KEY")
USERNAME = ("SENSE_USERNAME",)
PASSWORD = ("SENSE_PASSWORD",)
PROJECT_IP = ("SENSE_PROJECT_IP",)
PUBLIC_DNS = ("SENSE_DNS_PUBLIC", "SENSE_PUBLIC_DNS")
SSH_PORT_PUBLIC = ("SENSE_SSH_PORT_PUBLIC", "SENSE_PUBLIC_SSH_PORT")
SSH_PASSWORD = ("SENSE_SSH_PASSWORD",)

#: The i-th private port (i = 1, 2, ... until one is missing): a template for :func:`numbered`.
PRIVATE_PORT = ("SENSE_PORT{i}",)
#: The public port of the i-th private port: a template for :func:`numbered`.
PUBLIC_PORT = ("SENSE_PORT{i}_PUBLIC", "SENSE_PUBLIC_PORT{i}")

#: Every variable with a fixed name.
FIXED = (
    API_URL,
    OWNER_ID,
    PROJECT_ID,
    PROJECT_URL,
    DASHBOARD_ID,
    MASTER_ID,
    API_TOKEN,
    USERNAME,
    PASSWORD,
    PROJECT_IP,
    PUBLIC_DNS,
    SSH_PORT_PUBLIC,
    SSH_PASSWORD,
)
#: Every numbered variable, as templates.
NUMBERED = (PRIVATE_PORT, PUBLIC_PORT)


def numbered(templates: tuple[str, ...], i: int) -> tuple[str, ...]:
    """The spellings of the ``i``-th variable of a numbered entry (:data:`PRIVATE_PORT`, ...)."""
    return tuple(template.format(i=i) for template in templates)


def _pattern(template: str) -> str:
    return r"\d+".join(re.escape(part) for part in template.split("{i}"))


#: Every name of the context, in every spelling, any number in place of ``{i}``.
RESERVED = re.compile("|".join(_pattern(name) for entry in FIXED + NUMBERED for name in entry))


def is_reserved(name: str) -> bool:
    """Whether ``name`` belongs to the dashboard context, which a caller's ``env`` may not set."""
    return RESERVED.fullmatch(name) is not None
