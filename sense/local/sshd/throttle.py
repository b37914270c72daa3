"""Slowing down password guessing without slowing down anyone who knows their password.

A password is checked at once, and a right one is answered at once. A wrong
one is answered later, at a time booked for it, and nothing is held while it
waits, so a login that arrives meanwhile is never kept waiting behind it:

- per source, answers to failures are spaced out: after ``free`` failures
  each further one costs twice the delay of the one before, up to
  ``max_delay`` seconds, however many connections the source opens. A
  source is forgiven after ``memory`` seconds without a failure. A success
  does not reset the count: any dashboard knows its own password, and must
  not buy guesses at others';
- a source is an address, except that the whole of loopback (127.0.0.0/8,
  ``::1``) is one source, since every local user is loopback and can pick any
  of its addresses (``ssh -b 127.0.0.5``), and an IPv6 address counts by its
  /64, the block one host is usually given;
- over all sources together, at most ``rate`` failures are answered per second.

Example
-------
>>> throttle = LoginThrottle()
>>> [throttle.delay(failures) for failures in range(1, 9)]
[0.0, 0.0, 0.0, 1.0, 2.0, 4.0, 8.0, 10.0]
>>> throttle.source("127.0.0.5") == throttle.source("::1")
True
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass
class _Source:
    failures: int = 0
    last_failure: float = 0.0
    #: When the latest failure is (or was) answered: the next one is answered after it.
    answered_at: float = 0.0


class LoginThrottle:
    """Back-off for failed logins, per source and overall, inside one asyncio event loop.

    Parameters
    ----------
    free : int
        Failures of a source answered without a delay of their own.
    max_delay : float
        The longest delay, in seconds, between two answered failures of a source.
    memory : float
        Seconds without a failure after which a source starts afresh.
    rate : float
        Failures answered per second at most, all sources together.
    sleep : coroutine function
        How to wait (``asyncio.sleep``; a test may record the waits instead).
    clock : callable
        The time in seconds (``time.monotonic``; a test may keep its own).
    """

    def __init__(
        self,
        free: int = 3,
        max_delay: float = 10.0,
        memory: float = 600.0,
        rate: float = 2.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free = free
        self.max_delay = max_delay
        self.memory = memory
        self.rate = rate
        self._sleep = sleep
        self._clock = clock
        self._sources: dict[str, _Source] = {}
        #: The earliest time at which the next failure, from any source, is answered.
        self._next_answer = 0.0

    def delay(self, failures: int) -> float:
        """Seconds between the answers to a source's ``failures - 1``-th and ``failures``-th
        failures in a row."""
        if failures <= self.free:
            return 0.0
        return min(2.0 ** (failures - self.free - 1), self.max_delay)

    @staticmethod
    def source(address: str) -> str:
        """The source that ``address`` (a client's IP) counts as: loopback is one, IPv6 goes
        by its /64."""
        ip = ipaddress.ip_address(address)
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip.is_loopback:
            return "loopback"
        if ip.version == 6:
            return str(ipaddress.ip_network((ip, 64), strict=False))
        return str(ip)

    async def attempt(self, address: str, check: Callable[[], bool]) -> bool:
        """Run ``check()`` (is this login right?) for a client at ``address``; return its answer.

        A right answer is returned at once; a wrong one at the time booked for it.
        """
        if check():
            return True
        await self._sleep(max(0.0, self._book(self.source(address)) - self._clock()))
        return False

    def _book(self, source: str) -> float:
        """Count a failure of ``source`` and book the time at which it is answered."""
        now = self._clock()
        if source not in self._sources:
            self._forget_stale(now)
        entry = self._sources.setdefault(source, _Source())
        if now - entry.last_failure > self.memory:
            entry.failures, entry.answered_at = 0, 0.0
        entry.failures += 1
        entry.last_failure = now
        at = max(now, entry.answered_at + self.delay(entry.failures), self._next_answer)
        entry.answered_at = at
        self._next_answer = at + 1.0 / self.rate
        return at

    def _forget_stale(self, now: float) -> None:
        """Drop sources without a failure for ``memory`` seconds, so that the table stays small."""
        for source, entry in list(self._sources.items()):
            if now - entry.last_failure > self.memory and entry.answered_at <= now:
                del self._sources[source]
