"""TCP segment wire format: golden bytes, options, checksums (RFC 9293 3.1, RFC 7323, RFC 2018)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sunbeam.shared.proto.ip.headers import Malformed, addr_bytes
from sunbeam.shared.proto.tcp import TcpStack
from sunbeam.shared.proto.tcp.segment import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    build_packet,
    build_sack_option,
    build_syn_options,
    data_sum,
    fold16,
    parse_options,
    parse_packet,
)

from ..ip.vectors import rfc1071

# Captured from Linux 6.18 (this machine's kernel, over a TUN device): the SYN of
# `connect(("10.77.0.2", 4242))` and of `connect(("fd00:77::2", 4242))`, MTU 1280.
LINUX_SYN4 = bytes.fromhex(
    "4500003c47a240004006de7d0a4d00010a4d000281741092e9212f1000000000a002fbe0001e0000"
    "020404d80402080a9ea1ef63000000000103030a")
LINUX_SYN6 = bytes.fromhex(
    "600d220a00280640fd000077000000000000000000000001fd000077000000000000000000000002"
    "b5461092c05dde2300000000a002fc9453cd0000020404c40402080a20fe7840000000000103030a")


def tcp_ok(packet: bytes) -> bool:
    """Independent check of the IP and TCP checksums of a whole packet."""
    if packet[0] >> 4 == 4:
        ihl = (packet[0] & 15) * 4
        total = struct.unpack_from("!H", packet, 2)[0]
        if rfc1071(packet[:ihl]) != 0:
            return False
        seg = packet[ihl:total]
        pseudo = packet[12:20] + struct.pack("!BBH", 0, 6, len(seg))
    else:
        plen = struct.unpack_from("!H", packet, 4)[0]
        seg = packet[40:40 + plen]
        pseudo = packet[8:40] + struct.pack("!I3xB", len(seg), 6)
    return rfc1071(pseudo + seg) == 0


# Ours: 10.0.0.1:49152 -> 10.0.0.2:80, SYN, seq 0x01020304, window 65535, ident 1,
# options MSS 1240, NOP WS 5, NOP NOP SACK-permitted. Laid out by hand from RFC 791 / 9293;
# the two checksums were computed with `rfc1071` above.
OUR_SYN4 = bytes.fromhex(
    "45000034" "00010000" "4006" "66c1" "0a000001" "0a000002"       # IPv4, csum 66c1
    "c0000050" "01020304" "00000000" "8002" "ffff" "9796" "0000"    # TCP, csum 9796
    "020404d8" "01030305" "01010402")
# fd7a:115c:a1e0::1 port 443 -> ::2 port 40000, ACK|PSH, seq 7, ack 9, window 512, "hello".
OUR_DATA6 = bytes.fromhex(
    "60000000" "0019" "06" "40"
    "fd7a115ca1e000000000000000000001" "fd7a115ca1e000000000000000000002"
    "01bb9c40" "00000007" "00000009" "5018" "0200" "6a78" "0000" "68656c6c6f")


def test_golden_ipv4_syn():
    assert tcp_ok(OUR_SYN4)
    pkt = build_packet(addr_bytes("10.0.0.1"), addr_bytes("10.0.0.2"), 49152, 80, 0x01020304, 0, SYN, 65535,
                       build_syn_options(1240, 5, True), ident=1)
    assert pkt == OUR_SYN4
    seg = parse_packet(OUR_SYN4)
    assert (seg.sport, seg.dport, seg.seq, seg.ack, seg.flags, seg.window) == (49152, 80, 0x01020304, 0, SYN, 65535)
    assert parse_options(seg.options) == parse_options(build_syn_options(1240, 5, True))
    assert parse_options(seg.options).mss == 1240 and parse_options(seg.options).wscale == 5
    assert seg.payload == b"" and seg.seg_len == 1


def test_golden_ipv6_data():
    assert tcp_ok(OUR_DATA6)
    pkt = build_packet(addr_bytes("fd7a:115c:a1e0::1"), addr_bytes("fd7a:115c:a1e0::2"), 443, 40000, 7, 9,
                       ACK | PSH, 512, b"", b"hello")
    assert pkt == OUR_DATA6
    seg = parse_packet(OUR_DATA6)
    assert (seg.seq, seg.ack, seg.flags, seg.window, seg.payload, seg.seg_len) == (7, 9, ACK | PSH, 512, b"hello", 5)


@pytest.mark.parametrize("packet", [LINUX_SYN4, LINUX_SYN6])
def test_parse_linux_syn(packet):
    assert tcp_ok(packet)
    seg = parse_packet(packet)
    assert seg.flags == SYN and seg.dport == 4242 and seg.payload == b""
    opts = parse_options(seg.options)
    assert opts.mss == (1240 if packet[0] >> 4 == 4 else 1220)
    assert opts.sack_ok and opts.wscale == 10 and opts.timestamp is not None and opts.timestamp[1] == 0


def test_bad_checksums_are_refused():
    bad = bytearray(LINUX_SYN4)
    bad[-1] ^= 1
    with pytest.raises(Malformed) as e:
        parse_packet(bytes(bad))
    assert e.value.reason == "bad_tcp_checksum"
    bad6 = bytearray(LINUX_SYN6)
    bad6[50] ^= 0x80
    with pytest.raises(Malformed):
        parse_packet(bytes(bad6))


@given(st.binary(max_size=3000))
def test_fold16_is_the_word_sum(data):
    assert data_sum(data) == (0 if not data else int.from_bytes(data + b"\0" * (len(data) & 1), "big") % 0xFFFF)
    assert fold16(int.from_bytes(data, "big")) == int.from_bytes(data, "big") % 0xFFFF


@given(src=st.binary(min_size=4, max_size=4), dst=st.binary(min_size=4, max_size=4), sport=st.integers(0, 65535),
       dport=st.integers(0, 65535), seq=st.integers(0, 2**32 - 1), ack=st.integers(0, 2**32 - 1),
       flags=st.integers(0, 255), window=st.integers(0, 65535), payload=st.binary(max_size=1400),
       v6=st.booleans())
def test_build_parse_roundtrip_and_checksum(src, dst, sport, dport, seq, ack, flags, window, payload, v6):
    if v6:
        src, dst = src * 4, dst * 4
    pkt = build_packet(src, dst, sport, dport, seq, ack, flags, window, b"", payload)
    assert tcp_ok(pkt)
    seg = parse_packet(pkt)
    assert (seg.src, seg.dst, seg.sport, seg.dport, seg.seq, seg.ack, seg.flags, seg.window, seg.payload) == (
        src, dst, sport, dport, seq, ack, flags, window, payload)


def _established_conn(v6: bool):
    from .scripted import Scripted
    s = Scripted(v6=v6)
    cid, _ = s.passive_open()
    return s, s.stack._by_id[cid]


@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize("payload", [b"", b"x", b"hello world!", bytes(range(256)) * 4 + b"odd"])
def test_connection_fast_builder_matches_generic_builder(v6, payload):
    # the per-connection arithmetic checksum path must equal build_packet byte for byte
    _, conn = _established_conn(v6)
    out: list[bytes] = []
    opts = build_sack_option([(conn.rcv_nxt + 100, conn.rcv_nxt + 200)])
    for flags, o in ((ACK | PSH, b""), (ACK, opts), (ACK | FIN, b""), (RST, b"")):
        conn._tx(out, conn.snd_nxt, flags, payload, o, 1234)
        ident = conn.ident
        ackw = conn.rcv_nxt & 0xFFFFFFFF if flags & ACK else 0
        want = build_packet(conn.laddr, conn.raddr, conn.lport, conn.rport, conn.snd_nxt, ackw, flags, 1234, o,
                            payload, ident=0 if v6 else ident)
        assert out[-1] == want
        assert tcp_ok(out[-1])


def test_options_parsing():
    o = parse_options(bytes([1, 1, 8, 10]) + (5).to_bytes(4, "big") + (6).to_bytes(4, "big") + bytes([0, 9, 9]))
    assert o.timestamp == (5, 6) and o.mss is None
    o = parse_options(build_sack_option([(1, 2), (3, 4), (5, 6), (7, 8), (9, 10)]))
    assert o.sack == ((1, 2), (3, 4), (5, 6), (7, 8))  # at most four blocks
    assert parse_options(bytes([3, 3, 200])).wscale == 14  # clamped (RFC 7323 2.3)
    assert parse_options(bytes([99, 4, 0, 0])) == parse_options(b"")  # unknown kinds skipped
    for bad in (bytes([2]), bytes([2, 1]), bytes([2, 9, 0]), bytes([2, 3, 0]), bytes([5, 5, 0, 0, 0])):
        with pytest.raises(Malformed):
            parse_options(bad)


def test_stack_fast_path_verifies_checksums():
    s, conn = _established_conn(False)
    pkt = bytearray(s.packet(ACK, conn.rcv_nxt, conn.snd_nxt, b"data"))
    pkt[-1] ^= 0xFF
    s.stack.receive([bytes(pkt)], s.now)
    assert s.stack.counters["drop_bad_tcp_checksum"] == 1 and not conn.rcv_buf
    pkt = bytearray(s.packet(ACK, conn.rcv_nxt, conn.snd_nxt, b"data"))
    pkt[8] ^= 1  # TTL: only the IP header checksum catches it
    s.stack.receive([bytes(pkt)], s.now)
    assert s.stack.counters["drop_bad_ip_checksum"] == 1 and not conn.rcv_buf
    s.stack.receive([s.packet(ACK, conn.rcv_nxt, conn.snd_nxt, b"data") + b"\0" * 11], s.now)  # padding ok
    assert bytes(conn.rcv_buf) == b"data"


def test_stack_is_constructible_with_defaults():
    st_ = TcpStack(random_bytes=lambda n: bytes(n))
    assert st_.cfg.wscale == 5 and st_.cfg.mss4 == 1240 and st_.cfg.mss6 == 1220


@pytest.mark.parametrize("v6", [False, True])
def test_a_corrupt_segment_inside_a_large_batch_is_dropped_alone(v6):
    """A batch this size takes the batched (numpy) checksum path."""
    s, conn = _established_conn(v6)
    chunks = [bytes([i]) * 1000 for i in range(16)]
    seq, packets = conn.rcv_nxt, []
    for c in chunks:
        packets.append(s.packet(ACK, seq, conn.snd_nxt, c))
        seq += len(c)
    bad = bytearray(packets[9])
    bad[-3] ^= 0x10
    packets[9] = bytes(bad)
    s.stack.receive(packets, s.now)
    assert s.stack.counters["drop_bad_tcp_checksum"] == 1
    assert bytes(conn.rcv_buf) == b"".join(chunks[:9])  # the rest waits out of order for the resend
    s.stack.receive([s.packet(ACK, conn.rcv_nxt, conn.snd_nxt, chunks[9])], s.now)
    assert bytes(conn.rcv_buf) == b"".join(chunks)


@pytest.mark.parametrize("v6", [False, True])
def test_a_burst_of_new_segments_has_valid_checksums(v6):
    """Ten segments at once take the batched payload-sum path; the last is shorter and odd."""
    s, conn = _established_conn(v6)
    data = bytes(range(256)) * 40 + b"odd"
    s.stack.send(conn.id, data, s.now)
    out = s.stack.poll(s.now)
    assert len(out) >= 8
    assert b"".join(parse_packet(p).payload for p in out) == data  # parse_packet verifies
