"""`IpResponder`: echo and TSMP ping answered, everything else a counted reason."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sunbeam.shared.proto.ip import EchoReplied, IpResponder, Reply
from sunbeam.shared.proto.ip.headers import addr_bytes, build_ipv4, build_ipv6, parse
from sunbeam.shared.proto.ip.icmp import build_echo, parse_echo, parse_icmp
from sunbeam.shared.proto.ip.tsmp import build_tsmp_pong, parse_tsmp

from .vectors import OURS4, OURS6, PEER4, PEER6, UPSTREAM, rfc1071

ADDRESSES = {f"{OURS4}/32", f"{OURS6}/128"}


@pytest.fixture()
def responder():
    return IpResponder(ADDRESSES)


@pytest.mark.parametrize("request_name, reply_name, kind, counter", [
    ("echo4_req", "echo4_rep", "echo_reply", "ip.echo_request"),
    ("echo6_req", "echo6_rep", "echo_reply", "ip.echo_request"),
    ("tsmp4_ping", "tsmp4_pong", "tsmp_pong", "ip.tsmp_ping"),
    ("tsmp6_ping", "tsmp6_pong", "tsmp_pong", "ip.tsmp_ping"),
])
def test_answers_what_tailscaled_sends_as_tailscaled_would(responder, request_name, reply_name, kind, counter):
    assert responder.handle(UPSTREAM[request_name]) == Reply(UPSTREAM[reply_name], kind)
    # WireGuard's padding to 16 bytes changes nothing
    assert responder.handle(UPSTREAM[request_name] + bytes(15)) == Reply(UPSTREAM[reply_name], kind)
    assert responder.counters[counter] == 2


def test_echo_reply_to_us_is_delivered(responder):
    reply = build_echo(addr_bytes(PEER6), addr_bytes(OURS6), 77, 3, b"x", reply=True)
    assert responder.handle(reply) == EchoReplied(PEER6, 77, 3)
    assert responder.counters["ip.echo_reply"] == 1


def test_addresses_follow_the_netmap(responder):
    responder.set_addresses(["100.64.0.77/32"])
    assert responder.handle(UPSTREAM["echo4_req"]) is None
    assert responder.last_drop.reason == "not_for_us" and not responder.last_drop.malformed
    assert responder.counters["ip.not_for_us"] == 1


def _v4(proto, payload, dst=OURS4):
    return build_ipv4(addr_bytes(PEER4), addr_bytes(dst), proto, payload)


@pytest.mark.parametrize("packet, counter", [
    (_v4(6, bytes(20)), "ip.unhandled_tcp"),
    (build_ipv6(addr_bytes(PEER6), addr_bytes(OURS6), 17, bytes(8)), "ip.unhandled_udp"),
    (_v4(47, b"gre"), "ip.unhandled_proto"),
    (build_ipv6(addr_bytes(PEER6), addr_bytes(OURS6), 44, bytes(8)), "ip.unhandled_proto"),  # v6 fragment hdr
    (_v4(1, b"ignored", dst="100.64.0.6"), "ip.not_for_us"),
    (_v4(99, b"a" + bytes(32)), "ip.tsmp_disco_advert"),  # sent with every `tailscale ping --tsmp`
    (build_tsmp_pong(addr_bytes(PEER4), addr_bytes(OURS4), bytes(8)), "ip.tsmp_pong"),
    (_v4(1, bytes.fromhex("0b00f4ff00000000")), "ip.icmp_other"),  # time exceeded, checksum ok
])
def test_ignored_packets_are_counted(responder, packet, counter):
    assert responder.handle(packet) is None
    assert responder.counters[counter] == 1
    assert not responder.last_drop.malformed


def _with_ip_options():
    # RFC 791 header with 4 bytes of options (NOP NOP NOP EOL), checksum correct
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x46, 0, 24 + 8, 0, 0, 64, 1, 0, addr_bytes(PEER4),
                                addr_bytes(OURS4)) + b"\x01\x01\x01\x00")
    hdr[10:12] = rfc1071(bytes(hdr)).to_bytes(2, "big")
    return bytes(hdr) + UPSTREAM["echo4_req"][20:]


def _fragment(flags_offset):
    pkt = bytearray(UPSTREAM["echo4_req"])
    pkt[6:8] = flags_offset.to_bytes(2, "big")
    pkt[10:12] = b"\x00\x00"
    pkt[10:12] = rfc1071(bytes(pkt[:20])).to_bytes(2, "big")
    return bytes(pkt)


def _flip(name, index):
    pkt = bytearray(UPSTREAM[name])
    pkt[index] ^= 0x40
    return bytes(pkt)


@pytest.mark.parametrize("packet, reason", [
    (_with_ip_options(), "ipv4_options"),
    (_fragment(0x2000), "ipv4_fragment"),
    (_fragment(0x0010), "ipv4_fragment"),
    (_flip("echo4_req", 8), "bad_ip_checksum"),  # TTL changed, header checksum not
    (_flip("echo4_req", 30), "bad_icmp_checksum"),
    (_flip("echo6_req", 50), "bad_icmp_checksum"),
    (_flip("echo6_req", 23), "bad_icmp_checksum"),  # a source address bit: the v6 pseudo-header changed
    (b"\x00" * 40, "bad_version"),
    (_v4(99, b"p1234"), "tsmp_truncated"),
    (_v4(99, b"?" * 9), "tsmp_unknown_type"),
])
def test_malformed_packets_are_counted_drops(responder, packet, reason):
    assert responder.handle(packet) is None
    assert responder.last_drop.reason == reason and responder.last_drop.malformed
    assert responder.counters[f"ip.drop.{reason}"] == 1


@pytest.mark.parametrize("name", ["echo4_req", "echo6_req", "tsmp4_ping", "tsmp6_ping"])
def test_every_truncation_is_a_counted_drop(responder, name):
    packet = UPSTREAM[name]
    for n in range(len(packet)):
        assert responder.handle(packet[:n]) is None, n
        assert responder.last_drop.malformed, (n, responder.last_drop)
    assert sum(v for k, v in responder.counters.values.items() if k.startswith("ip.drop.")) == len(packet)


def _assert_valid_answer(result):
    """A reply must be a well-formed packet from one of our addresses with good checksums."""
    if not isinstance(result, Reply):
        return
    pkt = parse(result.packet)
    assert pkt.src in {addr_bytes(OURS4), addr_bytes(OURS6)}
    if result.kind == "echo_reply":
        echo = parse_echo(pkt, parse_icmp(pkt))
        assert echo is not None and not echo.request
    else:
        assert parse_tsmp(pkt.payload).__class__.__name__ == "TsmpPong"


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_random_bytes_never_raise(data):
    responder = IpResponder(ADDRESSES)
    _assert_valid_answer(responder.handle(data))


@settings(max_examples=500)
@given(st.sampled_from(sorted(UPSTREAM)), st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=4),
       st.integers(0, 100), st.binary(max_size=20))
def test_mutated_packets_never_raise(name, edits, cut, tail):
    packet = bytearray(UPSTREAM[name])
    for index, value in edits:
        if index < len(packet):
            packet[index] = value
    packet = bytes(packet[: max(0, len(packet) - cut)]) + tail
    responder = IpResponder(ADDRESSES)
    result = responder.handle(packet)
    _assert_valid_answer(result)
    if result is None:
        assert responder.last_drop is not None
