"""Named event counters a service reports in its health reply (`ServiceHealth.counters`).

Counters only go up. Names are short dotted words saying what was counted, e.g.
``"bad_message"`` or ``"wg0.send_dropped"``. One `Counters` per service process, shared by
the loop, the batchers and the bounded senders so a single snapshot shows every drop.

Ownership: the service loop thread; not thread-safe (nothing else needs to touch it).
"""

from __future__ import annotations

__all__ = ["Counters"]


class Counters:
    """A dict of named, monotonically increasing ints; a missing name reads as 0."""

    def __init__(self) -> None:
        self._values: dict[str, int] = {}  # owned by the service loop thread

    def incr(self, name: str, n: int = 1) -> None:
        if n < 0:
            raise ValueError("counters only go up")
        self._values[name] = self._values.get(name, 0) + n

    def __getitem__(self, name: str) -> int:
        return self._values.get(name, 0)

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def snapshot(self) -> dict[str, int]:
        """A copy, safe to put in a message."""
        return dict(self._values)

    def __repr__(self) -> str:
        return f"Counters({self._values!r})"
