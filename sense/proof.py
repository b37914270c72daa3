"""A local server proves that it knows the API token before a client sends the token to it.

A plain-HTTP address on this machine belongs to whichever program listens on
its port: once the local server has ended (even by SIGKILL), another local
user may listen there and collect the ``Authorization`` header of a shell or
a notebook whose ``SENSE_*`` variables outlived it. So on every new
connection to such an address, before any request goes on it, a client
sends a random nonce to :data:`ROUTE`, which needs no credentials, and the
server answers with an HMAC of it keyed by the token (:mod:`sense.proving`
does it for the HTTP layer). Connections are kept open and reused, so this
costs one round trip per connection, not per request. The Sense platform's
API (https, elsewhere) is never asked: it has no such route.

Example
-------
>>> nonce = new_nonce()
>>> answer("t0k3n", nonce) == answer("t0k3n", nonce) != answer("other", nonce)
True
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import secrets
import socket

from sense import urls

#: The route of the challenge, at the API's root.
ROUTE = "/challenge"
#: What a nonce may be: URL-safe, long enough that none is asked twice.
NONCE = r"^[A-Za-z0-9_-]{16,128}$"
#: Bytes of an answer to the challenge read at most.
MAX_ANSWER = 4096


class Unproven(Exception):
    """The server did not prove it knows the token: nothing was sent to it with the token.

    Not an ``OSError``: the HTTP layer must not take it for a connection to try again.
    """


def needed(url: str, auth: tuple[str, str] | None) -> bool:
    """Whether the server of ``url`` must prove it knows the token: plain HTTP to this
    machine, with a token as user.

    A username and password are not put to the challenge: an answer keyed by a password
    would let whoever asks guess it offline.

    >>> needed("http://127.0.0.1:8000/users/a/projects/p", ("t0k3n", ""))
    True
    >>> needed("https://api.senseplatform.com/users/a/projects/p", ("t0k3n", ""))
    False
    """
    if auth is None or not auth[0] or auth[1] != "":
        return False
    return url.lower().startswith("http://") and urls.is_loopback(url)


def new_nonce() -> str:
    """A fresh random nonce for one challenge."""
    return secrets.token_urlsafe(24)


def answer(token: str, nonce: str) -> str:
    """The proof that whoever holds ``token`` gives for ``nonce``: a hex HMAC-SHA256."""
    message = b"sense-server-proof:" + nonce.encode()
    return hmac.new(token.encode(), message, hashlib.sha256).hexdigest()


def prove(sock: socket.socket, host: str, token: str) -> bool:
    """Ask the server at the other end of the new connection ``sock`` to prove it knows
    ``token``; return once it has: whether the connection stays open for the next request
    (False: the server closes each connection after one answer).

    ``host`` is what the ``Host`` header names (``127.0.0.1:8000``).

    Raises
    ------
    Unproven
        Its answer is not the proof.
    OSError
        The connection failed meanwhile.
    """
    nonce = new_nonce()
    sock.sendall(
        f"GET {ROUTE}?nonce={nonce} HTTP/1.1\r\nHost: {host}\r\n"
        "Accept: application/json\r\nUser-Agent: sense-python\r\n\r\n".encode()
    )
    response = http.client.HTTPResponse(sock, method="GET")
    try:
        response.begin()
        body = response.read(MAX_ANSWER)
    except OSError:
        raise  # the connection failed: no answer at all (RemoteDisconnected is one too)
    except http.client.HTTPException as error:
        raise Unproven(_refusal(host, f"its answer is not HTTP: {error!r}")) from None
    finally:
        response.close()
    try:
        proof = json.loads(body).get("proof") if response.status == 200 else None
    except (ValueError, AttributeError):
        proof = None
    if not (isinstance(proof, str) and hmac.compare_digest(proof, answer(token, nonce))):
        wrong = "its answer to the challenge is wrong"
        why = wrong if response.status == 200 else f"it answers {response.status} to {ROUTE}"
        raise Unproven(_refusal(host, why))
    return not response.will_close


def _refusal(host: str, why: str) -> str:
    return (
        f"http://{host} does not prove that it is the local Sense server of these "
        f"credentials ({why}): no server runs there any more, or another program holds its "
        "port; the credentials were not sent"
    )
