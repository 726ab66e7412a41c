"""Disco: Tailscale's peer discovery messages (ts:disco/disco.go), sans-IO.

Packet (one UDP datagram, or one DERP packet)::

    magic          6 B   "TS💬" = 54 53 f0 9f 92 ac
    sender disco   32 B  the sender's disco public key (Curve25519)
    nonce          24 B
    box            NaCl box (XSalsa20-Poly1305, 16 B tag first) of the payload, between
                   the sender's disco private key and the receiver's disco public key

Payload (inside the box)::

    type 1 B | version 1 B (0; receivers ignore it and any trailing bytes) | body

    01 Ping         txid 12 | sender node key 32 (omitted by clients <= 1.16) | padding
                    (zero bytes, path MTU probing)
    02 Pong         txid 12 | src addr 16 (IPv4 as v4-mapped IPv6) | src port u16 BE
                    src = where the pinged node saw the ping come from (a STUN answer)
    03 CallMeMaybe  N x (addr 16 | port u16 BE): the sender's endpoints; upstream reads
                    a body whose length is not a multiple of 18 (or version != 0) as
                    an empty list, and so do we

Types 04..09 (UDP relay handshakes) are not supported: `DiscoError` ("unknown_type").

A ping received via DERP is answered via DERP with Pong.src = ``127.3.3.40:<region>``
(tailcfg.DerpMagicIP, port = DERP region), as magicsock's handlePingLocked does.

API: `looks_like_disco`, `seal`, `open_packet`, `parse`, and `DiscoBoxes` (precomputed
shared keys per peer, for the service's hot path). Every malformed input raises
`DiscoError` (with a short ``reason`` for counters) and nothing else; encoding a message
with out-of-range fields raises ValueError (our bug). Addresses are text, as on the
data-plane sockets: ``"1.2.3.4:41641"``, ``"[fd00::1]:41641"``. The header and the
addresses live in discohead.py (no PyNaCl there), re-exported here.
"""

from __future__ import annotations

import ipaddress
import struct

import msgspec
from nacl.exceptions import CryptoError
from nacl.public import Box, PrivateKey, PublicKey

from .discohead import (
    HEADER_LEN,
    KEY_LEN,
    MAGIC,
    NONCE_LEN,
    format_addr_port,
    looks_like_disco,
    parse_addr_port,
    sender_key,
)

__all__ = [
    "DERP_MAGIC_IP",
    "HEADER_LEN",
    "MAGIC",
    "NONCE_LEN",
    "CallMeMaybe",
    "DiscoBoxes",
    "DiscoError",
    "Message",
    "Ping",
    "Pong",
    "derp_src",
    "format_addr_port",
    "looks_like_disco",
    "open_packet",
    "pack_addr_port",
    "parse",
    "parse_addr_port",
    "seal",
]

BOX_OVERHEAD = 16
TXID_LEN = 12
EP_LEN = 16 + 2
MIN_PACKET_LEN = HEADER_LEN + BOX_OVERHEAD + 2

TYPE_PING = 0x01
TYPE_PONG = 0x02
TYPE_CALL_ME_MAYBE = 0x03
VERSION = 0

DERP_MAGIC_IP = "127.3.3.40"
_V4_MAPPED_PREFIX = b"\x00" * 10 + b"\xff\xff"


class DiscoError(ValueError):
    """A packet is not a disco message we can read (a counted drop)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        """Short snake_case cause: short, bad_magic, bad_key, bad_box, unknown_type."""


# -- addresses ------------------------------------------------------------------------

def pack_addr_port(text: str) -> bytes:
    """18 wire bytes: 16-byte address (IPv4 v4-mapped, zone dropped) + u16 BE port."""
    addr, port = parse_addr_port(text)
    raw = addr.packed if addr.version == 6 else _V4_MAPPED_PREFIX + addr.packed
    return raw + struct.pack(">H", port)


def _unpack_addr_port(raw: bytes) -> str:
    return format_addr_port(ipaddress.IPv6Address(raw[:16]), int.from_bytes(raw[16:18], "big"))


def derp_src(region: int) -> str:
    """The Pong.src for a ping that arrived via DERP region ``region``."""
    return f"{DERP_MAGIC_IP}:{region}"


# -- messages -------------------------------------------------------------------------

class Ping(msgspec.Struct, frozen=True):
    """A probe; the receiver answers with a `Pong` carrying the same ``txid``."""

    txid: bytes
    """12 random bytes chosen by the sender."""
    node_key: bytes | None = None
    """The sender's node (WireGuard) public key, 32 bytes; None if absent (old clients).
    An all-zero key is "absent" too, as upstream's ``key.NodePublic.IsZero``."""
    padding: int = 0
    """Zero bytes after the body (upstream probes path MTU with it)."""

    def encode(self) -> bytes:
        if len(self.txid) != TXID_LEN or (self.node_key is not None and len(self.node_key) != KEY_LEN):
            raise ValueError("Ping needs a 12-byte txid and a 32-byte node key (or None)")
        if self.padding < 0:
            raise ValueError("negative padding")
        key = self.node_key if self.node_key and any(self.node_key) else b""
        return bytes((TYPE_PING, VERSION)) + self.txid + key + bytes(self.padding)

    @classmethod
    def parse(cls, body: bytes) -> Ping:
        if len(body) < TXID_LEN:
            raise DiscoError("short", "ping")
        rest = body[TXID_LEN:]
        if len(rest) >= KEY_LEN:
            key = rest[:KEY_LEN]
            return cls(body[:TXID_LEN], key if any(key) else None, len(rest) - KEY_LEN)
        return cls(body[:TXID_LEN], None, len(rest))


