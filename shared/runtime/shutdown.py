"""The one shutdown flag of a process.

SIGTERM, SIGINT and a stop request (a ctl `StopRequest`, a test, another thread) all end a
service the same way: `Shutdown.set(reason)`. The first reason wins and is kept for the
exit log line; later calls are no-ops. Loops check `is_set` on every iteration.

Waking a blocked poll. `Shutdown` owns a non-blocking pipe. `set()` writes one byte to it,
and `install_signal_handlers()` also hands the write end to `signal.set_wakeup_fd`, so the
C-level signal handler writes a byte even before the Python-level handler has run. The
service loop registers the read end (`wakeup_fd`) in its `zmq.Poller`, so a signal or a
stop from another thread returns the poll at once instead of after its timeout. The loop
calls `drain_wakeup()` when the fd is readable; the flag, not the bytes, is the truth.

Ownership: the process's main function creates and owns the `Shutdown` (and closes it);
any thread or signal handler may `set()` it; loops only read it.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterable
from types import FrameType, TracebackType
from typing import Any

__all__ = ["Shutdown"]

DEFAULT_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Shutdown:
    """A set-once stop flag with a reason and a pollable wakeup fd."""

    def __init__(self) -> None:
        self._event = threading.Event()
        # Re-entrant: a signal handler may run set() while the main thread is inside set().
        self._lock = threading.RLock()
        self._reason: str | None = None
        self._read_fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._previous_handlers: dict[int, Any] = {}
        self._previous_wakeup_fd: int | None = None
        self._closed = False

    @property
    def wakeup_fd(self) -> int:
        """Read end of the wakeup pipe: readable after `set()` or a handled signal."""
        return self._read_fd

    @property
    def is_set(self) -> bool:
        return self._event.is_set()

    @property
    def reason(self) -> str | None:
        """Why shutdown was requested (the first reason given), or None."""
        return self._reason

    def set(self, reason: str) -> bool:
        """Request shutdown; return True if this call was the one that set it.

        Safe from any thread and from signal handlers.
        """
        with self._lock:
            first = self._reason is None
            if first:
                self._reason = reason
            # Flag before byte: whoever sees the byte also sees the flag.
            self._event.set()
        self._wake()
        return first

    def wait(self, timeout: float | None = None) -> bool:
        """Block until set (or timeout); for threads that are not running a loop."""
        return self._event.wait(timeout)

    def drain_wakeup(self) -> None:
        """Empty the wakeup pipe (called by the loop when `wakeup_fd` is readable)."""
        if self._closed:
            return
        try:
            while os.read(self._read_fd, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def install_signal_handlers(self, signals: Iterable[int] = DEFAULT_SIGNALS) -> None:
        """Make ``signals`` (default SIGTERM, SIGINT) set this flag. Main thread only."""
        for signum in signals:
            previous = signal.signal(signum, self._on_signal)
            self._previous_handlers.setdefault(signum, previous)  # keep the original
        previous = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        if self._previous_wakeup_fd is None:
            self._previous_wakeup_fd = previous

    def restore_signal_handlers(self) -> None:
        """Undo `install_signal_handlers` (main thread only)."""
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers.clear()
        if self._previous_wakeup_fd is not None:
            signal.set_wakeup_fd(self._previous_wakeup_fd)
            self._previous_wakeup_fd = None

    def close(self) -> None:
        """Restore signal handlers and close the pipe. Idempotent."""
        if self._closed:
            return
        if self._previous_handlers or self._previous_wakeup_fd is not None:
            self.restore_signal_handlers()
        self._closed = True
        os.close(self._read_fd)
        os.close(self._write_fd)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.set(f"signal {signal.Signals(signum).name}")

    def _wake(self) -> None:
        if self._closed:
            return  # the fd number may already belong to someone else
        try:
            os.write(self._write_fd, b"\0")
        except (BlockingIOError, OSError):
            pass  # pipe full (already readable) or closed after shutdown

    def __enter__(self) -> Shutdown:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
