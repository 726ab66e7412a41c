"""The sans-IO parts of the link emulator (sunbeam.refnet.linkemu): the profile's text form,
one direction's queue on an injected clock and seeded RNG, the UDP GSO cutter."""

from __future__ import annotations

import random
import struct

import pytest
from sunbeam.refnet import linkemu
from sunbeam.refnet.linkemu import Direction, LinkProfile, ProfileError, parse_link, split_udp_gso


def test_short_forms():
    assert LinkProfile.parse("20ms/0.5%") == LinkProfile(delay_ms=20, loss=0.005)
    assert LinkProfile.parse("50ms+1%+reorder=1%") == LinkProfile(delay_ms=50, loss=0.01, reorder=0.01)
    assert LinkProfile.parse("delay=50ms,jitter=2ms,loss=1%,reorder=1%,gap=3ms,rate=100mbit,queue=50ms") == \
        LinkProfile(delay_ms=50, jitter_ms=2, loss=0.01, reorder=0.01, gap_ms=3, rate_mbit=100, queue_ms=50)
    assert LinkProfile.parse("delay=0.05s loss=0.01") == LinkProfile(delay_ms=50, loss=0.01)
    assert LinkProfile.parse("1gbit, 250us") == LinkProfile(delay_ms=0.25, rate_mbit=1000)
    assert LinkProfile.parse("") == LinkProfile()


@pytest.mark.parametrize("text", ["20ms/0.5%", "delay=50ms,jitter=2ms,loss=1%,reorder=1%,gap=3ms,rate=100mbit,queue=50ms",
                                  "0ms", "delay=12.5ms,loss=0.1%"])
def test_round_trip(text):
    p = LinkProfile.parse(text)
    assert LinkProfile.parse(str(p)) == p


@pytest.mark.parametrize("text", ["20ms/frob", "loss=120%", "delay=-1ms", "20ms/30ms", "rate=0mbit", "loss=x%",
                                  "reorder=2"])
def test_bad_profiles(text):
    with pytest.raises(ProfileError):
        LinkProfile.parse(text)


def test_parse_link_directions():
    p = LinkProfile(delay_ms=20, loss=0.005)
    assert parse_link("20ms/0.5%") == (p, p)
    assert parse_link("to_b:20ms/0.5%; to_a:5ms") == (p, LinkProfile(delay_ms=5))
    assert parse_link("to_a:5ms") == (LinkProfile(), LinkProfile(delay_ms=5))
    with pytest.raises(ProfileError):
        parse_link("up:20ms")


def _drain(d: Direction, until: float, step: float = 0.0005) -> list[tuple[float, bytes]]:
    out, t = [], 0.0
    while t <= until:
        out += [(t, item) for item in d.pop_due(t)]
        t += step
    return out


def test_constant_delay_in_order():
    d = Direction(LinkProfile(delay_ms=20))
    for i in range(10):
        assert d.offer(bytes([i]), 100, i * 0.001)
    assert d.next_due() == pytest.approx(0.020)
    assert list(d.pop_due(0.0199)) == []
    assert list(d.pop_due(0.0205)) == [b"\x00"]
    got = _drain(d, 0.1)
    assert [item for _, item in got] == [bytes([i]) for i in range(1, 10)]
    for t, item in got:
        assert t - (item[0] * 0.001 + 0.020) == pytest.approx(0, abs=0.0006)
    assert d.next_due() is None and len(d) == 0
    assert d.stats.frames == 10 and d.stats.bytes == 1000 and d.stats.lost == 0


def test_jitter_keeps_order_and_spread():
    d = Direction(LinkProfile(delay_ms=10, jitter_ms=3), random.Random(7))
    for i in range(500):
        d.offer(i.to_bytes(2, "big"), 100, i * 0.002)
    got = _drain(d, 2.0, step=0.0001)
    assert [int.from_bytes(item, "big") for _, item in got] == list(range(500))  # FIFO: jitter never reorders
    lat = [t - int.from_bytes(item, "big") * 0.002 for t, item in got]
    assert min(lat) >= 0.007 - 0.0002 and max(lat) <= 0.013 + 0.0002
    assert max(lat) - min(lat) > 0.004  # it does jitter


def test_loss_rate_seeded():
    def lost(seed: int) -> int:
        d = Direction(LinkProfile(delay_ms=1, loss=0.05), random.Random(seed))
        for i in range(20000):
            d.offer(b"x", 1, i * 1e-4)
        return d.stats.lost

    n = lost(1)
    assert abs(n - 1000) < 5 * (20000 * 0.05 * 0.95) ** 0.5
    assert lost(1) == n  # the same seed, the same drops


def test_exempt_never_lost_nor_held():
    d = Direction(LinkProfile(loss=1.0, reorder=1.0))
    assert not d.offer(b"ip", 10, 0.0)
    assert d.offer(b"arp", 10, 0.0, exempt=True)
    assert list(d.pop_due(0.0)) == [b"arp"] and d.stats.held == 0


def test_reorder_holds_back_and_is_overtaken():
    d = Direction(LinkProfile(delay_ms=5, reorder=0.1, gap_ms=2), random.Random(3))
    for i in range(1000):
        d.offer(i.to_bytes(2, "big"), 100, i * 0.0002)
    got = [int.from_bytes(item, "big") for _, item in _drain(d, 1.0, step=0.0001)]
    assert sorted(got) == list(range(1000))  # nothing lost
    late, top = 0, -1
    for x in got:  # a frame arriving after a later-sent one: it was overtaken
        late += x < top
        top = max(top, x)
    assert d.stats.held == pytest.approx(100, abs=40)
    assert late == pytest.approx(d.stats.held, abs=5)  # each held frame is overtaken (unless it was last)


