"""Connections that have not yet shown what they want: bounded in number and in time.

A listener lets each connection into its lobby on arrival and out of it once
the connection has proven itself (a whole HTTP request arrived, an SSH login
succeeded). One that stays longer than ``timeout`` seconds is closed, and
when a newcomer finds the lobby full, the oldest one there is closed to make
room: whoever opens connections and says nothing holds at most ``capacity``
of them, for a while, and a client that says at once what it wants (as the
server's own user does) gets in however many are waiting.

Example
-------
>>> lobby = Lobby(capacity=512, timeout=10.0)     # doctest: +SKIP
>>> lobby.enter(connection, transport.close)       # in connection_made  # doctest: +SKIP
>>> lobby.leave(connection)                        # once it has proven itself  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable


class Lobby:
    """At most ``capacity`` connections waiting, each for at most ``timeout`` seconds.

    Used from one asyncio event loop (the listener's).

    Parameters
    ----------
    capacity : int
        How many connections may wait at once; a newcomer past it closes the oldest.
    timeout : float
        Seconds a connection may wait before it is closed.
    """

    def __init__(self, capacity: int, timeout: float) -> None:
        self.capacity = capacity
        self.timeout = timeout
        #: Connection -> (its timer, how to close it); oldest first (dicts keep order).
        self._waiting: dict[Hashable, tuple[asyncio.TimerHandle, Callable[[], object]]] = {}

    def enter(self, connection: Hashable, close: Callable[[], object]) -> None:
        """Let ``connection`` wait; ``close()`` is called if it waits too long or gives way."""
        self.leave(connection)
        timer = asyncio.get_running_loop().call_later(self.timeout, self._close, connection)
        self._waiting[connection] = (timer, close)
        if len(self._waiting) > self.capacity:
            self._close(next(iter(self._waiting)))

    def leave(self, connection: Hashable) -> None:
        """``connection`` has proven itself (or is gone): it no longer waits."""
        entry = self._waiting.pop(connection, None)
        if entry is not None:
            entry[0].cancel()

    def close_all(self) -> None:
        """Close every connection still waiting (the listener stops)."""
        for connection in list(self._waiting):
            self._close(connection)

    def _close(self, connection: Hashable) -> None:
        timer, close = self._waiting.pop(connection)
        timer.cancel()
        close()
