"""DERP framing, sans-IO: frame types, encoders and the stream decoder.

Wire layout (ts:derp/derp.go; every integer big-endian)::

    +---------+----------------+---------------------------+
    | type u8 | length u32 BE  | payload: `length` bytes   |
    +---------+----------------+---------------------------+

    01 ServerKey      s->c  magic "DERP🔑" (44 45 52 50 f0 9f 94 91) | server pubkey(32)
                            [| future bytes, ignored]
    02 ClientInfo     c->s  our node pubkey(32) | nonce(24) | box(JSON)
                            box = NaCl crypto_box(our node priv, server pub, nonce);
                            nonce|box is exactly PyNaCl ``Box.encrypt`` output
    03 ServerInfo     s->c  nonce(24) | box(JSON {"version":2,...}), server priv -> our pub
    04 SendPacket     c->s  dst pubkey(32) | packet
    05 RecvPacket     s->c  src pubkey(32) | packet                      (protocol v2)
    06 KeepAlive      s->c  (empty; ignore any payload)
    07 NotePreferred  c->s  01 = this is our home region, 00 = it is not
    08 PeerGone       s->c  pubkey(32) [| reason u8: 00 disconnected, 01 not here]
    09 PeerPresent    s->c  pubkey(32) [| ip(16, v4-mapped) | port u16 [| flags u8]]
    0a ForwardPacket  mesh  src(32) | dst(32) | packet        (server-to-server only)
    10 WatchConns     mesh  (empty)
    11 ClosePeer      mesh  pubkey(32)
    12 Ping           both  8 opaque bytes, echoed back in a Pong
    13 Pong           both  the 8 bytes of the Ping answered
    14 Health         s->c  UTF-8 text of the problem; empty = healthy again
    15 Restarting     s->c  reconnect_in ms u32 | try_for ms u32

Limits: a packet is at most `MAX_PACKET_SIZE` (64 KiB) bytes. The decoder refuses a
length field over `MAX_FRAME_LEN` (a packet plus 1 KiB of slack for keys and headers; the
largest frame a real server sends is RecvPacket = 32 + 64 KiB) as soon as the 5 header
bytes are in: the stream's framing is then lost, the decoder's ``error`` is set and it
takes no more input (close the connection). Upstream's client tolerates up to 1 MiB;
nothing it receives in practice comes close to our bound.
"""

from __future__ import annotations

import struct
from enum import IntEnum

__all__ = [
    "HEADER_LEN",
    "KEY_LEN",
    "MAGIC",
    "MAX_FRAME_LEN",
    "MAX_PACKET_SIZE",
    "NONCE_LEN",
    "PROTOCOL_VERSION",
    "DerpProtocolError",
    "FrameDecoder",
    "FrameTooLarge",
    "FrameType",
    "encode_frame",
    "note_preferred_frame",
    "ping_frame",
    "pong_frame",
    "send_packet_frame",
]

MAGIC = "DERP🔑".encode()
assert len(MAGIC) == 8
PROTOCOL_VERSION = 2
KEY_LEN = 32
NONCE_LEN = 24
HEADER_LEN = 5
MAX_PACKET_SIZE = 64 << 10
MAX_FRAME_LEN = MAX_PACKET_SIZE + 1024
_HEADER = struct.Struct(">BI")


class FrameType(IntEnum):
    SERVER_KEY = 0x01
    CLIENT_INFO = 0x02
    SERVER_INFO = 0x03
    SEND_PACKET = 0x04
    RECV_PACKET = 0x05
    KEEP_ALIVE = 0x06
    NOTE_PREFERRED = 0x07
    PEER_GONE = 0x08
    PEER_PRESENT = 0x09
    FORWARD_PACKET = 0x0A
    WATCH_CONNS = 0x10
    CLOSE_PEER = 0x11
    PING = 0x12
    PONG = 0x13
    HEALTH = 0x14
    RESTARTING = 0x15


class DerpProtocolError(Exception):
    """The server (or something between) broke the DERP protocol: the connection is unusable."""


class FrameTooLarge(DerpProtocolError):
    """A frame header announced more than `MAX_FRAME_LEN` bytes."""


def encode_frame(frame_type: int, payload: bytes = b"") -> bytes:
    """``type | u32 BE len | payload``. Raises ValueError for a payload over `MAX_FRAME_LEN`
    (our bug: callers check their own sizes first)."""
    if len(payload) > MAX_FRAME_LEN:
        raise ValueError(f"DERP frame payload of {len(payload)} bytes exceeds {MAX_FRAME_LEN}")
    return _HEADER.pack(frame_type, len(payload)) + payload


def send_packet_frame(dst_key: bytes, packet: bytes) -> bytes:
    if len(dst_key) != KEY_LEN:
        raise ValueError(f"a DERP destination key is {KEY_LEN} bytes, got {len(dst_key)}")
    if len(packet) > MAX_PACKET_SIZE:
        raise ValueError(f"DERP packet of {len(packet)} bytes exceeds {MAX_PACKET_SIZE}")
    return _HEADER.pack(FrameType.SEND_PACKET, KEY_LEN + len(packet)) + dst_key + packet


def ping_frame(data: bytes) -> bytes:
    if len(data) != 8:
        raise ValueError("a DERP ping carries exactly 8 bytes")
    return encode_frame(FrameType.PING, data)


def pong_frame(data: bytes) -> bytes:
    if len(data) != 8:
        raise ValueError("a DERP pong carries exactly 8 bytes")
    return encode_frame(FrameType.PONG, data)


def note_preferred_frame(preferred: bool) -> bytes:
    return encode_frame(FrameType.NOTE_PREFERRED, b"\x01" if preferred else b"\x00")


class FrameDecoder:
    """Splits a byte stream into ``(type, payload)`` frames.

    ``feed(data)`` accepts any split (whole frames, one byte at a time, several frames per
    chunk) and returns the frames it completed, in order. A length field over the limit
    sets ``error`` (a `FrameTooLarge`); the frames completed before it are still returned,
    and from then on ``feed`` returns nothing: the stream is unusable. Owned by one
    `DerpClientCore`.
    """

    def __init__(self, max_frame_len: int = MAX_FRAME_LEN) -> None:
        self.max_frame_len = max_frame_len
        self._buf = bytearray()
        self.error: FrameTooLarge | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        if self.error is not None:
            return []
        self._buf += data
        frames: list[tuple[int, bytes]] = []
        buf, pos = self._buf, 0
        while len(buf) - pos >= HEADER_LEN:
            frame_type, length = _HEADER.unpack_from(buf, pos)
            if length > self.max_frame_len:
                self.error = FrameTooLarge(f"frame type 0x{frame_type:02x} announces {length} bytes "
                                           f"(limit {self.max_frame_len})")
                buf.clear()
                return frames
            end = pos + HEADER_LEN + length
            if len(buf) < end:
                break
            frames.append((frame_type, bytes(buf[pos + HEADER_LEN:end])))
            pos = end
        del buf[:pos]
        return frames
