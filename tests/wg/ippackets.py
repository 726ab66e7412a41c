"""Tiny IPv4/IPv6 + ICMP echo builders and parsers for the WireGuard tests (RFC 791, 792,
8200, 4443). Checksums are computed here, so the kernel accepts what we build."""

from __future__ import annotations

import ipaddress
import struct


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4(src: str, dst: str, proto: int, payload: bytes, ttl: int = 64, ident: int = 0) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0, ttl, proto, 0,
                         ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + payload


def ipv6(src: str, dst: str, next_header: int, payload: bytes, hop_limit: int = 64) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), next_header, hop_limit,
                       ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed) + payload


def icmp_echo(src: str, dst: str, ident: int, seq: int, payload: bytes = b"", reply: bool = False) -> bytes:
    """An IPv4 ICMP echo request (type 8) or reply (type 0)."""
    body = struct.pack("!BBHHH", 0 if reply else 8, 0, 0, ident, seq) + payload
    body = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
    return ipv4(src, dst, 1, body)


def parse_icmp_echo(packet: bytes) -> tuple[str, str, int, int, int, bytes] | None:
    """(src, dst, icmp type, ident, seq, payload) of an IPv4 ICMP echo with valid checksums."""
    if len(packet) < 28 or packet[0] >> 4 != 4 or packet[9] != 1:
        return None
    ihl = (packet[0] & 15) * 4
    total = struct.unpack_from("!H", packet, 2)[0]
    if checksum(packet[:ihl]) != 0 or total != len(packet):
        return None
    body = packet[ihl:total]
    if checksum(body) != 0:
        return None
    icmp_type, _code, _sum, ident, seq = struct.unpack_from("!BBHHH", body)
    src = str(ipaddress.IPv4Address(packet[12:16]))
    dst = str(ipaddress.IPv4Address(packet[16:20]))
    return src, dst, icmp_type, ident, seq, body[8:]


def echo_reply_for(packet: bytes) -> bytes | None:
    parsed = parse_icmp_echo(packet)
    if parsed is None or parsed[2] != 8:
        return None
    src, dst, _t, ident, seq, payload = parsed
    return icmp_echo(dst, src, ident, seq, payload, reply=True)


def icmp6_echo(src: str, dst: str, ident: int, seq: int, payload: bytes = b"", reply: bool = False) -> bytes:
    """An ICMPv6 echo request (128) or reply (129); checksum over the IPv6 pseudo-header."""
    body = struct.pack("!BBHHH", 129 if reply else 128, 0, 0, ident, seq) + payload
    pseudo = (ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed
              + struct.pack("!IxxxB", len(body), 58))
    body = body[:2] + struct.pack("!H", checksum(pseudo + body)) + body[4:]
    return ipv6(src, dst, 58, body)


def parse_icmp6_echo(packet: bytes) -> tuple[str, str, int, int, int, bytes] | None:
    """(src, dst, icmp type, ident, seq, payload) of an ICMPv6 echo with a valid checksum."""
    if len(packet) < 48 or packet[0] >> 4 != 6 or packet[6] != 58:
        return None
    length = struct.unpack_from("!H", packet, 4)[0]
    body = packet[40:40 + length]
    if len(body) != length or len(body) < 8:
        return None
    pseudo = packet[8:24] + packet[24:40] + struct.pack("!IxxxB", length, 58)
    if checksum(pseudo + body) != 0:
        return None
    icmp_type, _code, _sum, ident, seq = struct.unpack_from("!BBHHH", body)
    return (str(ipaddress.IPv6Address(packet[8:24])), str(ipaddress.IPv6Address(packet[24:40])),
            icmp_type, ident, seq, body[8:])
