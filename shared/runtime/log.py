"""Per-service structured logging: one JSON object per line.

Line format (keys in this order, then the record's own fields)::

    {"ts": "2025-01-31T12:00:00.123Z", "level": "warning", "service": "wg",
     "event": "bad_message", "peer": "a1b2...", "suppressed": 17}

- ``ts``: UTC wall time, ISO 8601 with milliseconds; ``level``: lower-case level name;
  ``service``: the process's service name; ``event``: a short snake_case name for what
  happened (records from other libraries carry their formatted message here).
- fields: the ``**kv`` of the call. A field named like a core key is written as ``_<name>``.
  Values: JSON types as is; `Secret` (anywhere, also nested) -> ``"<redacted>"``; ``bytes``
  -> hex, cut after 64 bytes with the total length noted; anything else -> ``str()``.
- ``exc``: the formatted traceback, for `StructLogger.exception` and ``exc_info=True``.
- JSON string escaping keeps every record on one line, whatever a peer put in a field.

`RateLimitedLog` caps lines per key (say, per peer and reason) so a peer sending garbage
cannot flood the log: at most ``max_lines`` per ``interval`` seconds per key; suppressed
lines are counted and the count is reported as ``suppressed=N`` on the key's next emitted
line (or by `report_suppressed()`).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import IO, Any

from .secret import REDACTED, Secret

__all__ = ["JsonFormatter", "RateLimitedLog", "StructLogger", "get_logger"]

_KV_ATTR = "sunbeam_kv"
_CORE_KEYS = ("ts", "level", "service", "event")
_MAX_BYTES_SHOWN = 64


def _plain(value: Any) -> Any:
    """``value`` made JSON-safe, with every `Secret` replaced by ``"<redacted>"``."""
    if isinstance(value, Secret):
        return REDACTED
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        if len(raw) <= _MAX_BYTES_SHOWN:
            return raw.hex()
        return f"{raw[:_MAX_BYTES_SHOWN].hex()}...({len(raw)} bytes)"
    if isinstance(value, Mapping):
        return {str(_plain(k)): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    return str(value)


class JsonFormatter(logging.Formatter):
    """Formats a `logging.LogRecord` as one JSON line for ``service``."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.fromtimestamp(record.created, tz=timezone.utc)
        kv: Mapping[str, Any] | None = getattr(record, _KV_ATTR, None)
        # Records from other libraries: their %-formatted message (a Secret argument
        # formats as "<redacted>" by itself).
        event = str(record.msg) if kv is not None else record.getMessage()
        line: dict[str, Any] = {
            "ts": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "service": self.service,
            "event": event,
        }
        for key, value in (kv or {}).items():
            line[f"_{key}" if key in _CORE_KEYS or key == "exc" else key] = _plain(value)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, separators=(",", ":"))


class _CurrentStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at emit time (tests replace it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, value: IO[str]) -> None:
        pass


class StructLogger:
    """``log.info("event_name", key=value, ...)`` on top of a stdlib logger."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    @property
    def logger(self) -> logging.Logger:
        return self._logger

    def log(self, level: int, event: str, /, *, exc_info: bool = False, **kv: Any) -> None:
        if self._logger.isEnabledFor(level):
            self._logger.log(level, event, extra={_KV_ATTR: kv}, exc_info=exc_info)

    def debug(self, event: str, /, **kv: Any) -> None:
        self.log(logging.DEBUG, event, **kv)

    def info(self, event: str, /, **kv: Any) -> None:
        self.log(logging.INFO, event, **kv)

    def warning(self, event: str, /, **kv: Any) -> None:
        self.log(logging.WARNING, event, **kv)

    def error(self, event: str, /, **kv: Any) -> None:
        self.log(logging.ERROR, event, **kv)

    def exception(self, event: str, /, **kv: Any) -> None:
        """An error line with the current exception's traceback in ``exc``."""
        self.log(logging.ERROR, event, exc_info=True, **kv)


