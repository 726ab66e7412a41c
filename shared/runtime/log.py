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

No stdlib ``logging`` here: `get_logger` formats and writes the lines itself (`JsonSink`);
logging and the traceback module it loads cost ~0.56 MB in every service process, and
none of our code uses them. Where ``logging`` is imported anyway (a library, a test),
records of the stdlib logger ``sunbeam.<service>`` come out as the same lines, their
%-formatted message as ``event`` (logbridge.py). traceback is imported for ``exc`` only.

`RateLimitedLog` caps lines per key (say, per peer and reason) so a peer sending garbage
cannot flood the log: at most ``max_lines`` per ``interval`` seconds per key; suppressed
lines are counted and the count is reported as ``suppressed=N`` on the key's next emitted
line (or by `report_suppressed()`).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import IO, TYPE_CHECKING, Any, Protocol

from .secret import REDACTED, Secret

if TYPE_CHECKING:
    import logging

__all__ = ["DEBUG", "ERROR", "INFO", "WARNING", "JsonFormatter", "JsonSink", "RateLimitedLog", "StructLogger",
           "format_line", "get_logger", "level_number"]

# the stdlib logging's level numbers
DEBUG, INFO, WARNING, ERROR, CRITICAL = 10, 20, 30, 40, 50
_LEVELS = {"DEBUG": DEBUG, "INFO": INFO, "WARNING": WARNING, "WARN": WARNING, "ERROR": ERROR,
           "CRITICAL": CRITICAL, "FATAL": CRITICAL, "NOTSET": 0}
_NAMES = {DEBUG: "debug", INFO: "info", WARNING: "warning", ERROR: "error", CRITICAL: "critical"}

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


def format_line(service: str, level: int, event: str, kv: Mapping[str, Any] | None, exc_info: Any,
                created: float) -> str:
    """One record as its JSON line (without the newline). ``exc_info``: an
    ``(type, value, traceback)`` tuple for ``exc``, or None."""
    line: dict[str, Any] = {
        "ts": datetime.fromtimestamp(created, tz=timezone.utc).isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "level": _NAMES.get(level) or f"level {level}",
        "service": service,
        "event": event,
    }
    for key, value in (kv or {}).items():
        line[f"_{key}" if key in _CORE_KEYS or key == "exc" else key] = _plain(value)
    if exc_info:
        line["exc"] = _format_exception(exc_info)
    return json.dumps(line, ensure_ascii=False, separators=(",", ":"))


def _format_exception(exc_info: Any) -> str:
    import traceback  # only for a line that carries one (~0.1 MB)

    text = "".join(traceback.format_exception(*exc_info))
    return text.removesuffix("\n")


def level_number(level: int | str) -> int:
    """``"warning"``, ``"WARNING"`` or 30 -> 30 (the stdlib's numbers); ValueError if unknown."""
    if isinstance(level, int):
        return level
    try:
        return _LEVELS[level.upper()]
    except KeyError:
        raise ValueError(f"Unknown level: {level!r}") from None


class JsonFormatter:
    """Formats a stdlib ``logging.LogRecord`` as one JSON line for ``service``: a
    ``logging.Formatter`` as far as a Handler is concerned (it only calls ``format``),
    without importing logging."""

    def __init__(self, service: str) -> None:
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        kv: Any = getattr(record, _KV_ATTR, None)
        # Records from other code: their %-formatted message (a Secret argument formats as
        # "<redacted>" by itself).
        event = str(record.msg) if kv is not None else record.getMessage()
        return format_line(self.service, record.levelno, event, kv, record.exc_info, record.created)