class Pong(msgspec.Struct, frozen=True):
    """The answer to a `Ping`: the ping's ``txid`` and the address it came from."""

    txid: bytes
    src: str
    """``"ip:port"`` / ``"[v6]:port"`` as the pinged node saw the ping's source."""

    def encode(self) -> bytes:
        if len(self.txid) != TXID_LEN:
            raise ValueError("Pong needs a 12-byte txid")
        return bytes((TYPE_PONG, VERSION)) + self.txid + pack_addr_port(self.src)

    @classmethod
    def parse(cls, body: bytes) -> Pong:
        if len(body) < TXID_LEN + EP_LEN:
            raise DiscoError("short", "pong")
        return cls(body[:TXID_LEN], _unpack_addr_port(body[TXID_LEN:TXID_LEN + EP_LEN]))


class CallMeMaybe(msgspec.Struct, frozen=True):
    """Sent via DERP: "ping me at these endpoints" (the sender's ``ip:port`` list)."""

    endpoints: tuple[str, ...] = ()

    def encode(self) -> bytes:
        return bytes((TYPE_CALL_ME_MAYBE, VERSION)) + b"".join(pack_addr_port(e) for e in self.endpoints)

    @classmethod
    def parse(cls, body: bytes, version: int = VERSION) -> CallMeMaybe:
        if not body or len(body) % EP_LEN or version != VERSION:
            return cls()
        return cls(tuple(_unpack_addr_port(body[i:i + EP_LEN]) for i in range(0, len(body), EP_LEN)))


Message = Ping | Pong | CallMeMaybe


def parse(payload: bytes) -> Message:
    """A decrypted payload (type | version | body) -> its message."""
    if len(payload) < 2:
        raise DiscoError("short", "no message header")
    kind, version, body = payload[0], payload[1], bytes(payload[2:])
    if kind == TYPE_PING:
        return Ping.parse(body)
    if kind == TYPE_PONG:
        return Pong.parse(body)
    if kind == TYPE_CALL_ME_MAYBE:
        return CallMeMaybe.parse(body, version)
    raise DiscoError("unknown_type", f"0x{kind:02x}")


# -- packets --------------------------------------------------------------------------

def _box(our_priv: bytes, peer_pub: bytes) -> Box:
    try:
        return Box(PrivateKey(bytes(our_priv)), PublicKey(bytes(peer_pub)))
    except CryptoError as exc:  # a low-order point gives an all-zero shared key
        raise DiscoError("bad_key", str(exc)) from None


def _seal(box: Box, our_pub: bytes, msg: Message, nonce: bytes) -> bytes:
    if len(nonce) != NONCE_LEN:
        raise ValueError(f"nonce must be {NONCE_LEN} bytes")
    return MAGIC + our_pub + nonce + box.encrypt(msg.encode(), nonce).ciphertext


def _open(box: Box, pkt: bytes) -> Message:
    try:
        payload = box.decrypt(bytes(pkt[HEADER_LEN:]), bytes(pkt[HEADER_LEN - NONCE_LEN:HEADER_LEN]))
    except CryptoError:
        raise DiscoError("bad_box", "cannot open (wrong recipient or corrupted)") from None
    return parse(payload)


def _check_header(pkt: bytes) -> None:
    if len(pkt) < len(MAGIC) or pkt[:len(MAGIC)] != MAGIC:
        raise DiscoError("bad_magic")
    if len(pkt) < MIN_PACKET_LEN:
        raise DiscoError("short", f"{len(pkt)} bytes")


def seal(our_priv: bytes, peer_pub: bytes, msg: Message, nonce: bytes) -> bytes:
    """The packet carrying ``msg`` from us (``our_priv``) to ``peer_pub``."""
    our_pub = PrivateKey(bytes(our_priv)).public_key.encode()
    return _seal(_box(our_priv, peer_pub), our_pub, msg, nonce)


def open_packet(our_priv: bytes, pkt: bytes) -> tuple[bytes, Message]:
    """(sender disco public key, message) of a packet sealed to us; `DiscoError` if not."""
    _check_header(pkt)
    sender = sender_key(pkt)
    return sender, _open(_box(our_priv, sender), pkt)


class DiscoBoxes:
    """`seal`/`open_packet` for one private key, with the per-peer shared key (one
    Curve25519 multiplication, ~35 µs) cached for the last ``max_peers`` peers.

    Ownership: the thread of the service that made it (the udp service's loop)."""

    def __init__(self, our_priv: bytes, *, max_peers: int = 4096) -> None:
        self._priv = bytes(our_priv)
        self.public = PrivateKey(self._priv).public_key.encode()
        self._max = max_peers
        self._boxes: dict[bytes, Box] = {}  # insertion order = age; oldest evicted

    def box(self, peer_pub: bytes) -> Box:
        box = self._boxes.get(peer_pub)
        if box is None:
            box = _box(self._priv, peer_pub)
            if len(self._boxes) >= self._max:
                del self._boxes[next(iter(self._boxes))]
            self._boxes[bytes(peer_pub)] = box
        return box

    def seal(self, peer_pub: bytes, msg: Message, nonce: bytes) -> bytes:
        return _seal(self.box(peer_pub), self.public, msg, nonce)

    def open(self, pkt: bytes) -> tuple[bytes, Message]:
        _check_header(pkt)
        sender = sender_key(pkt)
        return sender, _open(self.box(sender), pkt)
