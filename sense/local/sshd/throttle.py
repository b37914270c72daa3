"""Slowing down password guessing: per client address, each failure past a few costs more time.

Attempts from one address are checked one at a time, and after ``free``
failures each further failure is answered only after a delay that doubles,
up to ``max_delay`` seconds: guessing from one address is held to a trickle
whatever the number of connections it opens. An address is forgiven after
``memory`` seconds without a failure. A success does not reset the count:
any dashboard knows its own password, and must not buy guesses at others'.

Example
-------
>>> throttle = LoginThrottle()
>>> [throttle.delay(failures) for failures in range(1, 9)]
[0.0, 0.0, 0.0, 1.0, 2.0, 4.0, 8.0, 10.0]
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass
class _Address:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    failures: int = 0
    last_failure: float = 0.0
    last_seen: float = 0.0


class LoginThrottle:
    """Per-address back-off for failed logins, inside one asyncio event loop.

    Parameters
    ----------
    free : int
        Failures answered at once.
    max_delay : float
        The longest wait, in seconds, before a failure is answered.
    memory : float
        Seconds without a failure after which an address starts afresh.
    sleep : coroutine function
        How to wait (``asyncio.sleep``; a test may record the waits instead).
    """

    def __init__(
        self,
        free: int = 3,
        max_delay: float = 10.0,
        memory: float = 600.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.free = free
        self.max_delay = max_delay
        self.memory = memory
        self._sleep = sleep
        self._addresses: dict[str, _Address] = {}

    def delay(self, failures: int) -> float:
        """Seconds to wait before answering the ``failures``-th failure in a row."""
        if failures <= self.free:
            return 0.0
        return min(2.0 ** (failures - self.free - 1), self.max_delay)

    async def attempt(self, address: str, check: Callable[[], bool]) -> bool:
        """Run ``check()`` (is this login right?) for a client at ``address``; return its answer.

        A wrong answer is returned only after this address's delay.
        """
        now = time.monotonic()
        if address not in self._addresses:
            self._forget_stale(now)
        entry = self._addresses.setdefault(address, _Address())
        entry.last_seen = now
        async with entry.lock:
            if time.monotonic() - entry.last_failure > self.memory:
                entry.failures = 0
            accepted = check()
            if not accepted:
                entry.failures += 1
                entry.last_failure = time.monotonic()
                await self._sleep(self.delay(entry.failures))
        return accepted

    def _forget_stale(self, now: float) -> None:
        """Drop addresses not seen for ``memory`` seconds, so that the table stays small."""
        for address, entry in list(self._addresses.items()):
            if now - entry.last_seen > self.memory and not entry.lock.locked():
                del self._addresses[address]
