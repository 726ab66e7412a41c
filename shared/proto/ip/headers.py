"""IPv4 / IPv6 headers and the Internet checksum, sans-IO.

IPv4 (RFC 791), 20 bytes without options; all fields big-endian::

    0      1      2      3
    +------+------+-------------+
    |ver|ihl| tos | total length|   ver = 4, ihl = header length / 4 (5 = no options)
    +------+------+-+-----------+
    | identification|flg|frag off|   flg: 0x4000 DF, 0x2000 MF; frag off in 8-byte units
    +------+------+-+-----------+
    | ttl  |proto | hdr checksum|   checksum over the header only
    +------+------+-------------+
    | source address (4)        |
    | destination address (4)   |
    +---------------------------+

IPv6 (RFC 8200), 40 bytes::

    | ver=6 (4 bits) | traffic class (8) | flow label (20) |
    | payload length (u16) | next header (u8) | hop limit (u8) |
    | source address (16) | destination address (16) |

Internet checksum (RFC 1071): the one's-complement of the one's-complement sum of the
data as big-endian 16-bit words (odd length: padded with a zero byte). Because
2**16 == 1 (mod 0xffff), that sum is the data read as one big integer modulo 0xffff
(with 0xffff, not 0, for non-zero data), which CPython computes in C. Upper layers that
use a pseudo-header (TCP, UDP, ICMPv6; RFC 8200 section 8.1, RFC 768) sum
``src | dst | zero | proto | length`` (IPv4) or ``src | dst | u32 length | 3 zero | next
header`` (IPv6) first: `pseudo_header_sum`.

What `parse` accepts: version 4 or 6; bytes past the IP length are trailing padding (the
WireGuard plaintext is padded to 16 bytes) and are cut off. What it refuses, with
`Malformed.reason` as the counter name: ``truncated`` (shorter than its header or its
length field), ``bad_version``, ``bad_ihl``, ``bad_length`` (IPv4 total < header),
``bad_ip_checksum``, ``ipv4_options`` and ``ipv4_fragment`` (we neither reassemble nor
read options), ``ipv6_jumbo``. IPv6 extension headers are not walked: the next header
is reported as the packet's protocol (as upstream's net/packet does), so a fragment
header shows up as an unsupported protocol.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Sequence
from typing import NamedTuple

__all__ = [
    "DEFAULT_TTL",
    "PROTO_ICMP",
    "PROTO_ICMPV6",
    "PROTO_TCP",
    "PROTO_TSMP",
    "PROTO_UDP",
    "IPPacket",
    "Malformed",
    "addr_bytes",
    "addr_text",
    "build_ip",
    "build_ipv4",
    "build_ipv6",
    "checksum",
    "checksum_many",
    "ones_sum",
    "packed_set",
    "parse",
    "pseudo_header_sum",
    "response_ident",
]

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMPV6 = 58
PROTO_TSMP = 99
"""Tailscale Message Protocol: IANA "any private encryption scheme" (ts:types/ipproto)."""

IPV4_HEADER = 20
IPV6_HEADER = 40
DEFAULT_TTL = 64  # what tailscaled's net/packet writes
_MF = 0x2000
_FRAG_OFFSET = 0x1FFF

_V4 = struct.Struct("!BBHHHBBH4s4s")
_V6 = struct.Struct("!IHBB16s16s")


class Malformed(ValueError):
    """A packet we cannot use; ``reason`` is a short counter name."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class IPPacket(NamedTuple):
    """A parsed IP packet; addresses are packed (4 or 16 bytes)."""

    version: int
    src: bytes
    dst: bytes
    proto: int
    """IPv4 protocol or IPv6 next header."""
    ttl: int
    """TTL / hop limit."""
    ident: int
    """IPv4 identification; IPv6 flow label (20 bits)."""
    payload: bytes
    """Everything after the header, up to the IP length."""


# --- checksum ---------------------------------------------------------------------


def ones_sum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The 16-bit one's-complement sum of ``data`` (big-endian words) plus ``initial``.

    Returns 0 only when everything summed is zero. ``data`` of odd length is padded with
    a zero byte, so only the last chunk of a multi-part sum may be odd."""
    n = int.from_bytes(data, "big")
    if len(data) & 1:
        n <<= 8
    total = n + initial
    if total == 0:
        return 0
    s = total % 0xFFFF
    return s if s else 0xFFFF


def checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The Internet checksum of ``data`` (with ``initial``, e.g. a pseudo-header sum).

    Over data that already holds a correct checksum the result is 0."""
    return ~ones_sum(data, initial) & 0xFFFF


def checksum_many(buffers: Sequence[bytes | bytearray | memoryview], initials: Sequence[int] | None = None) -> list[int]:
    """`checksum` of each buffer (with its initial sum): one call per batch, so a
    vectorised version (numpy over a padded 2-D array) can replace this loop later."""
    if initials is None:
        return [checksum(b) for b in buffers]
    if len(initials) != len(buffers):
        raise ValueError("one initial sum per buffer")
    return [checksum(b, i) for b, i in zip(buffers, initials)]


def pseudo_header_sum(src: bytes, dst: bytes, proto: int, length: int) -> int:
    """One's-complement sum of the upper-layer pseudo-header (RFC 768 / RFC 8200 8.1)."""
    if len(src) == 4:
        return ones_sum(src + dst + struct.pack("!BBH", 0, proto, length))
    return ones_sum(src + dst + struct.pack("!IxxxB", length, proto))


