"""A local server proves that it knows the API token before a client sends the token to it.

A plain-HTTP address on this machine belongs to whichever program listens on
its port: once the local server has ended (even by SIGKILL), another local
user may listen there and collect the ``Authorization`` header of a shell or
a notebook whose ``SENSE_*`` variables outlived it. So before its first
credentialed request to such an address (and again after a connection
failure) a client sends a random nonce to :data:`ROUTE`, which needs no
credentials, and the server answers with an HMAC of it keyed by the token.
The Sense platform's API (https, elsewhere) is never asked: it has no such route.

Example
-------
>>> nonce = new_nonce()
>>> answer("t0k3n", nonce) == answer("t0k3n", nonce) != answer("other", nonce)
True
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import urlsplit

from sense import urls
from sense.errors import SenseAPIError, SenseConnectionError

#: The route of the challenge, at the API's root.
ROUTE = "/challenge"
#: What a nonce may be: URL-safe, long enough that none is asked twice.
NONCE = r"^[A-Za-z0-9_-]{16,128}$"


def needed(url: str, auth: tuple[str, str]) -> bool:
    """Whether ``url`` must prove it knows the token: plain HTTP to this machine, with a token.

    A username and password are not put to the challenge: an answer keyed by a password
    would let whoever asks guess it offline.

    >>> needed("http://127.0.0.1:8000/users/a/projects/p", ("t0k3n", ""))
    True
    >>> needed("https://api.senseplatform.com/users/a/projects/p", ("t0k3n", ""))
    False
    """
    token, password = auth
    return bool(token) and password == "" and _is_local_http(url)


def new_nonce() -> str:
    """A fresh random nonce for one challenge."""
    return secrets.token_urlsafe(24)


def answer(token: str, nonce: str) -> str:
    """The proof that whoever holds ``token`` gives for ``nonce``: a hex HMAC-SHA256."""
    message = b"sense-server-proof:" + nonce.encode()
    return hmac.new(token.encode(), message, hashlib.sha256).hexdigest()


def verify(send, url: str, token: str) -> None:
    """Ask the server of ``url`` to prove it knows ``token``; return once it has.

    ``send(method, url, params=...)`` sends one request without credentials and returns
    its JSON answer, as :func:`sense.rest.send` does.

    Raises
    ------
    SenseConnectionError
        The server cannot be reached, or does not prove it (another program holds the port):
        the token has not been sent to it.
    """
    # The local server serves the challenge at its root, whatever path the API's URL has.
    parts = urlsplit(url)
    root = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
    nonce = new_nonce()
    try:
        body = send("GET", root + ROUTE, params={"nonce": nonce})
        proof = body.get("proof") if isinstance(body, dict) else None
    except SenseAPIError as error:
        proof, why = None, f"it answers {error.status_code} to {ROUTE}"
    except SenseConnectionError as error:
        raise SenseConnectionError(
            f"{error} (the credentials were not sent)", unreachable=True
        ) from error
    else:
        why = "its answer to the challenge is wrong"
    if not (isinstance(proof, str) and hmac.compare_digest(proof, answer(token, nonce))):
        raise SenseConnectionError(
            f"{root} does not prove that it is the local Sense server "
            f"of these credentials ({why}): no server runs there any more, or another program "
            "holds its port; the credentials were not sent",
            unreachable=True,
        )


def _is_local_http(url: str) -> bool:
    return url.lower().startswith("http://") and urls.is_loopback(url)
