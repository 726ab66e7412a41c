"""HTTP proxy server side (RFC 9110 / 9112), sans-IO, parsed by h11.

Two request forms reach a proxy:

- ``CONNECT host:port HTTP/1.1`` (authority-form, RFC 9110 9.3.6): a tunnel. Event
  `ConnectRequest`; open the upstream connection, then `reply_connect` answers
  ``HTTP/1.1 200 Connection established`` (no body) or an error status. After a 200 send
  `leftover()` upstream (bytes the client sent after its CONNECT head) and splice.
- ``GET http://host:port/path HTTP/1.1`` (absolute-form, RFC 9112 3.2.2): one request
  forwarded. Event `ForwardRequest` carries the head rewritten to origin-form::

      GET /path HTTP/1.1        target: the path and query of the URL (fragment dropped)
      Host: host:port           RFC 9112 3.2.2: replaced by the URL's authority
      ...the client's headers, minus hop-by-hop ones: Connection and every header it
         names, Proxy-Connection, Proxy-Authorization, Keep-Alive, TE, Upgrade (framing
         headers are kept whatever Connection says; Content-Length is dropped when
         Transfer-Encoding is present, RFC 9112 6.3)
      Connection: close

  then `body_data()` yields the request body re-encoded for upstream: h11 parses the
  client's framing (Content-Length or chunked) into Data events and a second h11
  connection, in the client role, writes them out again. Re-encoding rather than
  passing raw bytes through means upstream sees only a well-formed message whose end
  we know, chunk extensions and malformed framing never reach it, and trailers survive.

One upstream connection serves one request (``Connection: close``): the shell splices
the upstream response back unparsed, so it cannot know where a response ends; upstream
closing after its response marks that end, and the shell then closes the client
connection. A client that sends a second request on the same connection (keep-alive or
pipelining) has it discarded (``discarded`` counts the bytes): per RFC 9112 9.3.2 it
retries unanswered requests on a new connection once we close. Limits: upstream always
gets HTTP/1.1 (h11 writes no 1.0), so a 1.0 client could receive a chunked response;
``https://`` URLs, origin-form (a request not meant for a proxy) and ``OPTIONS *`` get a
400.

Bounds: an incomplete head is capped by h11's ``max_incomplete_event_size``
(``max_head``, 16 KiB; beyond: 431), so what is buffered never exceeds it plus one read;
bytes sent after a CONNECT before the reply are capped at ``max_early_data`` (64 KiB;
shells should stop reading while a request is pending).

Errors: the client's garbage is a `ProtocolError` event (``reason`` is the counter
name) and, before a request was handed out, a 4xx/5xx response in `data_to_send()`;
after a `ForwardRequest` (bad chunked body, EOF mid-body) no reply is possible: close
both sides. Calling the API out of order (our bug) raises `RuntimeError`.

h11 (~1.3 MB of code objects) is imported by the first `HttpProxyServer`, i.e. on the first
connection to an http listener, not with the proxy: most proxies never serve one.
"""

from __future__ import annotations

import enum
from http import HTTPStatus
from typing import TYPE_CHECKING

import msgspec
from sunbeam.shared.netmap.names import parse_target

if TYPE_CHECKING:
    import h11

__all__ = ["ConnectRequest", "ForwardRequest", "HttpProxyServer", "ProtocolError", "State"]

MAX_HEAD = 16 * 1024
MAX_EARLY_DATA = 64 * 1024
_HOP_BY_HOP = {b"connection", b"proxy-connection", b"proxy-authorization", b"keep-alive", b"te",
               b"upgrade", b"host"}  # fmt: skip
_FRAMING = {b"content-length", b"transfer-encoding"}


class State(enum.Enum):
    REQUEST = "request"
    CONNECT_PENDING = "connect_pending"
    TUNNEL = "tunnel"
    FORWARDING = "forwarding"
    """ForwardRequest handed out; its body is still arriving."""
    FORWARDED = "forwarded"
    """The whole request went out; later client bytes are discarded."""
    CLOSED = "closed"


class ConnectRequest(msgspec.Struct, frozen=True):
    """``CONNECT host:port``: open a tunnel, then `HttpProxyServer.reply_connect`."""

    host: str
    """Lowercased name or IP literal (IPv6 without brackets)."""
    port: int