# --- addresses --------------------------------------------------------------------


def addr_bytes(addr: str | bytes | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    """Packed address from text (``"100.64.0.5"``, ``"100.64.0.5/32"``), an ipaddress
    object or packed bytes (returned as is)."""
    if isinstance(addr, bytes):
        if len(addr) not in (4, 16):
            raise ValueError(f"packed address must be 4 or 16 bytes, got {len(addr)}")
        return addr
    if isinstance(addr, str):
        return ipaddress.ip_interface(addr).ip.packed
    return addr.packed


def addr_text(addr: bytes) -> str:
    return str(ipaddress.ip_address(addr))


# --- parse / build ----------------------------------------------------------------


def parse(packet: bytes | bytearray | memoryview) -> IPPacket:
    """Parse one IP packet; raise `Malformed` for anything we do not accept."""
    if not packet:
        raise Malformed("truncated", "empty packet")
    version = packet[0] >> 4
    if version == 4:
        return _parse4(bytes(packet))
    if version == 6:
        return _parse6(bytes(packet))
    raise Malformed("bad_version", str(version))


def _parse4(packet: bytes) -> IPPacket:
    if len(packet) < IPV4_HEADER:
        raise Malformed("truncated", f"{len(packet)} bytes, IPv4 header needs 20")
    vihl, _tos, total, ident, frag, ttl, proto, _csum, src, dst = _V4.unpack_from(packet)
    ihl = (vihl & 0x0F) * 4
    if ihl < IPV4_HEADER:
        raise Malformed("bad_ihl", str(ihl))
    if total > len(packet):
        raise Malformed("truncated", f"total length {total}, have {len(packet)}")
    if total < ihl:
        raise Malformed("bad_length", f"total length {total} < header length {ihl}")
    if ones_sum(packet[:ihl]) != 0xFFFF:
        raise Malformed("bad_ip_checksum")
    if ihl != IPV4_HEADER:
        raise Malformed("ipv4_options", f"{ihl - IPV4_HEADER} option bytes")
    if frag & (_MF | _FRAG_OFFSET):
        raise Malformed("ipv4_fragment", f"flags/offset 0x{frag:04x}")
    return IPPacket(4, src, dst, proto, ttl, ident, packet[ihl:total])


def _parse6(packet: bytes) -> IPPacket:
    if len(packet) < IPV6_HEADER:
        raise Malformed("truncated", f"{len(packet)} bytes, IPv6 header needs 40")
    first, plen, nxt, hops, src, dst = _V6.unpack_from(packet)
    if plen == 0 and nxt == 0:
        raise Malformed("ipv6_jumbo", "hop-by-hop header with zero payload length")
    end = IPV6_HEADER + plen
    if end > len(packet):
        raise Malformed("truncated", f"payload length {plen}, have {len(packet) - IPV6_HEADER}")
    return IPPacket(6, src, dst, nxt, hops, first & 0xFFFFF, packet[IPV6_HEADER:end])


def build_ipv4(src: bytes, dst: bytes, proto: int, payload: bytes, *, ttl: int = DEFAULT_TTL, ident: int = 0,
               tos: int = 0) -> bytes:
    """An IPv4 packet without options, flags 0 (as tailscaled's IP4Header.Marshal)."""
    total = IPV4_HEADER + len(payload)
    if total > 0xFFFF:
        raise ValueError(f"IPv4 packet of {total} bytes")
    header = _V4.pack(0x45, tos, total, ident & 0xFFFF, 0, ttl, proto, 0, src, dst)
    csum = checksum(header)
    return header[:10] + csum.to_bytes(2, "big") + header[12:] + payload


def build_ipv6(src: bytes, dst: bytes, next_header: int, payload: bytes, *, hop_limit: int = DEFAULT_TTL,
               flow_label: int = 0, traffic_class: int = 0) -> bytes:
    if len(payload) > 0xFFFF:
        raise ValueError(f"IPv6 payload of {len(payload)} bytes")
    first = (6 << 28) | ((traffic_class & 0xFF) << 20) | (flow_label & 0xFFFFF)
    return _V6.pack(first, len(payload), next_header, hop_limit, src, dst) + payload


def build_ip(src: bytes, dst: bytes, proto: int, payload: bytes, *, ttl: int = DEFAULT_TTL, ident: int = 0) -> bytes:
    """IPv4 or IPv6 by the address size; ``ident`` is the IPv4 ID or IPv6 flow label."""
    if len(src) != len(dst) or len(src) not in (4, 16):
        raise ValueError(f"addresses of {len(src)} and {len(dst)} bytes")
    if len(src) == 4:
        return build_ipv4(src, dst, proto, payload, ttl=ttl, ident=ident)
    return build_ipv6(src, dst, proto, payload, hop_limit=ttl, flow_label=ident)


def response_ident(pkt: IPPacket) -> int:
    """The IP ID / flow label of our answer: the request's, bit-flipped, so distinct
    requests get distinct answers (tailscaled's IP4Header/IP6Header.ToResponse)."""
    return ~pkt.ident & (0xFFFF if pkt.version == 4 else 0xFFFFF)


def packed_set(addresses: Iterable[str | bytes | ipaddress.IPv4Address | ipaddress.IPv6Address]) -> frozenset[bytes]:
    return frozenset(addr_bytes(a) for a in addresses)
