"""What makes a URL fit to be the API's address, how it is shown, and whether it is loopback."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit


def problem(url: str) -> str | None:
    """What keeps ``url`` from being an API address (http[s], a host, a valid port), or None.

    Examples
    --------
    >>> problem("localhost:8000")
    'it must start with http:// or https://, as in http://127.0.0.1:8000'
    >>> problem("http://127.0.0.1:8000") is None
    True
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        return f"it is not a URL ({error})"
    if parts.scheme not in ("http", "https"):
        return "it must start with http:// or https://, as in http://127.0.0.1:8000"
    if not parts.hostname:
        return "it names no host"
    if port == 0:
        return "its port must be 1 to 65535"
    return None


def without_userinfo(url: str) -> str:
    """``url`` with any ``user:password@`` taken out, fit to show (a malformed URL too).

    >>> without_userinfo("http://alice:pw@127.0.0.1:8000/api")
    'http://127.0.0.1:8000/api'
    >>> without_userinfo("bob:pw@proxy:3128")
    'proxy:3128'
    """
    return re.sub(r"^((?:[^/@]*//)?)[^/]*@", r"\1", url)


def is_loopback(url: str) -> bool:
    """Whether ``url`` points at this machine: ``localhost``, 127.0.0.0/8 or ``::1``.

    >>> is_loopback("http://127.0.0.8:8000"), is_loopback("https://api.senseplatform.com")
    (True, False)
    """
    return is_loopback_host(urlsplit(url).hostname or "")


def is_loopback_host(host: str) -> bool:
    """Whether the host name or address ``host`` (no brackets) is this machine's loopback.

    >>> is_loopback_host("::1"), is_loopback_host("localhost"), is_loopback_host("10.0.0.1")
    (True, True, False)
    """
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
