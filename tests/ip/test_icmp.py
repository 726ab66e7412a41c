"""ICMP / ICMPv6 echo: golden bytes from RFC 792 / RFC 4443 layouts and from tailscaled."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sunbeam.shared.proto.ip.headers import (
    Malformed,
    addr_bytes,
    build_ipv4,
    build_ipv6,
    parse,
)
from sunbeam.shared.proto.ip.icmp import (
    Echo,
    build_echo,
    build_echo_request,
    echo_reply_to,
    parse_echo,
    parse_echo_reply,
    parse_icmp,
)

from .vectors import OURS4, OURS6, PEER4, PEER6, UPSTREAM, rfc1071, v6_pseudo


def by_hand_v4(src, dst, icmp_type, ident, seq, data, ip_id=0):
    """RFC 792 echo in an RFC 791 header, checksums by the word-wise reference."""
    icmp = struct.pack("!BBHHH", icmp_type, 0, 0, ident, seq) + data
    icmp = icmp[:2] + rfc1071(icmp).to_bytes(2, "big") + icmp[4:]
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), ip_id, 0, 64, 1, 0, addr_bytes(src), addr_bytes(dst))
    return hdr[:10] + rfc1071(hdr).to_bytes(2, "big") + hdr[12:] + icmp


def by_hand_v6(src, dst, icmp_type, ident, seq, data, flow=0):
    """RFC 4443 echo; checksum over the RFC 8200 pseudo-header and the message."""
    s, d = addr_bytes(src), addr_bytes(dst)
    icmp = struct.pack("!BBHHH", icmp_type, 0, 0, ident, seq) + data
    csum = rfc1071(v6_pseudo(s, d, len(icmp), 58) + icmp)
    icmp = icmp[:2] + csum.to_bytes(2, "big") + icmp[4:]
    return struct.pack("!IHBB", (6 << 28) | flow, len(icmp), 58, 64) + s + d + icmp


def test_echo_request_v4_golden():
    ours = build_echo_request(PEER4, OURS4, 0x1234, 7, b"hello!")
    assert ours == by_hand_v4(PEER4, OURS4, 8, 0x1234, 7, b"hello!") == UPSTREAM["echo4_req"]


def test_echo_request_v6_golden():
    ours = build_echo_request(PEER6, OURS6, 0x1234, 7, b"hello!")
    assert ours == by_hand_v6(PEER6, OURS6, 128, 0x1234, 7, b"hello!") == UPSTREAM["echo6_req"]


@pytest.mark.parametrize("fam", ["4", "6"])
def test_echo_reply_golden(fam):
    pkt = parse(UPSTREAM[f"echo{fam}_req"])
    echo = parse_echo(pkt)
    assert echo == Echo(True, 0x1234, 7, b"hello!")
    reply = echo_reply_to(pkt, echo)
    assert reply == UPSTREAM[f"echo{fam}_rep"]
    if fam == "4":
        assert reply == by_hand_v4(OURS4, PEER4, 0, 0x1234, 7, b"hello!", ip_id=0xFFFF)
    else:
        assert reply == by_hand_v6(OURS6, PEER6, 129, 0x1234, 7, b"hello!", flow=0xFFFFF)


@given(src4=st.booleans(), ident=st.integers(0, 0xFFFF), seq=st.integers(0, 0xFFFF), data=st.binary(max_size=200),
       ip_id=st.integers(0, 0xFFFF))
def test_reply_checksums_verify_independently(src4, ident, seq, data, ip_id):
    src, dst = (PEER4, OURS4) if src4 else (PEER6, OURS6)
    request = build_echo(addr_bytes(src), addr_bytes(dst), ident, seq, data, ip_ident=ip_id)
    by_hand = (by_hand_v4(src, dst, 8, ident, seq, data, ip_id) if src4
               else by_hand_v6(src, dst, 128, ident, seq, data, ip_id & 0xFFFFF))
    assert request == by_hand
    pkt = parse(request)
    reply = echo_reply_to(pkt, parse_echo(pkt))
    if src4:
        assert reply == by_hand_v4(dst, src, 0, ident, seq, data, ~ip_id & 0xFFFF)
    else:
        assert reply == by_hand_v6(dst, src, 129, ident, seq, data, ~ip_id & 0xFFFFF)
    assert parse_echo_reply(reply) == (dst, ident, seq)  # the reply comes from the pinged address


def test_parse_echo_reply():
    assert parse_echo_reply(UPSTREAM["echo4_rep"]) == (OURS4, 0x1234, 7)
    assert parse_echo_reply(UPSTREAM["echo6_rep"]) == (OURS6, 0x1234, 7)
    assert parse_echo_reply(UPSTREAM["echo4_req"]) is None  # a request
    assert parse_echo_reply(UPSTREAM["tsmp4_pong"]) is None
    assert parse_echo_reply(b"") is None


def test_bad_icmp_checksum():
    bad = bytearray(UPSTREAM["echo4_req"])
    bad[-1] ^= 1
    with pytest.raises(Malformed) as info:
        parse_icmp(parse(bytes(bad)))
    assert info.value.reason == "bad_icmp_checksum"
    rep = bytearray(UPSTREAM["echo6_rep"])
    rep[-1] ^= 1
    assert parse_echo_reply(bytes(rep)) is None


def test_icmpv6_checksum_covers_the_pseudo_header():
    # same ICMPv6 message, other source address: the checksum no longer verifies
    good = parse(UPSTREAM["echo6_req"])
    moved = build_ipv6(addr_bytes("fd7a:115c:a1e0::77"), good.dst, 58, good.payload)
    with pytest.raises(Malformed):
        parse_icmp(parse(moved))


def test_truncated_echo():
    # a valid 4-byte ICMP message of type 8 is too short for an echo
    icmp = bytes([8, 0]) + rfc1071(bytes([8, 0, 0, 0])).to_bytes(2, "big")
    pkt = parse(build_ipv4(addr_bytes(PEER4), addr_bytes(OURS4), 1, icmp))
    with pytest.raises(Malformed) as info:
        parse_echo(pkt)
    assert info.value.reason == "truncated_icmp"
    with pytest.raises(Malformed) as info:
        parse_icmp(parse(build_ipv4(addr_bytes(PEER4), addr_bytes(OURS4), 1, b"\x08\x00")))
    assert info.value.reason == "truncated_icmp"


def test_other_icmp_types_are_not_echo():
    # destination unreachable, and an echo request with a non-zero code
    unreachable = by_hand_v4(PEER4, OURS4, 3, 0, 0, b"")
    assert parse_echo(parse(unreachable)) is None
    icmp = struct.pack("!BBHHH", 8, 1, 0, 1, 1)
    icmp = icmp[:2] + rfc1071(icmp).to_bytes(2, "big") + icmp[4:]
    assert parse_echo(parse(build_ipv4(addr_bytes(PEER4), addr_bytes(OURS4), 1, icmp))) is None


def test_families_must_match():
    with pytest.raises(ValueError):
        build_echo_request(PEER4, OURS6, 1, 1)
