"""Exponential backoff with full jitter, sans-IO (randomness passed in).

delay(n) = uniform(0.5, 1.0) * min(cap, base * 2**n) for the n-th consecutive failure
(n from 0); `reset()` after a success. The lower bound keeps a burst of clients from
retrying at once while never retrying sooner than half the nominal delay.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    base: float = 1.0
    cap: float = 60.0
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0

    def next_delay(self) -> float:
        nominal = min(self.cap, self.base * (2 ** min(self.failures, 32)))
        self.failures += 1
        return nominal * self.rng.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.failures = 0