class ForwardRequest(msgspec.Struct, frozen=True):
    """An absolute-form request: send ``head`` to ``host``:``port``, then `body_data()`."""

    host: str
    port: int
    head: bytes
    """The origin-form request line and headers, ending with the blank line."""


class ProtocolError(msgspec.Struct, frozen=True):
    """The client broke the protocol; send `data_to_send()` and close."""

    reason: str
    """A short counter name, e.g. ``bad_request``, ``head_too_large``."""
    detail: str = ""
    status: int | None = None
    """The status of the reply queued in `data_to_send()`; None when none is."""


Event = ConnectRequest | ForwardRequest | ProtocolError


class _Reject(Exception):
    def __init__(self, reason: str, detail: str = "", status: int = 400) -> None:
        self.reason, self.detail, self.status = reason, detail, status


class HttpProxyServer:
    """One client connection of the HTTP proxy (server side)."""

    def __init__(self, *, max_head: int = MAX_HEAD, max_early_data: int = MAX_EARLY_DATA) -> None:
        import h11  # lazily: see the module docstring
        self.state = State.REQUEST
        self.eof_received = False
        self.discarded = 0
        """Client bytes dropped after the forwarded request (keep-alive, pipelining)."""
        self._max_early = max_early_data
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_head)
        self._upstream: h11.Connection | None = None  # re-encodes the forwarded body
        self._out = bytearray()
        self._body = bytearray()
        self._head = False  # the request is HEAD: any reply of ours has headers only

    def data_to_send(self) -> bytes:
        """Bytes for the client (CONNECT replies, error responses); drained by the call."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def body_data(self) -> bytes:
        """Request body bytes for upstream (after `ForwardRequest.head`); drained by the call."""
        out = bytes(self._body)
        self._body.clear()
        return out

    @property
    def request_complete(self) -> bool:
        """The forwarded request's body ended (all of it is in `body_data`)."""
        return self.state is State.FORWARDED

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed client bytes (``b""`` = the client closed its side); returns events."""
        if self.state is State.TUNNEL:
            raise RuntimeError("the tunnel is open: splice the connection, do not feed the parser")
        if self.state is State.CLOSED or self.eof_received:
            return []
        self.eof_received = not data
        if self.state is State.FORWARDED:
            self.discarded += len(data)
            return []
        self._conn.receive_data(data)
        events = self._drain() if self.state is not State.CONNECT_PENDING else []
        if self.state is State.CONNECT_PENDING and len(self._conn.trailing_data[0]) > self._max_early:
            events.append(self._error("early_data_overflow", status=None))
        return events

    def reply_connect(self, ok: bool, status: int = 502) -> None:
        """Answer the pending CONNECT: 200 Connection established, or ``status`` (4xx/5xx)."""
        import h11
        if self.state is not State.CONNECT_PENDING:
            raise RuntimeError(f"reply_connect() in state {self.state.name}: no CONNECT is pending")
        if not ok:
            self.reply_error(status)
            return
        self._out += self._conn.send(h11.Response(status_code=200, headers=[], reason=b"Connection established"))
        self.state = State.TUNNEL

    def reply_error(self, status: int = 502, message: str | None = None) -> None:
        """Refuse the pending request with ``status`` and a short text body, then close.

        For a `ForwardRequest` only before any upstream response byte reached the client.
        """
        if self.state not in (State.CONNECT_PENDING, State.FORWARDING, State.FORWARDED):
            raise RuntimeError(f"reply_error() in state {self.state.name}: no request is pending")
        if not 400 <= status <= 599:
            raise ValueError(f"an error status is 4xx or 5xx, not {status}")
        self._send_error(status, message)
        self.state = State.CLOSED

    def leftover(self) -> bytes:
        """Bytes the client sent after its CONNECT head. Only after a 200 reply."""
        import h11
        if self.state is not State.TUNNEL:
            raise RuntimeError(f"leftover() in state {self.state.name}: no tunnel")
        data, _closed = self._conn.trailing_data
        self._conn = h11.Connection(h11.SERVER)  # drop the buffer; the parser is done
        return data

    # --- internals --------------------------------------------------------------------

    def _drain(self) -> list[Event]:
        import h11
        events: list[Event] = []
        while self.state in (State.REQUEST, State.CONNECT_PENDING, State.FORWARDING):
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError as exc:
                events.append(self._h11_error(exc))
                break
            if event is h11.NEED_DATA or event is h11.PAUSED:
                break
            if type(event) is h11.Request:
                try:
                    events.append(self._on_request(event))
                except _Reject as rej:
                    events.append(self._error(rej.reason, rej.detail, rej.status))
            elif type(event) is h11.Data:
                assert self._upstream is not None
                self._body += self._upstream.send(event)
            elif type(event) is h11.EndOfMessage:
                if self.state is State.FORWARDING:
                    assert self._upstream is not None
                    self._body += self._upstream.send(event)
                    self.state = State.FORWARDED
                    self.discarded += len(self._conn.trailing_data[0])
                # else CONNECT_PENDING: its empty body ended; next is PAUSED (the client waits)
            elif type(event) is h11.ConnectionClosed:
                events.append(self._error("eof_before_request", status=None))
        return events

    def _on_request(self, request: h11.Request) -> Event:
        self._head = request.method == b"HEAD"
        target = request.target.decode("ascii")  # h11 let through visible ASCII only
        if request.method == b"CONNECT":
            if any(name in _FRAMING for name, _ in request.headers):
                raise _Reject("connect_with_body")
            host, port = _authority(target, None)
            self.state = State.CONNECT_PENDING
            return ConnectRequest(host, port)
        scheme, sep, rest = target.partition("://")
        if not sep:
            raise _Reject("not_absolute_form", target[:80])
        if scheme.lower() != "http":
            raise _Reject("unsupported_scheme", scheme[:16])
        cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
        authority, path = rest[:cut], rest[cut:].partition("#")[0]
        host, port = _authority(authority, 80)
        if not path.startswith("/"):
            path = "/" + path
        head = self._forward_head(request, authority, path)
        self.state = State.FORWARDING
        return ForwardRequest(host, port, head)

    def _forward_head(self, request: h11.Request, authority: str, path: str) -> bytes:
        import h11
        raw = request.headers.raw_items()
        named = {token.strip().lower() for name, value in raw if name.lower() == b"connection"
                 for token in value.split(b",")}  # fmt: skip
        drop = (_HOP_BY_HOP | named) - _FRAMING
        chunked = any(name.lower() == b"transfer-encoding" for name, _ in raw)
        if chunked:
            drop.add(b"content-length")
        headers = [(b"Host", authority.encode("ascii"))]
        headers += [(name, value) for name, value in raw if name.lower() not in drop]
        headers.append((b"Connection", b"close"))
        self._upstream = h11.Connection(h11.CLIENT)
        return self._upstream.send(h11.Request(method=request.method, target=path.encode("ascii"), headers=headers))

    def _h11_error(self, exc: h11.RemoteProtocolError) -> ProtocolError:
        if self.state is State.FORWARDING:
            reason = "eof_in_body" if self.eof_received else "bad_body"
            return self._error(reason, str(exc), status=None)
        if self.eof_received:
            return self._error("eof_in_request", str(exc), status=None)
        status = exc.error_status_hint
        reason = {431: "head_too_large", 501: "unsupported_transfer_encoding"}.get(status, "bad_request")
        return self._error(reason, str(exc), status)

    def _error(self, reason: str, detail: str = "", status: int | None = 400) -> ProtocolError:
        """The client broke the protocol: reply ``status`` (None: no reply) and close."""
        if status is not None and self.state is not State.REQUEST:
            status = None  # a request went out: no reply of ours can be framed any more
        if status is not None:
            self._send_error(status)
        self.state = State.CLOSED
        return ProtocolError(reason, detail, status)

    def _send_error(self, status: int, message: str | None = None) -> None:
        import h11
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Error"
        body = (message or f"{status} {phrase}").encode("utf-8", "replace") + b"\n"
        headers = [(b"Content-Type", b"text/plain; charset=utf-8"), (b"Content-Length", b"%d" % len(body)),
                   (b"Connection", b"close")]  # fmt: skip
        self._out += self._conn.send(h11.Response(status_code=status, headers=headers, reason=phrase.encode()))
        if not self._head:  # a reply to HEAD carries the length of the body it does not send
            self._out += self._conn.send(h11.Data(body))
        self._out += self._conn.send(h11.EndOfMessage())


def _authority(text: str, default_port: int | None) -> tuple[str, int]:
    if "@" in text:
        raise _Reject("userinfo_in_authority")
    try:
        return parse_target(text, default_port)
    except ValueError as exc:
        raise _Reject("bad_authority", str(exc)) from None
