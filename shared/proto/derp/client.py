"""The client side of one DERP connection, sans-IO: HTTP upgrade, login, frames.

Flow (ts:derp/derp_client.go, ts:derp/derphttp/derphttp_client.go)::

    c -> s   GET /derp HTTP/1.1 | Host | Upgrade: DERP | Connection: Upgrade   (h11)
    s -> c   HTTP/1.1 101 Switching Protocols (Headscale adds Derp-Version and
             Derp-Public-Key); the DERP frames follow at once, often in the same
             TCP segment: bytes after the 101 head go to the frame decoder
    s -> c   ServerKey    magic | server key
    c -> s   ClientInfo   our node pubkey | nonce | box(JSON), sealed with our LONG-TERM
                          node private key to the server key (the server checks that the
                          node key is a registered node; Headscale: ``verify_clients``)
    c -> s   anything we queued meanwhile (NotePreferred, SendPacket...): like upstream we
             do not wait for ServerInfo before writing
    s -> c   ServerInfo   nonce | box(JSON {"version":2}) from the server key to ours
             -> `Connected`
    then     RecvPacket / KeepAlive / Ping (we answer with a Pong at once) / Pong /
             PeerGone / PeerPresent / Health / Restarting

Use: ``core = DerpClientCore(node_private, nonce=os.urandom(24))``; send
``core.upgrade_request(host)`` (skip it for a connection that starts with frames); feed
every received byte to ``core.receive_data(data)`` (``b""`` = the server closed) and handle
the events; send ``core.data_to_send()`` after each call. Packets queued before the login
went out wait in a buffer of at most `MAX_EARLY_BYTES` (more are dropped, counted in
``dropped``).

Errors. Whatever the server sends never raises: a broken upgrade, a bad greeting, a
ServerInfo we cannot open or parse, or an oversize frame ends the connection with a
`Closed` event (later input is ignored; reconnect). A known frame too short to parse is a
`Dropped` event (count it and go on); frame types we do not know, and client-only types,
are skipped (counted in ``skipped``) so newer servers keep working. Misuse by our own code
(a key that is not 32 bytes, an oversize packet) raises ValueError.

Owned by the derp service's connection to one region (one core per TCP connection).
"""

from __future__ import annotations

import ipaddress
import json
import struct
from enum import Enum

import h11
import nacl.exceptions
from nacl.public import Box, PrivateKey, PublicKey

from ..upgrade import Refused, Upgrade
from .events import (
    Closed,
    Connected,
    Dropped,
    Event,
    Health,
    KeepAlive,
    PeerGone,
    PeerPresent,
    Ping,
    Pong,
    Received,
    Restarting,
)
from .frames import (
    KEY_LEN,
    MAGIC,
    NONCE_LEN,
    PROTOCOL_VERSION,
    FrameDecoder,
    FrameType,
    encode_frame,
    note_preferred_frame,
    ping_frame,
    pong_frame,
    send_packet_frame,
)

__all__ = ["MAX_EARLY_BYTES", "DerpClientCore", "Phase", "client_info_json"]

UPGRADE_PATH = "/derp"
MAX_EARLY_BYTES = 256 << 10
BOX_OVERHEAD = 16  # Poly1305 tag
PEER_GONE_DISCONNECTED = 0x00
PEER_GONE_NOT_HERE = 0x01


class Phase(Enum):
    UPGRADE = "upgrade"
    SERVER_KEY = "server_key"
    SERVER_INFO = "server_info"
    CONNECTED = "connected"
    CLOSED = "closed"


def client_info_json(can_ack_pings: bool) -> bytes:
    """ClientInfo as Go's json.Marshal writes it (meshKey and IsProber omitted when empty)."""
    return json.dumps({"version": PROTOCOL_VERSION, "CanAckPings": can_ack_pings}, separators=(",", ":")).encode()


