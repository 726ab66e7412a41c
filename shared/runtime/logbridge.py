"""Records of the stdlib's ``logging`` as our JSON lines (see log.py).

Our code logs through `log.StructLogger` and never imports ``logging``; a library or a
test may. When it is imported by the time `log.get_logger` configures a service, the
stdlib logger ``sunbeam.<service>`` gets a handler writing each record through the
service's `JsonSink`: the same line format, the record's %-formatted message as
``event`` (a `Secret` argument formats as ``<redacted>`` by itself), ``exc`` for
``exc_info``. Records of other loggers are left to the stdlib, as before.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .log import _KV_ATTR, format_line

if TYPE_CHECKING:
    from .log import JsonSink

__all__ = ["JsonFormatter", "bridge"]


class JsonFormatter(logging.Formatter):
    """Formats a `logging.LogRecord` as one JSON line for ``service``."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        kv: Any = getattr(record, _KV_ATTR, None)
        event = str(record.msg) if kv is not None else record.getMessage()
        return format_line(self.service, record.levelno, event, kv, record.exc_info, record.created)


class _SinkHandler(logging.Handler):
    def __init__(self, sink: JsonSink) -> None:
        super().__init__()
        self.sink = sink
        self.setFormatter(JsonFormatter(sink.service))

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.write(self.format(record))


def bridge(sink: JsonSink) -> None:
    """Route the stdlib logger ``sunbeam.<service>`` into ``sink`` (once per service), at
    the sink's level."""
    logger = logging.getLogger(f"sunbeam.{sink.service}")
    if not any(isinstance(h, _SinkHandler) and h.sink is sink for h in logger.handlers):
        logger.addHandler(_SinkHandler(sink))
    logger.setLevel(sink.level)
    logger.propagate = False
