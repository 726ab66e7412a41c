"""The small pieces on their own: message classification, the replay window, AllowedIPs,
TAI64N, cookie primitives."""

from __future__ import annotations

import random
import struct

import pytest
from sunbeam.shared.proto.wireguard import message_type, receiver_index
from sunbeam.shared.proto.wireguard.allowedips import AllowedIPs
from sunbeam.shared.proto.wireguard.cookie import CookieChecker, CookieGenerator
from sunbeam.shared.proto.wireguard.noise import tai64n
from sunbeam.shared.proto.wireguard.replay import (
    REJECT_AFTER_MESSAGES,
    WINDOW,
    ReplayWindow,
)

from .helpers import DetRandom, key


@pytest.mark.parametrize(
    "data, expected",
    [
        (b"\x01\0\0\0" + bytes(144), 1),
        (b"\x01\0\0\0" + bytes(143), None),
        (b"\x01\0\0\0" + bytes(145), None),
        (b"\x02\0\0\0" + bytes(88), 2),
        (b"\x02\0\0\0" + bytes(87), None),
        (b"\x03\0\0\0" + bytes(60), 3),
        (b"\x03\0\0\0" + bytes(61), None),
        (b"\x04\0\0\0" + bytes(28), 4),
        (b"\x04\0\0\0" + bytes(27), None),
        (b"\x04\0\0\0" + bytes(1400), 4),
        (b"\x04\0\1\0" + bytes(28), None),  # reserved bytes must be zero
        (b"\x05\0\0\0" + bytes(60), None),
        (b"\x00\0\0\0" + bytes(60), None),
        (b"", None),
        (b"\x04", None),
    ],
)
def test_message_type(data, expected):
    assert message_type(data) == expected


def test_receiver_index_offsets():
    assert receiver_index(struct.pack("<III", 2, 0x11111111, 0x22222222) + bytes(80)) == 0x22222222
    assert receiver_index(struct.pack("<II", 3, 0x33333333) + bytes(56)) == 0x33333333
    assert receiver_index(struct.pack("<IIQ", 4, 0x44444444, 7) + bytes(16)) == 0x44444444
    assert receiver_index(struct.pack("<II", 1, 0x55555555) + bytes(140)) is None
    assert receiver_index(b"garbage") is None


def test_replay_in_order_duplicates_and_old():
    w = ReplayWindow()
    assert all(w.check(c) for c in range(5000))
    assert not w.check(4999) and not w.check(0)
    assert w.check(5000 + WINDOW)      # jump forward by the whole window
    assert not w.check(5000 - 1)       # now too old
    assert w.check(5000)               # exactly WINDOW behind: still inside, unseen
    assert not w.check(5000)


def test_replay_out_of_order_within_window():
    w = ReplayWindow()
    counters = list(range(3000))
    random.Random(1).shuffle(counters)
    assert all(w.check(c) for c in counters)
    assert not any(w.check(c) for c in counters)


def test_replay_big_jump_clears_ring():
    w = ReplayWindow()
    for c in range(200):
        w.check(c)
    assert w.check(10**12)
    # bits of the old counters are gone, but they are too old anyway
    assert not w.check(150)
    assert w.check(10**12 - 1) and w.check(10**12 - WINDOW)
    assert not w.check(10**12 - WINDOW - 1)


def test_replay_limit():
    w = ReplayWindow()
    assert not w.check(REJECT_AFTER_MESSAGES)
    assert w.check(REJECT_AFTER_MESSAGES - 1)


def test_replay_limit_inside_one_block():
    """The in-order fast path (ahead of the highest, same block) still stops at the limit."""
    w = ReplayWindow()
    assert (REJECT_AFTER_MESSAGES - 2) >> 6 == REJECT_AFTER_MESSAGES >> 6
    assert w.check(REJECT_AFTER_MESSAGES - 2)
    assert not w.check(REJECT_AFTER_MESSAGES)
    assert w.check(REJECT_AFTER_MESSAGES - 1)
    assert not w.check(REJECT_AFTER_MESSAGES - 1)


