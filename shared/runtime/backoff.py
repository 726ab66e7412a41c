"""Exponential backoff with full jitter, sans-IO (randomness passed in).

`Backoff`: delay(n) = uniform(0.5, 1.0) * min(cap, base * 2**n) for the n-th consecutive
failure (n from 0); `reset()` after a success. The lower bound keeps a burst of clients from
retrying at once while never retrying sooner than half the nominal delay.

`ReconnectBackoff`: two `Backoff` schedules for a client of one server. A failure where
nothing answered (connection refused, no route, connect timed out, closed before the
server sent a byte) costs the server nothing to retry, and the user waits for the first
attempt after the server is back: those retry within ``unreachable_cap``. A failure after
the server answered (an HTTP error, a broken protocol, a dropped stream) is load on a
server that is up: those back off to ``cap``. Each schedule counts only its own failures,
so a long outage does not delay the first attempt after it. ``answered()`` when the server
answers again, ``reset()`` when the client works again.
"""

from __future__ import annotations

import random

import msgspec


class Backoff(msgspec.Struct):
    base: float = 1.0
    cap: float = 60.0
    rng: random.Random = msgspec.field(default_factory=random.Random)
    failures: int = 0

    def next_delay(self) -> float:
        nominal = min(self.cap, self.base * (2 ** min(self.failures, 32)))
        self.failures += 1
        return nominal * self.rng.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.failures = 0


class ReconnectBackoff:
    def __init__(self, *, base: float = 1.0, cap: float = 60.0, unreachable_cap: float = 2.0,
                 rng: random.Random | None = None) -> None:
        rng = rng or random.Random()
        self.server = Backoff(base=base, cap=cap, rng=rng)
        self.unreachable = Backoff(base=min(base, unreachable_cap), cap=unreachable_cap, rng=rng)

    def next_delay(self, *, answered: bool) -> float:
        """The wait before the next attempt after a failure; ``answered``: did the server
        send anything on the attempt that failed?"""
        return (self.server if answered else self.unreachable).next_delay()

    def answered(self) -> None:
        """The server answers again: the next time it vanishes, retry soon from the start."""
        self.unreachable.reset()

    def reset(self) -> None:
        """The client works again (for the control client: a map arrived)."""
        self.server.reset()
        self.unreachable.reset()
