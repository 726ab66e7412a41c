"""Timers of a service loop: a min-heap of (deadline, sequence, handle).

Deadlines are absolute times on the loop's clock (``time.monotonic`` unless a test injects
a fake one). Timers due at the same deadline fire in the order they were scheduled (the
sequence number breaks ties). Cancelling is O(1): the handle is flagged and skipped when it
reaches the top of the heap; the heap is rebuilt when cancelled entries outnumber live ones.

`pop_due(now)` returns only the timers that were due at ``now`` when it was called, so a
callback that re-arms itself with ``call_later(0, ...)`` runs on the next loop iteration,
not in an endless loop inside this one.

Ownership: the `TimerHeap` and its handles belong to the loop thread that created them.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

__all__ = ["TimerHandle", "TimerHeap"]

_COMPACT_MIN_CANCELLED = 256


class TimerHandle:
    """A scheduled callback; `cancel()` it to stop it from running."""

    __slots__ = ("when", "callback", "_cancelled", "_heap")

    def __init__(self, when: float, callback: Callable[[], object], heap: TimerHeap) -> None:
        self.when = when
        self.callback = callback
        self._cancelled = False
        self._heap: TimerHeap | None = heap

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        """Stop the callback from running. Idempotent; harmless after it has run."""
        if self._cancelled:
            return
        self._cancelled = True
        if self._heap is not None:
            self._heap._on_cancel()
            self._heap = None

    def __repr__(self) -> str:
        state = " cancelled" if self._cancelled else ""
        return f"<TimerHandle when={self.when:.6f} {self.callback!r}{state}>"


class TimerHeap:
    """Pending timers ordered by deadline."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._sequence = itertools.count()
        self._cancelled_in_heap = 0

    def push(self, when: float, callback: Callable[[], object]) -> TimerHandle:
        handle = TimerHandle(when, callback, self)
        heapq.heappush(self._heap, (when, next(self._sequence), handle))
        return handle

    def next_deadline(self) -> float | None:
        """Deadline of the earliest live timer, or None if there is none."""
        self._drop_cancelled_top()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[TimerHandle]:
        """Remove and return the live timers with ``when <= now``, earliest first."""
        due: list[TimerHandle] = []
        while self._heap and self._heap[0][0] <= now:
            _, _, handle = heapq.heappop(self._heap)
            if handle._cancelled:
                self._cancelled_in_heap -= 1
                continue
            handle._heap = None  # no longer in the heap: a later cancel() must not count it
            due.append(handle)
        return due

    def __len__(self) -> int:
        """Number of live (not cancelled) timers."""
        return len(self._heap) - self._cancelled_in_heap

    def _on_cancel(self) -> None:
        self._cancelled_in_heap += 1
        if (
            self._cancelled_in_heap >= _COMPACT_MIN_CANCELLED
            and self._cancelled_in_heap * 2 > len(self._heap)
        ):
            self._heap = [entry for entry in self._heap if not entry[2]._cancelled]
            heapq.heapify(self._heap)
            self._cancelled_in_heap = 0

    def _drop_cancelled_top(self) -> None:
        while self._heap and self._heap[0][2]._cancelled:
            heapq.heappop(self._heap)
            self._cancelled_in_heap -= 1
