"""`CoreTimer`: the one loop timer a service keeps for a sans-IO core's next deadline.

A core (the TCP stack, a WireGuard device, the disco path table) says when it next needs
``handle_timer``-style attention with ``next_timer()``, on its own clock (``time.time`` or
``time.monotonic``). The shell calls `rearm` after every time it fed the core; the timer is
replaced only when that deadline moved, so the common case (input that changed no
deadline) costs one call and a comparison instead of a cancel and a heap push. When the
timer fires, ``fire()`` runs; it is the shell's job to feed the core and `rearm` again.

Ownership: the loop thread of the service that made it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["CoreTimer"]


class CoreTimer:
    def __init__(self, loop: Any, next_timer: Callable[[], float | None], clock: Callable[[], float],
                 fire: Callable[[], object]) -> None:
        self._loop = loop
        self._next_timer = next_timer
        self._clock = clock
        self._fire = fire
        self._when: float | None = None
        self._handle: Any = None

    @property
    def when(self) -> float | None:
        """The armed deadline on the core's clock (None: not armed)."""
        return self._when

    def rearm(self) -> None:
        when = self._next_timer()
        if when == self._when:
            return
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._when = when
        if when is not None:
            self._handle = self._loop.call_later(max(0.0, when - self._clock()), self._expired)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._when = None

    def _expired(self) -> None:
        self._handle = self._when = None
        self._fire()