@pytest.mark.parametrize("steps", [(-WINDOW - 300, 300), (-70, 3)], ids=["wide", "mostly-in-order"])
def test_replay_matches_a_set_model(steps):
    """Against a model: accept iff unseen and within WINDOW of the highest accepted."""
    rng = random.Random(7)
    w = ReplayWindow()
    seen: set[int] = set()
    top = 0
    for _ in range(20000):
        c = max(0, top + rng.randint(*steps))
        expected = c not in seen and (c > top or top - c <= WINDOW)
        assert w.check(c) == expected, (c, top)
        if expected:
            seen.add(c)
            top = max(top, c)


def test_allowed_ips_longest_prefix_and_families():
    t = AllowedIPs()
    t.set("a", ["10.0.0.0/8", "fd00::/64"])
    t.set("b", ["10.1.0.0/16", "10.1.2.3/32", "fd00::1/128"])
    t.set("c", ["0.0.0.0/0"])
    assert t.lookup("10.9.9.9") == "a"
    assert t.lookup("10.1.9.9") == "b"
    assert t.lookup(bytes([10, 1, 2, 3])) == "b"
    assert t.lookup("192.0.2.1") == "c"
    assert t.lookup("fd00::5") == "a" and t.lookup("fd00::1") == "b"
    assert t.lookup("fe80::1") is None
    t.set("c", ["10.1.2.0/24"])  # replaces c's prefixes
    assert t.lookup("192.0.2.1") is None and t.lookup("10.1.2.4") == "c" and t.lookup("10.1.2.3") == "b"
    t.set("a", ["10.1.2.3/32"])  # moves the /32 from b to a
    assert t.lookup("10.1.2.3") == "a" and t.lookup("10.9.9.9") is None
    t.remove("b")
    assert t.lookup("fd00::1") is None and t.entries("c") == ["10.1.2.0/24"]
    with pytest.raises(ValueError):
        t.set("d", ["not-a-prefix"])


def test_tai64n():
    assert tai64n(0.0) == struct.pack(">QI", 0x400000000000000A, 0)
    t = tai64n(1_700_000_000.999999)
    secs, nanos = struct.unpack(">QI", t)
    assert secs == 0x400000000000000A + 1_700_000_000
    assert nanos & 0xFFFFFF == 0 and nanos < 10**9
    assert tai64n(100.5) > tai64n(100.4) > tai64n(99.99)


def test_cookie_roundtrip_and_binding():
    responder_pub = key("responder pub")
    checker = CookieChecker(responder_pub)
    gen = CookieGenerator(responder_pub)
    rng = DetRandom(b"c")
    msg = bytearray(b"\x01\0\0\0" + bytes(144))
    gen.add_macs(msg, 10.0)
    assert checker.check_mac1(bytes(msg)) and bytes(msg[-16:]) == bytes(16)
    assert not checker.check_mac2(bytes(msg), b"src", 10.0)
    reply = checker.create_reply(bytes(msg), 77, b"src", 10.0, rng)
    assert len(reply) == 64 and reply[:8] == struct.pack("<II", 3, 77)
    assert gen.consume_reply(reply, 10.0)
    gen.add_macs(msg, 11.0)
    assert checker.check_mac2(bytes(msg), b"src", 11.0)
    assert not checker.check_mac2(bytes(msg), b"other", 11.0)      # bound to the source
    assert not checker.check_mac2(bytes(msg), b"src", 10.0 + 121)  # the secret expired
    tampered = bytearray(reply)
    tampered[40] ^= 1
    assert not gen.consume_reply(bytes(tampered), 12.0)
    gen.add_macs(msg, 10.0 + 121)                                   # our cookie expired too
    assert bytes(msg[-16:]) == bytes(16)