def test_rate_serialises_and_tail_drops():
    # 8 Mbit/s: a 1000-byte frame takes 1 ms on the wire; queue 5 ms
    d = Direction(LinkProfile(delay_ms=10, rate_mbit=8, queue_ms=5))
    accepted = [d.offer(bytes([i]), 1000, 0.0) for i in range(10)]
    assert accepted == [True] * 6 + [False] * 4  # the 7th would wait 6 ms > 5 ms
    assert d.stats.queue_drops == 4
    got = _drain(d, 0.1, step=0.0001)
    assert [t for t, _ in got] == pytest.approx([0.011 + 0.001 * i for i in range(6)], abs=0.00015)
    # once the queue has drained, a frame goes at once again
    assert d.offer(b"z", 1000, 1.0)
    assert d.next_due() == pytest.approx(1.011)


def _ones(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def test_ones_sum_matches_the_word_loop():
    rng = random.Random(5)
    for n in (0, 1, 2, 3, 20, 1401):
        data = bytes(rng.randrange(256) for _ in range(n))
        assert linkemu._ones_sum(data) == _ones(data) or (_ones(data) == 0 and linkemu._ones_sum(data) == 0)
    assert linkemu._ones_sum(b"\xff\xff\x00\x00") == 0xFFFF


def _super_frame(payloads: list[bytes], gso: int, v6: bool = False) -> bytes:
    eth = bytes(6) + bytes(range(6)) + (b"\x86\xdd" if v6 else b"\x08\x00")
    body = b"".join(payloads)
    udp = struct.pack("!HHHH", 41641, 51820, 8 + len(body), 0)
    if v6:
        ip = struct.pack("!IHBB", 0x60000000, 8 + len(body), 17, 64) + bytes(range(16)) + bytes(range(16, 32))
    else:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + 8 + len(body), 1000, 0x4000, 64, 17, 0,
                         bytes([10, 77, 0, 2]), bytes([10, 77, 0, 1]))
    vnet = linkemu.VNET_HDR.pack(1, linkemu.VIRTIO_NET_HDR_GSO_UDP_L4, 14 + len(ip) + 8, gso, 14 + len(ip), 6)
    return vnet + eth + ip + udp + body


@pytest.mark.parametrize("v6", [False, True])
def test_split_udp_gso(v6):
    payloads = [bytes([i]) * 1200 for i in range(5)] + [b"tail" * 10]
    parts = split_udp_gso(_super_frame(payloads, 1200, v6))
    assert parts is not None and len(parts) == len(payloads)
    ihl = 40 if v6 else 20
    for i, (part, payload) in enumerate(zip(parts, payloads, strict=True)):
        flags, gso_type, _hl, _gs, csum_start, csum_offset = linkemu.VNET_HDR.unpack_from(part)
        assert (flags, gso_type, csum_start, csum_offset) == (1, 0, 14 + ihl, 6)
        frame = part[linkemu.VNET_LEN:]
        ip, udp = frame[14:14 + ihl], frame[14 + ihl:]
        assert udp[8:] == payload
        assert struct.unpack_from("!HHH", udp) == (41641, 51820, 8 + len(payload))
        if v6:
            assert struct.unpack_from("!H", ip, 4)[0] == 8 + len(payload)
            pseudo = ip[8:40] + struct.pack("!IxxxB", 8 + len(payload), 17)
        else:
            assert _ones(ip) == 0xFFFF  # a valid header checksum
            assert struct.unpack_from("!HH", ip, 2) == (28 + len(payload), 1000 + i)
            pseudo = ip[12:20] + struct.pack("!BBH", 0, 17, 8 + len(payload))
        # what the receiver's "finish the checksum" does: sum from csum_start, complement, store
        csum = 0xFFFF - _ones(udp)
        done = udp[:6] + struct.pack("!H", csum) + udp[8:]
        assert _ones(pseudo + done) == 0xFFFF  # then the UDP checksum verifies


def test_split_leaves_other_frames_alone():
    frame = _super_frame([b"a" * 100], 100)
    plain = linkemu.VNET_HDR.pack(0, 0, 0, 0, 0, 0) + frame[linkemu.VNET_LEN:]
    assert split_udp_gso(plain) is None
    tcp = bytearray(frame)
    tcp[linkemu.VNET_LEN + 14 + 9] = 6
    assert split_udp_gso(bytes(tcp)) is None


def test_exempt_frames():
    vnet = bytes(linkemu.VNET_LEN)
    assert linkemu._exempt(vnet + bytes(12) + b"\x08\x06" + bytes(28))
    assert linkemu._exempt(vnet + bytes(12) + b"\x86\xdd" + bytes(6) + b"\x3a" + bytes(33))
    assert not linkemu._exempt(vnet + bytes(12) + b"\x08\x00" + bytes(28))
    assert not linkemu._exempt(vnet + bytes(12) + b"\x86\xdd" + bytes(6) + b"\x11" + bytes(33))
    # an MLD report: hop-by-hop options (next header 0), then ICMPv6
    assert linkemu._exempt(vnet + bytes(12) + b"\x86\xdd" + bytes(6) + b"\x00" + bytes(33) + b"\x3a" + bytes(7))
    assert not linkemu._exempt(vnet + bytes(12) + b"\x86\xdd" + bytes(6) + b"\x00" + bytes(33) + b"\x11" + bytes(7))
