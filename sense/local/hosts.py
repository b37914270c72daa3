"""Which ``Host`` names the server answers to: a defence against DNS rebinding.

A page on ``evil.example`` can make its name resolve to ``127.0.0.1`` after it
loaded: the browser then sends the page's requests to the server, as from its
own origin, with ``Host: evil.example``. The server serves only the names it
answers as (its listen address, ``localhost`` and the loopback addresses, and
those the user allows), and refuses any other with a 400 naming the option
that allows it, before any route sees the request.

Example
-------
>>> names = allowed_hosts("127.0.0.1", ["sense.test"])
>>> sorted(names)
['127.0.0.1', '::1', 'localhost', 'sense.test']
>>> host_name("[::1]:8000")
'::1'
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable

from sense.errors import SenseError

#: The names that reach loopback on every machine.
LOOPBACK = ("localhost", "127.0.0.1", "::1")
#: A DNS name: dot-separated labels of letters, digits and inner hyphens.
_DNS_NAME = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*\.?")


class HostNameError(SenseError, ValueError):
    """A name given to ``--allow-host`` (``allow_hosts``) that is no host name."""


def check_host_name(name: str) -> str:
    """``name``, lower-cased, if it is a DNS name or an IP address, with no port.

    Raises
    ------
    HostNameError
        Anything else, named.

    Examples
    --------
    >>> check_host_name("My-Laptop.local")
    'my-laptop.local'
    """
    lowered = name.strip().lower()
    if (_DNS_NAME.fullmatch(lowered) and len(lowered) <= 253) or _is_ip(lowered):
        return lowered
    raise HostNameError(
        f"--allow-host {name!r}: not a host name nor an IP address (no port, no scheme, "
        "no wildcard: e.g. --allow-host my-laptop.local)"
    )


def allowed_hosts(listen_host: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The names a server listening on ``listen_host`` answers to, ``extra`` among them."""
    return frozenset({listen_host.lower(), *LOOPBACK, *map(check_host_name, extra)})


def host_name(header: str) -> str:
    """The name in a ``Host`` header: without its port or an IPv6 address's brackets."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rpartition(":")[0] if header.count(":") == 1 else header


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class HostCheck:
    """ASGI middleware: a 400 for a request whose ``Host`` is none of ``allowed``.

    A server that listens on every address (``0.0.0.0``, ``::``) is reached by any of the
    machine's IP addresses: then any IP address is allowed too (no DNS name can be rebound
    to one of those without being a name).
    """

    def __init__(self, app, allowed: frozenset[str]) -> None:
        self.app = app
        self.allowed = allowed
        self.any_ip = bool({"0.0.0.0", "::"} & allowed)

    def accepts(self, name: str) -> bool:
        return name in self.allowed or (self.any_ip and _is_ip(name))

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        header = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
        if self.accepts(host_name(header)):
            return await self.app(scope, receive, send)
        shown = repr(header[:100]) if header else "missing"
        message = (
            f"the Host header is {shown}: this server answers as "
            f"{', '.join(sorted(self.allowed))}; to reach it by another name, start it with "
            "--allow-host NAME (sense.local.start(allow_hosts=[NAME]))"
        )
        body = json.dumps({"error": message}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 400, "headers": headers})
        await send({"type": "http.response.body", "body": body})
