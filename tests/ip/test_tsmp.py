"""TSMP (IP protocol 99) messages, layouts of ts:net/packet/tsmp.go."""

from __future__ import annotations

import pytest
from sunbeam.shared.proto.ip.headers import (
    PROTO_TSMP,
    Malformed,
    addr_bytes,
    build_ipv4,
    parse,
)
from sunbeam.shared.proto.ip.tsmp import (
    TsmpDiscoAdvert,
    TsmpPing,
    TsmpPong,
    TsmpRejected,
    build_tsmp_ping,
    build_tsmp_pong,
    parse_tsmp,
    pong_to,
)

from .vectors import OURS4, OURS6, PEER4, PEER6, UPSTREAM

DATA = bytes(range(1, 9))


@pytest.mark.parametrize("fam, src, dst", [("4", PEER4, OURS4), ("6", PEER6, OURS6)])
def test_ping_and_pong_golden(fam, src, dst):
    assert build_tsmp_ping(addr_bytes(src), addr_bytes(dst), DATA) == UPSTREAM[f"tsmp{fam}_ping"]
    pkt = parse(UPSTREAM[f"tsmp{fam}_ping"])
    ping = parse_tsmp(pkt.payload)
    assert ping == TsmpPing(DATA)
    assert pong_to(pkt, ping) == UPSTREAM[f"tsmp{fam}_pong"]
    assert parse_tsmp(parse(UPSTREAM[f"tsmp{fam}_pong"]).payload) == TsmpPong(DATA, 0)


def test_pong_carries_the_peerapi_port():
    pong = build_tsmp_pong(addr_bytes(OURS4), addr_bytes(PEER4), DATA, 0xABCD, ip_ident=0xFFFF)
    # tsmp4_pong_port from upstream's TSMPPongReply.Marshal with PeerAPIPort 0xabcd
    assert pong.hex() == "4500001fffff00004063b1ee64400005644000096f0102030405060708abcd"
    assert parse_tsmp(parse(pong).payload) == TsmpPong(DATA, 0xABCD)


def test_pong_without_port_and_ping_with_extra_bytes():
    assert parse_tsmp(b"o" + DATA) == TsmpPong(DATA, 0)  # upstream accepts 9 bytes, port 0
    assert parse_tsmp(b"p" + DATA + b"extra") == TsmpPing(DATA)


def test_rejected_and_disco_advertisement():
    # '!' | proto TCP | 'A' (ACL) | src port 567 | dst port 443 [| flags]
    assert parse_tsmp(b"!\x06A\x02\x37\x01\xbb") == TsmpRejected(6, ord("A"), 567, 443, False)
    assert parse_tsmp(b"!\x11F\x02\x37\x01\xbb\x01") == TsmpRejected(17, ord("F"), 567, 443, True)
    # TestTSMPDiscoKeyAdvertisementMarshal: 'a' + 32 key bytes after the IP header
    v4 = bytes.fromhex("45000035000000004063705d") + addr_bytes("1.2.3.4") + addr_bytes("4.3.2.1") + b"a" * 33
    pkt = parse(v4)
    assert pkt.proto == PROTO_TSMP
    assert parse_tsmp(pkt.payload) == TsmpDiscoAdvert(b"a" * 32)


@pytest.mark.parametrize("payload, reason", [
    (b"", "tsmp_truncated"), (b"p" + DATA[:7], "tsmp_truncated"), (b"o1234", "tsmp_truncated"),
    (b"!\x06A\x02\x37\x01", "tsmp_truncated"), (b"a" * 32, "tsmp_truncated"), (b"z" + DATA, "tsmp_unknown_type"),
])
def test_malformed(payload, reason):
    with pytest.raises(Malformed) as info:
        parse_tsmp(payload)
    assert info.value.reason == reason


def test_data_must_be_8_bytes():
    with pytest.raises(ValueError):
        build_tsmp_ping(addr_bytes(PEER4), addr_bytes(OURS4), b"short")
    with pytest.raises(ValueError):
        build_tsmp_pong(addr_bytes(PEER4), addr_bytes(OURS4), b"short")


def test_pong_flips_the_request_ip_id():
    pkt = parse(build_ipv4(addr_bytes(PEER4), addr_bytes(OURS4), PROTO_TSMP, b"p" + DATA, ident=0x1200))
    assert parse(pong_to(pkt, TsmpPing(DATA))).ident == 0xEDFF
