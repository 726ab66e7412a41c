"""IPv4/IPv6 header parsing and building, and the Internet checksum (RFC 791, 8200, 1071)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sunbeam.shared.proto.ip.headers import (
    PROTO_ICMP,
    PROTO_TSMP,
    Malformed,
    addr_bytes,
    build_ipv4,
    build_ipv6,
    checksum,
    checksum_many,
    ones_sum,
    parse,
    pseudo_header_sum,
)

from .vectors import OURS4, OURS6, PEER4, PEER6, UPSTREAM, rfc1071, v6_pseudo


def test_rfc1071_worked_example():
    # RFC 1071 section 3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert ones_sum(data) == 0xDDF2
    assert checksum(data) == 0x220D == rfc1071(data)


@given(st.binary(max_size=300))
def test_checksum_matches_wordwise_reference(data):
    assert checksum(data) == rfc1071(data)


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x00" * 7, b"\xff\xff", b"\xff" * 9, b"\xff\xfe\x00\x01"])
def test_checksum_edge_cases(data):
    assert checksum(data) == rfc1071(data)


@given(st.binary(max_size=64), st.binary(max_size=64))
def test_checksum_of_parts_with_initial(a, b):
    # an even-length first part's sum can seed the second part's checksum
    if len(a) % 2:
        a += b"\x00"
    assert checksum(b, ones_sum(a)) == rfc1071(a + b)


@given(st.lists(st.binary(max_size=80), max_size=10))
def test_checksum_many(buffers):
    assert checksum_many(buffers) == [rfc1071(b) for b in buffers]
    assert checksum_many(buffers, [0] * len(buffers)) == [rfc1071(b) for b in buffers]


def test_checksum_many_needs_one_initial_per_buffer():
    with pytest.raises(ValueError):
        checksum_many([b"a", b"b"], [0])


def test_pseudo_headers():
    s, d = addr_bytes(PEER6), addr_bytes(OURS6)
    assert checksum(b"", pseudo_header_sum(s, d, 58, 14)) == rfc1071(v6_pseudo(s, d, 14, 58))
    s4, d4 = addr_bytes(PEER4), addr_bytes(OURS4)
    assert checksum(b"", pseudo_header_sum(s4, d4, 17, 8)) == rfc1071(s4 + d4 + bytes([0, 17, 0, 8]))


def test_parse_upstream_ipv4_packet():
    pkt = parse(UPSTREAM["echo4_req"])
    assert (pkt.version, pkt.proto, pkt.ttl, pkt.ident) == (4, PROTO_ICMP, 64, 0)
    assert pkt.src == addr_bytes(PEER4) and pkt.dst == addr_bytes(OURS4)
    assert pkt.payload == UPSTREAM["echo4_req"][20:]


def test_parse_upstream_ipv6_packet():
    pkt = parse(UPSTREAM["tsmp6_pong"])
    assert (pkt.version, pkt.proto, pkt.ttl, pkt.ident) == (6, PROTO_TSMP, 64, 0xFFFFF)
    assert pkt.src == addr_bytes(OURS6) and pkt.dst == addr_bytes(PEER6)
    assert pkt.payload == UPSTREAM["tsmp6_pong"][40:]


@pytest.mark.parametrize("name", ["echo4_req", "echo6_req"])
def test_trailing_padding_is_cut(name):
    # WireGuard pads plaintext to a multiple of 16 bytes; the IP length says what is real
    assert parse(UPSTREAM[name] + b"\x00" * 13) == parse(UPSTREAM[name])


def test_build_ipv4_matches_rfc791_layout():
    s, d = addr_bytes(PEER4), addr_bytes(OURS4)
    pkt = build_ipv4(s, d, PROTO_TSMP, b"xyz", ident=0xBEEF, ttl=7)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 23, 0xBEEF, 0, 7, 99, 0, s, d)
    csum = rfc1071(hdr)
    assert pkt == hdr[:10] + csum.to_bytes(2, "big") + hdr[12:] + b"xyz"
    assert rfc1071(pkt[:20]) == 0


def test_build_ipv6_matches_rfc8200_layout():
    s, d = addr_bytes(PEER6), addr_bytes(OURS6)
    pkt = build_ipv6(s, d, 58, b"ab", flow_label=0x12345, hop_limit=9)
    assert pkt == bytes.fromhex("60012345" "0002" "3a" "09") + s + d + b"ab"


def _v4(total=None, ihl=5, frag=0, options=b"", proto=PROTO_ICMP, payload=b"\x08\x00\xf7\xff\x00\x00\x00\x00",
        fix_checksum=True, version=4):
    hlen = ihl * 4
    total = hlen + len(payload) if total is None else total
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", (version << 4) | ihl, 0, total, 1, frag, 64, proto, 0,
                                addr_bytes(PEER4), addr_bytes(OURS4)) + options)
    if fix_checksum:
        hdr[10:12] = rfc1071(bytes(hdr[: max(20, min(hlen, len(hdr)))])).to_bytes(2, "big")
    return bytes(hdr) + payload


@pytest.mark.parametrize(
    "packet, reason",
    [
        (b"", "truncated"),
        (b"\x45" + b"\x00" * 10, "truncated"),
        (b"\x60" + b"\x00" * 30, "truncated"),
        (b"\x15" + b"\x00" * 30, "bad_version"),
        (_v4(ihl=4), "bad_ihl"),
        (_v4(total=12), "bad_length"),
        (_v4(total=200), "truncated"),
        (_v4(fix_checksum=False), "bad_ip_checksum"),
        (_v4(ihl=6, options=b"\x01\x01\x01\x00"), "ipv4_options"),  # four NOP/EOL option bytes
        (_v4(frag=0x2000), "ipv4_fragment"),  # MF: first fragment
        (_v4(frag=0x0003), "ipv4_fragment"),  # a later fragment
        (UPSTREAM["echo6_req"][:-1], "truncated"),  # payload length says one more byte
        (bytes.fromhex("60000000" "0000" "00" "40") + b"\x00" * 32, "ipv6_jumbo"),
    ],
)
def test_malformed(packet, reason):
    with pytest.raises(Malformed) as info:
        parse(packet)
    assert info.value.reason == reason


def test_dont_fragment_is_fine():
    assert parse(_v4(frag=0x4000)).proto == PROTO_ICMP


def test_ipv4_header_longer_than_packet():
    # ihl 15 (60 bytes) in a 28-byte packet whose total length says 28
    with pytest.raises(Malformed) as info:
        parse(_v4(ihl=15, total=28, fix_checksum=False))
    assert info.value.reason in {"bad_length", "truncated"}


@given(st.binary(max_size=120))
def test_parse_random_bytes_raises_only_malformed(data):
    try:
        pkt = parse(data)
    except Malformed:
        return
    assert pkt.version in (4, 6)
