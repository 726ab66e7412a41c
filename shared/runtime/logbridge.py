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
from typing import TYPE_CHECKING

from .log import JsonFormatter

if TYPE_CHECKING:
    from .log import JsonSink

__all__ = ["bridge"]


class _SinkHandler(logging.Handler):
    def __init__(self, sink: JsonSink) -> None:
        super().__init__()
        self.sink = sink
        self.json = JsonFormatter(sink.service)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.json.format(record)
        except Exception:  # noqa: BLE001  (a message whose %-arguments do not fit: as the stdlib's handlers)
            self.handleError(record)
            return
        self.sink.write(line)


def bridge(sink: JsonSink) -> None:
    """Route the stdlib logger ``sunbeam.<service>`` into ``sink`` (once per service), at
    the sink's level."""
    logger = logging.getLogger(f"sunbeam.{sink.service}")
    if not any(isinstance(h, _SinkHandler) and h.sink is sink for h in logger.handlers):
        logger.addHandler(_SinkHandler(sink))
    logger.setLevel(sink.level)
    logger.propagate = False