class DerpClientCore:
    """One client connection. ``node_private``: our long-term node (= WireGuard) private key,
    which seals ClientInfo; ``nonce``: 24 random bytes for that box (randomness comes from
    the caller). Phases: UPGRADE (only after `upgrade_request`) -> SERVER_KEY ->
    SERVER_INFO (ClientInfo sent) -> CONNECTED; any of them -> CLOSED."""

    def __init__(self, node_private: bytes, *, nonce: bytes, can_ack_pings: bool = True) -> None:
        if len(node_private) != KEY_LEN:
            raise ValueError(f"a node private key is {KEY_LEN} bytes")
        if len(nonce) != NONCE_LEN:
            raise ValueError(f"the ClientInfo nonce is {NONCE_LEN} bytes")
        self._private = PrivateKey(node_private)
        self.public_key = bytes(self._private.public_key)
        self._nonce = nonce
        self.can_ack_pings = can_ack_pings
        self.phase = Phase.SERVER_KEY
        self.server_key: bytes | None = None
        self.close_reason: str | None = None
        self._box: Box | None = None
        self._upgrade: Upgrade | None = None
        self._decoder = FrameDecoder()
        self._out = bytearray()
        self._early: list[bytes] = []
        self._early_bytes = 0
        self.dropped = 0
        """Frames we were asked to send but dropped (early buffer full, or closed)."""
        self.skipped = 0
        """Frames of unknown or unexpected types skipped."""

    # -- state --------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.phase is Phase.CONNECTED

    @property
    def closed(self) -> bool:
        return self.phase is Phase.CLOSED

    @property
    def bytes_queued(self) -> int:
        """Bytes waiting in the core: not yet taken by `data_to_send`, or not yet sendable."""
        return len(self._out) + self._early_bytes

    # -- output -------------------------------------------------------------------------

    def upgrade_request(self, host: str) -> bytes:
        """The HTTP request that upgrades a fresh connection to DERP (call it first)."""
        if self.phase is not Phase.SERVER_KEY or self._upgrade is not None:
            raise RuntimeError("upgrade_request() must come before any input")
        self.phase = Phase.UPGRADE
        self._upgrade = Upgrade(h11.Request(method="GET", target=UPGRADE_PATH, headers=[
            ("Host", host), ("Upgrade", "DERP"), ("Connection", "Upgrade"),
        ]))
        return self._upgrade.bytes_to_send()

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def send_packet(self, dst_key: bytes, packet: bytes) -> None:
        """Queue ``packet`` for the node ``dst_key`` (at most 64 KiB)."""
        self._queue(send_packet_frame(dst_key, packet))

    def note_preferred(self, preferred: bool) -> None:
        """Tell the server whether it is our home region (only used for its stats)."""
        self._queue(note_preferred_frame(preferred))

    def ping(self, data: bytes) -> None:
        """Ping the server with 8 bytes; a `Pong` with the same bytes answers."""
        self._queue(ping_frame(data))

    def _queue(self, frame: bytes) -> None:
        if self.phase is Phase.CLOSED:
            self.dropped += 1
        elif self.phase in (Phase.SERVER_INFO, Phase.CONNECTED):
            self._out += frame
        elif self._early_bytes + len(frame) > MAX_EARLY_BYTES:
            self.dropped += 1
        else:
            self._early.append(frame)
            self._early_bytes += len(frame)

    # -- input --------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes from the server; ``b""`` means it closed the connection."""
        if self.phase is Phase.CLOSED:
            return []
        if self.phase is Phase.UPGRADE:
            return self._receive_upgrade(data)
        if not data:
            return [self._close("server closed the connection")]
        return self._receive_frames(data)

    def _close(self, reason: str) -> Closed:
        self.phase = Phase.CLOSED
        self.close_reason = reason
        self._early.clear()
        self._early_bytes = 0
        return Closed(reason)

    def _receive_upgrade(self, data: bytes) -> list[Event]:
        assert self._upgrade is not None
        try:
            answer = self._upgrade.receive(data)
        except h11.RemoteProtocolError as exc:
            return [self._close(f"bad HTTP answer to the DERP upgrade: {exc}")]
        if answer is None:
            return []
        if isinstance(answer, Refused):
            return [self._close(answer.describe("DERP upgrade"))]
        self.phase = Phase.SERVER_KEY
        return self._receive_frames(answer.leftover) if answer.leftover else []

    def _receive_frames(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        for frame_type, payload in self._decoder.feed(data):
            ev = self._on_frame(frame_type, payload)
            if ev is not None:
                events.append(ev)
            if self.phase is Phase.CLOSED:
                return events
        if self._decoder.error is not None:
            events.append(self._close(str(self._decoder.error)))
        return events

    def _on_frame(self, t: int, b: bytes) -> Event | None:
        if self.phase is Phase.SERVER_KEY:
            return self._on_server_key(t, b)
        if t == FrameType.SERVER_INFO:
            return self._on_server_info(b)
        if t == FrameType.RECV_PACKET:
            if len(b) < KEY_LEN:
                return Dropped(t, f"RecvPacket of {len(b)} bytes is shorter than a key")
            return Received(b[:KEY_LEN], b[KEY_LEN:])
        if t == FrameType.KEEP_ALIVE:
            return KeepAlive()
        if t == FrameType.PING:
            if len(b) < 8:
                return Dropped(t, f"Ping of {len(b)} bytes (want 8)")
            self._out += pong_frame(b[:8])
            return Ping(b[:8])
        if t == FrameType.PONG:
            if len(b) < 8:
                return Dropped(t, f"Pong of {len(b)} bytes (want 8)")
            return Pong(b[:8])
        if t == FrameType.PEER_GONE:
            if len(b) < KEY_LEN:
                return Dropped(t, f"PeerGone of {len(b)} bytes is shorter than a key")
            return PeerGone(b[:KEY_LEN], b[KEY_LEN] if len(b) > KEY_LEN else PEER_GONE_DISCONNECTED)
        if t == FrameType.PEER_PRESENT:
            return _peer_present(b)
        if t == FrameType.HEALTH:
            return Health(b.decode(errors="replace"))
        if t == FrameType.RESTARTING:
            if len(b) < 8:
                return Dropped(t, f"Restarting of {len(b)} bytes (want 8)")
            reconnect_ms, try_ms = struct.unpack_from(">II", b)
            return Restarting(reconnect_ms / 1000.0, try_ms / 1000.0)
        self.skipped += 1  # unknown, mesh-only or client-to-server types: forward compatible
        return None

    def _on_server_key(self, t: int, b: bytes) -> Event | None:
        if t != FrameType.SERVER_KEY or len(b) < len(MAGIC) + KEY_LEN or not b.startswith(MAGIC):
            return self._close(f"invalid server greeting (frame type 0x{t:02x}, {len(b)} bytes)")
        server_key = b[len(MAGIC):len(MAGIC) + KEY_LEN]
        try:
            self._box = Box(self._private, PublicKey(server_key))
        except nacl.exceptions.CryptoError:
            return self._close(f"unusable server key {server_key.hex()}")
        self.server_key = server_key
        sealed = self._box.encrypt(client_info_json(self.can_ack_pings), self._nonce)
        self._out += encode_frame(FrameType.CLIENT_INFO, self.public_key + bytes(sealed))
        for frame in self._early:
            self._out += frame
        self._early.clear()
        self._early_bytes = 0
        self.phase = Phase.SERVER_INFO
        return None

    def _on_server_info(self, b: bytes) -> Event | None:
        if self.phase is not Phase.SERVER_INFO:
            self.skipped += 1
            return None
        assert self._box is not None and self.server_key is not None
        if len(b) < NONCE_LEN + BOX_OVERHEAD:
            return self._close(f"short ServerInfo ({len(b)} bytes)")
        try:
            info = json.loads(self._box.decrypt(b))
        except nacl.exceptions.CryptoError:
            return self._close("ServerInfo box does not open with our node key and the server key")
        except (ValueError, RecursionError):
            return self._close("ServerInfo is not JSON")
        if not isinstance(info, dict):
            return self._close("ServerInfo is not a JSON object")
        self.phase = Phase.CONNECTED
        return Connected(self.server_key, _int(info.get("version")), _int(info.get("TokenBucketBytesPerSecond")),
                         _int(info.get("TokenBucketBytesBurst")))


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _peer_present(b: bytes) -> Event:
    if len(b) < KEY_LEN:
        return Dropped(FrameType.PEER_PRESENT, f"PeerPresent of {len(b)} bytes is shorter than a key")
    key, rest = b[:KEY_LEN], b[KEY_LEN:]
    if len(rest) < 18:
        return PeerPresent(key)  # older servers send the key only
    ip = ipaddress.IPv6Address(rest[:16])
    port = int.from_bytes(rest[16:18], "big")
    addr = f"{ip.ipv4_mapped}:{port}" if ip.ipv4_mapped else f"[{ip}]:{port}"
    return PeerPresent(key, addr, rest[18] if len(rest) > 18 else 0)
