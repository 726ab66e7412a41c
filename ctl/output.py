"""Standard output that outlives its reader (``sunbeam-ctl connect | head -1``).

When the reader of a pipe goes away, the next write raises ``BrokenPipeError`` (Python
ignores SIGPIPE). A command must not change its meaning because nobody reads it any
more: ``connect`` still connects (and leaves the VPN running), ``stop`` still stops. So
`install` replaces ``sys.stdout`` with a `ReaderGone` wrapper that flushes every write
(progress lines appear as they happen, in a pipe too) and, on the first broken pipe,
points file descriptor 1 at ``/dev/null`` and carries on silently. The interpreter's
final flush then has nowhere to fail either, so no "Exception ignored" line appears.
"""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO

__all__ = ["ReaderGone", "install"]


class ReaderGone:
    """A text stream that writes through to ``stream`` until its reader goes away."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.gone = False

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                self._stream.write(text)
                self._stream.flush()
            except BrokenPipeError:
                self._silence()
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._silence()

    def _silence(self) -> None:
        self.gone = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError):  # no real descriptor behind it: nothing to redirect
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def install() -> ReaderGone:
    """Wrap ``sys.stdout`` (once) and return the wrapper."""
    if not isinstance(sys.stdout, ReaderGone):
        sys.stdout = ReaderGone(sys.stdout)  # type: ignore[assignment]
    return sys.stdout  # type: ignore[return-value]