def get_logger(
    service: str,
    *,
    stream: IO[str] | None = None,
    path: str | None = None,
    level: int | str = logging.INFO,
) -> StructLogger:
    """The JSON logger of ``service`` (stdlib logger ``sunbeam.<service>``).

    The first call, or any call naming a destination (``stream`` or file ``path``),
    (re)configures it; otherwise the existing configuration is reused. Default
    destination: stderr, where supervisord collects it.
    """
    logger = logging.getLogger(f"sunbeam.{service}")
    ours = [h for h in logger.handlers if isinstance(h.formatter, JsonFormatter)]
    if ours and stream is None and path is None:
        return StructLogger(logger)
    for old in ours:
        logger.removeHandler(old)
        old.close()
    handler: logging.Handler
    if path is not None:
        handler = logging.FileHandler(path, encoding="utf-8")
    elif stream is not None:
        handler = logging.StreamHandler(stream)
    else:
        handler = _CurrentStderrHandler()
    handler.setFormatter(JsonFormatter(service))
    logger.addHandler(handler)
    logger.setLevel(level.upper() if isinstance(level, str) else level)
    logger.propagate = False
    return StructLogger(logger)


class _KeyWindow:
    __slots__ = ("start", "emitted", "suppressed")

    def __init__(self, start: float) -> None:
        self.start = start
        self.emitted = 0
        self.suppressed = 0


class RateLimitedLog:
    """At most ``max_lines`` lines per ``interval`` seconds per key.

    Keys are usually built from peer input (peer key + reason), so their number is bounded
    too: past ``max_keys`` keys, expired windows are evicted, and if none are, new keys
    share one ``"<overflow>"`` budget. Ownership: the service loop thread.
    """

    OVERFLOW_KEY = "<overflow>"

    def __init__(
        self,
        log: StructLogger,
        *,
        max_lines: int = 10,
        interval: float = 60.0,
        max_keys: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_lines < 1 or interval <= 0 or max_keys < 1:
            raise ValueError("max_lines, interval and max_keys must be positive")
        self._log = log
        self._max_lines = max_lines
        self._interval = interval
        self._max_keys = max_keys
        self._clock = clock
        self._windows: dict[str, _KeyWindow] = {}  # owned by the loop thread

    def log(self, level: int, key: str, event: str, /, **kv: Any) -> bool:
        """Log unless ``key`` is over its budget; return whether a line was written."""
        now = self._clock()
        window = self._window(key, now)
        if window.emitted >= self._max_lines:
            window.suppressed += 1
            return False
        window.emitted += 1
        if window.suppressed:
            kv["suppressed"] = window.suppressed
            window.suppressed = 0
        self._log.log(level, event, **kv)
        return True

    def info(self, key: str, event: str, /, **kv: Any) -> bool:
        return self.log(logging.INFO, key, event, **kv)

    def warning(self, key: str, event: str, /, **kv: Any) -> bool:
        return self.log(logging.WARNING, key, event, **kv)

    def error(self, key: str, event: str, /, **kv: Any) -> bool:
        return self.log(logging.ERROR, key, event, **kv)

    def suppressed(self, key: str) -> int:
        """Lines suppressed for ``key`` and not yet reported."""
        window = self._windows.get(key)
        return window.suppressed if window else 0

    def report_suppressed(self, event: str = "log_suppressed") -> int:
        """Write one line per key whose window ended with unreported suppressed lines
        (call it from a periodic timer); return how many lines were written."""
        now = self._clock()
        written = 0
        for key, window in list(self._windows.items()):
            if window.suppressed and now - window.start >= self._interval:
                self._log.warning(event, key=key, suppressed=window.suppressed)
                del self._windows[key]
                written += 1
        return written

    def _window(self, key: str, now: float) -> _KeyWindow:
        window = self._windows.get(key)
        if window is None:
            if len(self._windows) >= self._max_keys:
                self._evict_expired(now)
                if len(self._windows) >= self._max_keys:
                    key = self.OVERFLOW_KEY
                    window = self._windows.get(key)
            if window is None:
                window = self._windows[key] = _KeyWindow(now)
        if now - window.start >= self._interval:
            window.start = now
            window.emitted = 0
        return window

    def _evict_expired(self, now: float) -> None:
        for key, window in list(self._windows.items()):
            if now - window.start >= self._interval and not window.suppressed:
                del self._windows[key]
