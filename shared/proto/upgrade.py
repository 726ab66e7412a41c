"""The client side of an HTTP/1.1 protocol upgrade (``101 Switching Protocols``), sans-IO,
on h11: used by the TS2021 control connection (``POST /ts2021``) and the DERP client
(``GET /derp``).

    up = Upgrade(request)          request: an h11.Request with the Upgrade headers
    up.bytes_to_send()             the request, to write once
    up.receive(data) -> None       still reading the answer
                     -> Switched(leftover)        101: the new protocol starts with
                                                   ``leftover`` (bytes already read)
                     -> Refused(status, body, reason)
                                                   any other final answer, or the server
                                                   closed (status None); body: its first
                                                   MAX_REFUSAL_BODY bytes, for the message
    h11.RemoteProtocolError propagates: a malformed answer is the caller's to report.

``Refused.describe(what)`` is one line (`httpanswer.describe_answer`), whatever the body:
``server refused the DERP upgrade: HTTP 426 Upgrade Required (body: 'DERP requires ...')``.
"""

from __future__ import annotations

from typing import NamedTuple

import h11

from .httpanswer import describe_answer

MAX_REFUSAL_BODY = 4096


class Switched(NamedTuple):
    leftover: bytes


class Refused(NamedTuple):
    status: int | None
    """The refusing response's status; None if the server closed without one."""
    body: str
    reason: str = ""
    """The status line's reason phrase, as the server sent it."""

    def describe(self, what: str) -> str:
        if self.status is None:
            return f"server closed the connection during the {what}"
        return f"server refused the {what}: {describe_answer(self.status, self.reason, self.body)}"


class Upgrade:
    def __init__(self, request: h11.Request) -> None:
        self._conn = h11.Connection(h11.CLIENT)
        self._out = self._conn.send(request) + self._conn.send(h11.EndOfMessage())
        self._status: int | None = None
        self._reason = b""
        self._body = bytearray()

    def bytes_to_send(self) -> bytes:
        out, self._out = self._out, b""
        return out

    def receive(self, data: bytes) -> Switched | Refused | None:
        self._conn.receive_data(data)
        while True:
            ev = self._conn.next_event()
            if ev is h11.NEED_DATA:
                return None
            if isinstance(ev, h11.InformationalResponse) and ev.status_code == 101:
                leftover, _closed = self._conn.trailing_data
                return Switched(bytes(leftover))
            if isinstance(ev, h11.Response):
                self._status, self._reason = ev.status_code, bytes(ev.reason)
            elif isinstance(ev, h11.Data):
                self._body += ev.data[: MAX_REFUSAL_BODY - len(self._body)]
            elif isinstance(ev, (h11.EndOfMessage, h11.ConnectionClosed)) or ev is h11.PAUSED:
                return Refused(self._status, self._body.decode(errors="replace").strip(),
                               self._reason.decode("latin-1"))
            # another 1xx: keep reading
