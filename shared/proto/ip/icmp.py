"""ICMP and ICMPv6 echo request / reply, sans-IO.

Echo message after the IP header (RFC 792 "Echo or Echo Reply Message"; RFC 4443 4.1/4.2)::

    0      1      2      3
    +------+------+-------------+
    | type | code |  checksum   |   IPv4: request 8, reply 0; IPv6: request 128, reply 129
    +------+------+-------------+   code 0
    |  identifier |  sequence   |   u16 big-endian each
    +-------------+-------------+
    | data ...                  |   echoed unchanged in the reply
    +---------------------------+

Checksum: ICMPv4 over the ICMP message alone; ICMPv6 over the IPv6 pseudo-header
(src, dst, u32 length, 3 zero bytes, next header 58) and then the message.

How tailscaled uses it (ts:wgengine/userspace.go ``sendICMPEchoRequest``,
ts:net/packet/icmp.go ``ICMPEchoPayload``): ``tailscale ping --icmp`` sends a request with
4 random bytes as identifier+sequence and no data, and matches the reply only by those
4 bytes (``Parsed.EchoIDSeq``, read little-endian) on any reply of type 0/129 code 0 with
at least 8 bytes of ICMP. Its replies (``ICMP4Header.ToResponse``) swap the addresses,
flip the bits of the IP ID / flow label and keep TTL 64: `echo_reply_to` does the same,
so our reply to its request is byte-for-byte what tailscaled itself would send.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import NamedTuple

from .headers import (
    DEFAULT_TTL,
    PROTO_ICMP,
    PROTO_ICMPV6,
    IPPacket,
    Malformed,
    addr_bytes,
    addr_text,
    build_ip,
    checksum,
    parse,
    pseudo_header_sum,
    response_ident,
)

__all__ = [
    "ECHO_REPLY_V4",
    "ECHO_REPLY_V6",
    "ECHO_REQUEST_V4",
    "ECHO_REQUEST_V6",
    "Echo",
    "IcmpMessage",
    "build_echo",
    "build_echo_request",
    "echo_reply_to",
    "parse_echo",
    "parse_echo_reply",
    "parse_icmp",
]

ECHO_REPLY_V4 = 0
ECHO_REQUEST_V4 = 8
ECHO_REQUEST_V6 = 128
ECHO_REPLY_V6 = 129
ICMP_HEADER = 4
ECHO_HEADER = 8

_ECHO = struct.Struct("!BBHHH")


class IcmpMessage(NamedTuple):
    """An ICMP(v6) message with a verified checksum."""

    type: int
    code: int
    body: bytes
    """Everything after type, code and checksum."""


class Echo(NamedTuple):
    request: bool
    ident: int
    seq: int
    data: bytes


def _icmp_sum(pkt_version: int, src: bytes, dst: bytes, message: bytes) -> int:
    """The checksum of ``message`` (its checksum field zero or already set)."""
    if pkt_version == 4:
        return checksum(message)
    return checksum(message, pseudo_header_sum(src, dst, PROTO_ICMPV6, len(message)))


def parse_icmp(pkt: IPPacket) -> IcmpMessage:
    """The ICMP message of ``pkt`` (proto 1 over IPv4 or 58 over IPv6), checksum verified.

    Raises `Malformed` (``truncated_icmp``, ``bad_icmp_checksum``, ``icmp_wrong_family``)."""
    expected = PROTO_ICMP if pkt.version == 4 else PROTO_ICMPV6
    if pkt.proto != expected:
        raise Malformed("icmp_wrong_family", f"protocol {pkt.proto} over IPv{pkt.version}")
    message = pkt.payload
    if len(message) < ICMP_HEADER:
        raise Malformed("truncated_icmp", f"{len(message)} bytes")
    if _icmp_sum(pkt.version, pkt.src, pkt.dst, message) != 0:
        raise Malformed("bad_icmp_checksum")
    return IcmpMessage(message[0], message[1], message[ICMP_HEADER:])


def parse_echo(pkt: IPPacket, msg: IcmpMessage | None = None) -> Echo | None:
    """The echo request/reply in ``pkt``; None for any other ICMP type or a non-zero code.

    Raises `Malformed` for a bad checksum or an echo shorter than its 8-byte header."""
    if msg is None:
        msg = parse_icmp(pkt)
    if pkt.version == 4:
        kinds = {ECHO_REQUEST_V4: True, ECHO_REPLY_V4: False}
    else:
        kinds = {ECHO_REQUEST_V6: True, ECHO_REPLY_V6: False}
    request = kinds.get(msg.type)
    if request is None or msg.code != 0:
        return None
    if len(msg.body) < ECHO_HEADER - ICMP_HEADER:
        raise Malformed("truncated_icmp", f"echo of {len(msg.body) + ICMP_HEADER} bytes")
    ident, seq = struct.unpack_from("!HH", msg.body)
    return Echo(request, ident, seq, msg.body[4:])


def build_echo(src: bytes, dst: bytes, ident: int, seq: int, data: bytes = b"", *, reply: bool = False,
               ip_ident: int = 0, ttl: int = DEFAULT_TTL) -> bytes:
    """A whole IPv4/ICMP or IPv6/ICMPv6 echo packet (family by address size)."""
    version = 4 if len(src) == 4 else 6
    if version == 4:
        icmp_type, proto = (ECHO_REPLY_V4 if reply else ECHO_REQUEST_V4), PROTO_ICMP
    else:
        icmp_type, proto = (ECHO_REPLY_V6 if reply else ECHO_REQUEST_V6), PROTO_ICMPV6
    message = _ECHO.pack(icmp_type, 0, 0, ident & 0xFFFF, seq & 0xFFFF) + data
    csum = _icmp_sum(version, src, dst, message)
    message = message[:2] + csum.to_bytes(2, "big") + message[4:]
    return build_ip(src, dst, proto, message, ttl=ttl, ident=ip_ident)


def build_echo_request(src: str | bytes | ipaddress.IPv4Address | ipaddress.IPv6Address,
                       dst: str | bytes | ipaddress.IPv4Address | ipaddress.IPv6Address,
                       ident: int, seq: int, payload: bytes = b"", *, ip_ident: int = 0) -> bytes:
    """An echo request from ``src`` to ``dst`` (text or packed, same family)."""
    s, d = addr_bytes(src), addr_bytes(dst)
    if len(s) != len(d):
        raise ValueError(f"address families differ: {src!r} -> {dst!r}")
    return build_echo(s, d, ident, seq, payload, ip_ident=ip_ident)


def echo_reply_to(pkt: IPPacket, echo: Echo) -> bytes:
    """Our reply to echo request ``echo`` carried by ``pkt``: addresses swapped, ID/flow
    label bit-flipped, identifier, sequence and data echoed, checksums recomputed."""
    return build_echo(pkt.dst, pkt.src, echo.ident, echo.seq, echo.data, reply=True, ip_ident=response_ident(pkt))


def parse_echo_reply(packet: bytes) -> tuple[str, int, int] | None:
    """``(source address, identifier, sequence)`` if ``packet`` is a valid echo reply,
    else None (never raises)."""
    try:
        pkt = parse(packet)
        if pkt.proto not in (PROTO_ICMP, PROTO_ICMPV6):
            return None
        echo = parse_echo(pkt)
    except Malformed:
        return None
    if echo is None or echo.request:
        return None
    return addr_text(pkt.src), echo.ident, echo.seq
