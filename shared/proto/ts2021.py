"""The TS2021 control connection as one sans-IO object: HTTP/1.1 upgrade, Noise, HTTP/2.

Layers on one TCP (or TLS) byte stream, bottom to top::

    client -> server   POST /ts2021 HTTP/1.1                    (h11)
                       Upgrade: tailscale-control-protocol
                       Connection: upgrade
                       X-Tailscale-Handshake: base64(101-byte Noise initiation)
    server -> client   HTTP/1.1 101 Switching Protocols          (anything else: refused)
    server -> client   Noise response (51 B) or type-0x03 error   (controlbase.Initiator)
    both ways          Noise transport records 0x04|u16 BE len|ct  (controlbase.Transport)
      inside:          server first: optional early payload  ff ff ff 'T' 'S' | u32 BE len | JSON
                       then HTTP/2 with prior knowledge, :scheme https       (h2)

Use: ``conn = ControlConnection(host=..., initiator=...)``; send ``conn.data_to_send()``;
feed every received byte to ``conn.receive_data(data)`` and handle the returned events;
``conn.post(path, body)`` opens a request stream once `Connected` was seen. Received DATA is
acknowledged to HTTP/2 flow control as soon as it is handed out (the caller consumes events
synchronously), so a long map stream never stalls.

Errors from the server side (refused upgrade, bad Noise, bad HTTP/2) raise
`ControlProtocolError`; the connection is then unusable.
"""

from __future__ import annotations

import base64
from enum import Enum

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import h11
import msgspec

from .controlbase import (
    HandshakeError,
    Initiator,
    RecordError,
    Transport,
    parse_early_payload,
)
from .upgrade import Refused, Upgrade

UPGRADE_PATH = "/ts2021"
UPGRADE_PROTOCOL = "tailscale-control-protocol"
HANDSHAKE_HEADER = "X-Tailscale-Handshake"
# Our receive windows: large enough that a multi-megabyte map frame flows without waiting
# for WINDOW_UPDATE round trips.
STREAM_WINDOW = 8 << 20


class ControlProtocolError(Exception):
    """The server (or something between) broke the protocol; reconnect. ``status``: the
    HTTP status that refused the upgrade, if that is what happened (a reverse proxy in
    front of a server that is down answers 502, 503 or 504)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Connected(msgspec.Struct, frozen=True):
    """Noise is up and HTTP/2 may be used. ``early_payload``: the server's early JSON, if any."""

    early_payload: dict | None


class ResponseStarted(msgspec.Struct, frozen=True):
    stream_id: int
    status: int
    headers: tuple[tuple[str, str], ...]


class ResponseData(msgspec.Struct, frozen=True):
    stream_id: int
    data: bytes


class ResponseEnded(msgspec.Struct, frozen=True):
    stream_id: int


class StreamReset(msgspec.Struct, frozen=True):
    stream_id: int
    error_code: int


class ConnectionClosed(msgspec.Struct, frozen=True):
    reason: str


Event = Connected | ResponseStarted | ResponseData | ResponseEnded | StreamReset | ConnectionClosed


class Phase(Enum):
    UPGRADE = "upgrade"
    HANDSHAKE = "handshake"
    EARLY = "early"
    HTTP2 = "http2"
    CLOSED = "closed"