class JsonSink:
    """Where the lines of one service go (stderr as it is at write time, a stream or a
    file), and from which level; what `get_logger` gives a `StructLogger`. One per service
    name, reconfigured in place, so every logger of the service follows a new destination.
    Records are written under a lock (a resolver thread may log)."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.level = INFO
        self._stream: IO[str] | None = None  # None: sys.stderr at write time
        self._file: IO[str] | None = None
        self._lock = threading.Lock()

    def configure(self, *, stream: IO[str] | None, path: str | None, level: int) -> None:
        new_file = open(path, "a", encoding="utf-8") if path is not None else None  # noqa: SIM115
        with self._lock:
            if self._file is not None:
                self._file.close()
            self._file, self._stream, self.level = new_file, stream, level

    def isEnabledFor(self, level: int) -> bool:  # the stdlib Logger's name
        return level >= self.level

    def log(self, level: int, msg: object, *, exc_info: bool = False,
            extra: Mapping[str, object] | None = None) -> None:
        """What `StructLogger` calls (the stdlib ``Logger.log`` shape)."""
        if level < self.level:
            return
        kv: Any = (extra or {}).get(_KV_ATTR)
        self.write(format_line(self.service, level, str(msg), kv, sys.exc_info() if exc_info else None, time.time()))

    def write(self, line: str) -> None:
        with self._lock:
            out = self._file or self._stream or sys.stderr
            try:
                out.write(line + "\n")
                out.flush()
            except (OSError, ValueError):  # stderr gone (supervisord stopping), a closed stream
                pass


class _Sink(Protocol):
    def isEnabledFor(self, level: int) -> bool: ...

    def log(self, level: int, msg: object, *, exc_info: bool = ...,
            extra: Mapping[str, object] | None = ...) -> None: ...


class StructLogger:
    """``log.info("event_name", key=value, ...)`` on a `JsonSink` (or on a stdlib logger)."""

    def __init__(self, logger: _Sink) -> None:
        self._logger = logger

    @property
    def logger(self) -> _Sink:
        return self._logger

    def is_enabled_for(self, level: int) -> bool:
        return self._logger.isEnabledFor(level)

    def log(self, level: int, event: str, /, *, exc_info: bool = False, **kv: Any) -> None:
        if self._logger.isEnabledFor(level):
            self._logger.log(level, event, extra={_KV_ATTR: kv}, exc_info=exc_info)

    def debug(self, event: str, /, **kv: Any) -> None:
        self.log(DEBUG, event, **kv)

    def info(self, event: str, /, **kv: Any) -> None:
        self.log(INFO, event, **kv)

    def warning(self, event: str, /, **kv: Any) -> None:
        self.log(WARNING, event, **kv)

    def error(self, event: str, /, **kv: Any) -> None:
        self.log(ERROR, event, **kv)

    def exception(self, event: str, /, **kv: Any) -> None:
        """An error line with the current exception's traceback in ``exc``."""
        self.log(ERROR, event, exc_info=True, **kv)


_SINKS: dict[str, JsonSink] = {}


def get_logger(
    service: str,
    *,
    stream: IO[str] | None = None,
    path: str | None = None,
    level: int | str = INFO,
) -> StructLogger:
    """The JSON logger of ``service``.

    The first call, or any call naming a destination (``stream`` or file ``path``),
    (re)configures it; otherwise the existing configuration is reused. Default
    destination: stderr, where supervisord collects it. Where the stdlib's logging is
    already imported, its logger ``sunbeam.<service>`` writes the same lines (logbridge.py).
    """
    sink = _SINKS.get(service)
    if sink is not None and stream is None and path is None:
        return StructLogger(sink)
    number = level_number(level)
    if sink is None:
        sink = _SINKS[service] = JsonSink(service)
    sink.configure(stream=stream, path=path, level=number)
    if "logging" in sys.modules:
        from .logbridge import bridge

        bridge(sink)
    return StructLogger(sink)


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
        return self.log(INFO, key, event, **kv)

    def warning(self, key: str, event: str, /, **kv: Any) -> bool:
        return self.log(WARNING, key, event, **kv)

    def error(self, key: str, event: str, /, **kv: Any) -> bool:
        return self.log(ERROR, key, event, **kv)

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

