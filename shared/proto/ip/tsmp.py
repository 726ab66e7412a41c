"""TSMP, the Tailscale Message Protocol: IP protocol 99 inside WireGuard, sans-IO.

Layouts after the IP header (ts:net/packet/tsmp.go); TSMP has no checksum of its own::

    ping    'p' (0x70) | data (8)                  TSMPPingRequest; bytes past 9 ignored
    pong    'o' (0x6f) | data (8) | peerapi port (u16 BE)
                                                   TSMPPongReply; a 9-byte pong (no port)
                                                   is accepted, port 0
    reject  '!' (0x21) | proto (1) | reason (1) | src port (u16 BE) | dst port (u16 BE)
            [| flags (1), bit 0x1 = MaybeBroken]   TailscaleRejectedHeader; reason 'A' ACL,
                                                   'S' shields up, 'F' no IP forwarding,
                                                   'W' host firewall
    disco   'a' (0x61) | disco public key (32)     TSMPDiscoKeyAdvertisement

How tailscaled uses them: ``tailscale ping --tsmp`` (ts:wgengine/userspace.go
``sendTSMPPing``) sends a ping from its own address of the target's family with 8 random
data bytes, plus a disco advertisement, and accepts a pong whose data matches
(``OnTSMPPongReceived``, any source). It answers a ping (ts:net/tstun/wrap.go
``injectOutboundPong``) with the request's IP header turned around
(``IP4Header.ToResponse``: addresses swapped, IP ID bit-flipped; IPv6: the flow label
bit-flipped), TTL/hop limit 64, no IPv4 options or flags, and its peerapi port for the
pinged address (0 if none: we run no peerapi).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from .headers import PROTO_TSMP, IPPacket, Malformed, build_ip, response_ident

__all__ = [
    "TSMP_DISCO_ADVERT",
    "TSMP_PING",
    "TSMP_PONG",
    "TSMP_REJECTED",
    "TsmpDiscoAdvert",
    "TsmpMessage",
    "TsmpPing",
    "TsmpPong",
    "TsmpRejected",
    "build_tsmp_ping",
    "build_tsmp_pong",
    "parse_tsmp",
    "pong_to",
]

TSMP_REJECTED = ord("!")
TSMP_PING = ord("p")
TSMP_PONG = ord("o")
TSMP_DISCO_ADVERT = ord("a")
DATA_BYTES = 8


class TsmpPing(NamedTuple):
    data: bytes


class TsmpPong(NamedTuple):
    data: bytes
    peerapi_port: int = 0


class TsmpRejected(NamedTuple):
    proto: int
    reason: int
    src_port: int
    dst_port: int
    maybe_broken: bool = False


class TsmpDiscoAdvert(NamedTuple):
    key: bytes


TsmpMessage = TsmpPing | TsmpPong | TsmpRejected | TsmpDiscoAdvert


def parse_tsmp(payload: bytes) -> TsmpMessage:
    """The TSMP message in an IP payload; `Malformed` (``tsmp_truncated``,
    ``tsmp_unknown_type``) for anything else. Minimum lengths as upstream's ``As*``."""
    if not payload:
        raise Malformed("tsmp_truncated", "empty")
    kind = payload[0]
    if kind == TSMP_PING:
        _need(payload, 1 + DATA_BYTES, "ping")
        return TsmpPing(payload[1 : 1 + DATA_BYTES])
    if kind == TSMP_PONG:
        _need(payload, 1 + DATA_BYTES, "pong")
        port = struct.unpack_from("!H", payload, 9)[0] if len(payload) >= 11 else 0
        return TsmpPong(payload[1 : 1 + DATA_BYTES], port)
    if kind == TSMP_REJECTED:
        _need(payload, 7, "reject")
        proto, reason, sport, dport = struct.unpack_from("!BBHH", payload, 1)
        return TsmpRejected(proto, reason, sport, dport, len(payload) > 7 and bool(payload[7] & 1))
    if kind == TSMP_DISCO_ADVERT:
        _need(payload, 33, "disco advertisement")
        return TsmpDiscoAdvert(payload[1:33])
    raise Malformed("tsmp_unknown_type", f"type 0x{kind:02x}")


def _need(payload: bytes, n: int, what: str) -> None:
    if len(payload) < n:
        raise Malformed("tsmp_truncated", f"{what} of {len(payload)} bytes, need {n}")


def build_tsmp_ping(src: bytes, dst: bytes, data: bytes, *, ip_ident: int = 0) -> bytes:
    """A TSMP ping as ``sendTSMPPing`` builds it (IP ID 0 there)."""
    if len(data) != DATA_BYTES:
        raise ValueError("TSMP ping data is 8 bytes")
    return build_ip(src, dst, PROTO_TSMP, bytes([TSMP_PING]) + data, ident=ip_ident)


def build_tsmp_pong(src: bytes, dst: bytes, data: bytes, peerapi_port: int = 0, *, ip_ident: int = 0) -> bytes:
    if len(data) != DATA_BYTES:
        raise ValueError("TSMP pong data is 8 bytes")
    body = bytes([TSMP_PONG]) + data + struct.pack("!H", peerapi_port)
    return build_ip(src, dst, PROTO_TSMP, body, ident=ip_ident)


def pong_to(pkt: IPPacket, ping: TsmpPing, peerapi_port: int = 0) -> bytes:
    """Our pong to ``ping`` carried by ``pkt`` (upstream ``injectOutboundPong``)."""
    return build_tsmp_pong(pkt.dst, pkt.src, ping.data, peerapi_port, ip_ident=response_ident(pkt))