class ControlConnection:
    """One TS2021 connection (client side). Owned by the control service's loop."""

    def __init__(self, *, host: str, initiator: Initiator, authority: str | None = None) -> None:
        self.phase = Phase.UPGRADE
        self.authority = authority or host
        self._initiator = initiator
        self._out = bytearray()
        self._inbuf = bytearray()  # handshake bytes, then early-payload plaintext
        self._transport: Transport | None = None
        self._h2: h2.connection.H2Connection | None = None
        self.early_payload: dict | None = None
        request = h11.Request(method="POST", target=UPGRADE_PATH, headers=[
            ("Host", host),
            ("Upgrade", UPGRADE_PROTOCOL),
            ("Connection", "upgrade"),
            (HANDSHAKE_HEADER, base64.b64encode(initiator.initiation()).decode()),
            ("Content-Length", "0"),
        ])
        self._upgrade = Upgrade(request)
        self._out += self._upgrade.bytes_to_send()

    # -- output -------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        if self._h2 is not None and self._transport is not None:
            plain = self._h2.data_to_send()
            if plain:
                self._out += self._transport.encrypt(plain)
        out = bytes(self._out)
        self._out.clear()
        return out

    def post(self, path: str, body: bytes, headers: tuple[tuple[str, str], ...] = ()) -> int:
        """Send ``POST path`` with a JSON body; returns the HTTP/2 stream id."""
        if self.phase is Phase.CLOSED:  # the server's own frames (GOAWAY...) closed it
            raise ControlProtocolError("connection closed by the server")
        if self.phase is not Phase.HTTP2 or self._h2 is None:
            raise RuntimeError(f"post() before the connection is up (phase {self.phase.value})")
        try:
            sid = self._h2.get_next_available_stream_id()
            self._h2.send_headers(sid, [
                (":method", "POST"), (":scheme", "https"), (":authority", self.authority), (":path", path),
                ("content-type", "application/json"), ("content-length", str(len(body))), *headers,
            ])
        except h2.exceptions.ProtocolError as exc:  # e.g. SETTINGS_MAX_CONCURRENT_STREAMS 0
            self.phase = Phase.CLOSED
            raise ControlProtocolError(f"the server's HTTP/2 settings refuse a request: {exc!r}") from exc
        self._send_body(sid, body)
        return sid

    def _send_body(self, sid: int, body: bytes) -> None:
        assert self._h2 is not None
        view = memoryview(body)
        while True:
            n = min(len(view), self._h2.max_outbound_frame_size, self._h2.local_flow_control_window(sid))
            if n <= 0 and len(view):
                # Control requests are small; a peer granting less than a request's size is
                # not a server we can talk to.
                raise ControlProtocolError("server's HTTP/2 flow-control window is too small for a request")
            self._h2.send_data(sid, bytes(view[:n]), end_stream=(n == len(view)))
            view = view[n:]
            if not len(view):
                return

    def cancel(self, sid: int) -> None:
        if self._h2 is not None:
            self._h2.reset_stream(sid)

    # -- input --------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        if not data:
            if self.phase is not Phase.CLOSED:
                self.phase = Phase.CLOSED
                return [ConnectionClosed("server closed the connection")]
            return []
        try:
            if self.phase is Phase.UPGRADE:
                return self._receive_upgrade(data)
            if self.phase is Phase.HANDSHAKE:
                return self._receive_handshake(data)
            if self.phase in (Phase.EARLY, Phase.HTTP2):
                assert self._transport is not None
                return self._receive_plain(self._transport.receive_data(data))
        except (HandshakeError, RecordError, h2.exceptions.ProtocolError, h11.RemoteProtocolError,
                UnicodeDecodeError) as exc:  # UnicodeDecodeError: a header that is not UTF-8
            self.phase = Phase.CLOSED
            raise ControlProtocolError(f"{exc.__class__.__name__}: {exc}") from exc
        return []

    def _receive_upgrade(self, data: bytes) -> list[Event]:
        answer = self._upgrade.receive(data)
        if answer is None:
            return []
        if isinstance(answer, Refused):
            self.phase = Phase.CLOSED
            raise ControlProtocolError(answer.describe("TS2021 upgrade"), answer.status)
        self.phase = Phase.HANDSHAKE
        return self._receive_handshake(answer.leftover) if answer.leftover else []

    def _receive_handshake(self, data: bytes) -> list[Event]:
        self._inbuf += data
        need = Initiator.response_length_needed(bytes(self._inbuf))
        if need is None or len(self._inbuf) < need:
            return []
        transport = self._initiator.receive_response(bytes(self._inbuf[:need]))
        rest = bytes(self._inbuf[need:])
        self._inbuf.clear()
        self._transport = transport
        self._h2 = h2.connection.H2Connection(config=h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8"))
        self._h2.local_settings = h2.settings.Settings(client=True, initial_values={
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            h2.settings.SettingCodes.ENABLE_PUSH: 0,
        })
        self._h2.initiate_connection()
        self._h2.increment_flow_control_window(STREAM_WINDOW)
        self.phase = Phase.EARLY
        return self._receive_plain(transport.receive_data(rest)) if rest else []

    def _receive_plain(self, plain: bytes) -> list[Event]:
        events: list[Event] = []
        if self.phase is Phase.EARLY:
            self._inbuf += plain
            parsed = parse_early_payload(bytes(self._inbuf))
            if parsed is None:
                return events
            payload, consumed = parsed
            self.early_payload = payload
            plain = bytes(self._inbuf[consumed:])
            self._inbuf.clear()
            self.phase = Phase.HTTP2
            events.append(Connected(payload))
        if plain:
            assert self._h2 is not None
            events += self._h2_events(self._h2.receive_data(plain))
        return events

    def _h2_events(self, raw: list) -> list[Event]:
        assert self._h2 is not None
        out: list[Event] = []
        for ev in raw:
            if isinstance(ev, h2.events.ResponseReceived):
                headers = tuple((str(k), str(v)) for k, v in ev.headers)
                status = int(dict(headers).get(":status", "0"))
                out.append(ResponseStarted(ev.stream_id, status, headers))
            elif isinstance(ev, h2.events.DataReceived):
                if ev.flow_controlled_length:
                    self._h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                if ev.data:
                    out.append(ResponseData(ev.stream_id, ev.data))
            elif isinstance(ev, h2.events.StreamEnded):
                out.append(ResponseEnded(ev.stream_id))
            elif isinstance(ev, h2.events.StreamReset):
                out.append(StreamReset(ev.stream_id, int(ev.error_code or 0)))
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.phase = Phase.CLOSED
                out.append(ConnectionClosed(f"server sent GOAWAY (error {ev.error_code})"))
        return out
