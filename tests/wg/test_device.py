"""Two Devices back to back: handshakes both ways, data both ways, AllowedIPs source
filtering, replay and reordering, cookies under load, initiator_static, indices, peers."""

from __future__ import annotations

import random
import struct

from sunbeam.shared.proto.wireguard import (
    MESSAGE_COOKIE_REPLY,
    MESSAGE_INITIATION,
    MESSAGE_RESPONSE,
    MESSAGE_TRANSPORT,
    Device,
    message_type,
    receiver_index,
    split_segments,
    transport_run_index,
)
from sunbeam.shared.proto.wireguard.replay import WINDOW
from sunbeam.shared.sharding import worker_of_index

from .helpers import DetRandom, converse, deliver, key, simulate
from .twodevices import (
    A4,
    A6,
    A_WORKER,
    B4,
    B6,
    B_WORKER,
    T0,
    established,
    make_pair,
    udp4,
    udp6,
)


def test_handshake_a_initiates_and_data_flows_both_ways():
    a, b = make_pair()
    p1 = udp4(A4, B4, b"one")
    [init] = a.encapsulate(b.public_key, [p1], T0)
    assert message_type(init) == MESSAGE_INITIATION
    assert a.peer_stats(b.public_key)["staged"] == 1
    rb = b.decapsulate(init, T0)
    assert rb.peer_key == a.public_key and rb.error is None and rb.to_tunnel == []
    [resp] = rb.to_peer
    assert message_type(resp) == MESSAGE_RESPONSE
    ra = a.decapsulate(resp, T0)
    assert ra.peer_key == b.public_key and ra.error is None
    [data] = ra.to_peer  # the staged packet, flushed on the new session
    assert message_type(data) == MESSAGE_TRANSPORT
    rb = b.decapsulate(data, T0)
    assert rb.to_tunnel == [p1] and rb.to_peer == []
    # B's "next" keypair is confirmed now, so B can send.
    q = [udp4(B4, A4, bytes([i]) * i) for i in range(1, 40)] + [udp6(B6, A6, b"v6 back")]
    out = b.encapsulate(a.public_key, q, T0 + 1)
    assert len(out) == len(q) and all(message_type(m) == MESSAGE_TRANSPORT for m in out)
    got = [r.to_tunnel for r in deliver(a, out, T0 + 1)]
    assert [p for ps in got for p in ps] == q  # padding stripped, order kept
    p = [udp6(A6, B6, b"x" * 1300), udp4(A4, B4, b"y" * 1371)]
    assert [r.to_tunnel[0] for r in deliver(b, a.encapsulate(b.public_key, p, T0 + 2), T0 + 2)] == p
    for dev in (a, b):
        assert dev.counters["handshake_completed"] == 1
    assert a.peer_stats(b.public_key)["last_handshake"] == T0
    assert b.peer_stats(a.public_key)["rx_packets"] == 3


def test_handshake_b_initiates():
    a, b = make_pair()
    q = udp4(B4, A4, b"from b")
    at_a, at_b = converse(b, a, b.encapsulate(a.public_key, [q], T0), T0)
    assert at_b == [q] and at_a == []
    p = udp4(A4, B4, b"reply")
    [msg] = a.encapsulate(b.public_key, [p], T0 + 0.5)
    assert b.decapsulate(msg, T0 + 0.5).to_tunnel == [p]
    assert a.counters["handshake_response_sent"] == 1 and b.counters["handshake_initiation_sent"] == 1


def test_responder_holds_data_until_confirmed():
    """The responder may not send on its fresh keypair before the initiator used it."""
    a, b = make_pair()
    [init] = a.encapsulate(b.public_key, [udp4(A4, B4, b"1")], T0)
    [resp] = b.decapsulate(init, T0).to_peer
    q = udp4(B4, A4, b"early")
    assert b.encapsulate(a.public_key, [q], T0) == []  # staged; no second initiation within 5 s
    [data] = a.decapsulate(resp, T0).to_peer
    rb = b.decapsulate(data, T0)
    [flushed] = rb.to_peer
    assert a.decapsulate(flushed, T0).to_tunnel == [q]


def test_simultaneous_initiation():
    """Both initiate at once: each consumes the other's initiation (dropping its own), so
    both responses miss; the retransmit timers sort it out, as in wireguard-go."""
    a, b = make_pair()
    ia = a.encapsulate(b.public_key, [udp4(A4, B4, b"a")], T0)
    ib = b.encapsulate(a.public_key, [udp4(B4, A4, b"b")], T0)
    at_a, at_b, now = simulate(a, b, T0, T0 + 30, to_b=ia, to_a=ib)
    assert at_b == [udp4(A4, B4, b"a")] and at_a == [udp4(B4, A4, b"b")]
    for dev, peer in ((a, b), (b, a)):  # one retransmit (REKEY_TIMEOUT + jitter) was enough
        assert T0 + 5 <= dev.peer_stats(peer.public_key)["last_handshake"] < T0 + 5.4
    for _ in range(3):  # and it keeps working both ways afterwards
        assert deliver(b, a.encapsulate(b.public_key, [udp4(A4, B4, b"z")], now), now)[0].to_tunnel
        assert deliver(a, b.encapsulate(a.public_key, [udp4(B4, A4, b"w")], now), now)[0].to_tunnel


def test_allowed_ips_source_filter():
    a, b = established()
    ok4, ok_subnet, ok6 = udp4(B4, A4, b"ok"), udp4("10.1.7.7", A4, b"subnet"), udp6(B6, A6, b"ok6")
    spoofed = [udp4("10.0.0.99", A4, b"spoof"), udp4(A4, A4, b"mine"), udp6("fd00::99", A6, b"spoof6")]
    res = deliver(a, b.encapsulate(a.public_key, [ok4, *spoofed, ok_subnet, ok6], T0), T0)
    assert [p for r in res for p in r.to_tunnel] == [ok4, ok_subnet, ok6]
    assert [r.error for r in res] == [None, "allowed_ips_drop", "allowed_ips_drop", "allowed_ips_drop", None, None]
    assert a.counters["allowed_ips_drop"] == 3
    # B accepts only A's own addresses (no subnet for A)
    res = deliver(b, a.encapsulate(b.public_key, [udp4("10.1.0.1", B4, b"x")], T0), T0)
    assert res[0].to_tunnel == [] and res[0].error == "allowed_ips_drop"


def test_bad_inner_packets_dropped():
    a, b = established()
    bad = [b"\x45" + bytes(10), b"\x60" + bytes(20), b"\x15" + bytes(40),
           udp4(B4, A4, b"x")[:2] + b"\x05\xdc" + udp4(B4, A4, b"x")[4:]]  # IP length > packet
    res = deliver(a, b.encapsulate(a.public_key, bad, T0), T0)
    assert [r.error for r in res] == ["bad_ip_packet"] * 4 and not any(r.to_tunnel for r in res)


def test_replay_duplicate_dropped_and_counted():
    a, b = established()
    [msg] = b.encapsulate(a.public_key, [udp4(B4, A4, b"once")], T0)
    assert a.decapsulate(msg, T0).to_tunnel == [udp4(B4, A4, b"once")]
    dup = a.decapsulate(msg, T0)  # the copy that came over the other path
    assert dup.to_tunnel == [] and dup.error == "replay" and dup.peer_key == b.public_key
    assert a.counters["replay"] == 1


def test_out_of_order_within_window_accepted_too_old_refused():
    a, b = established()
    packets = [udp4(B4, A4, struct.pack("!I", i)) for i in range(300)]
    msgs = b.encapsulate(a.public_key, packets, T0)
    order = list(range(300))
    random.Random(5).shuffle(order)
    got = [a.decapsulate(msgs[i], T0).to_tunnel for i in order]
    assert [p for ps in got for p in ps] == [packets[i] for i in order]
    # a message more than WINDOW counters behind the newest is refused
    old = b.encapsulate(a.public_key, [udp4(B4, A4, b"old")], T0)
    many = b.encapsulate(a.public_key, [udp4(B4, A4, b"n")] * (WINDOW + 2), T0)
    assert a.decapsulate(many[-1], T0).error is None
    assert a.decapsulate(old[0], T0).error == "replay"
    assert a.decapsulate(many[1], T0).error is None  # exactly WINDOW behind: accepted


def test_tampered_transport_dropped():
    a, b = established()
    [msg] = b.encapsulate(a.public_key, [udp4(B4, A4, b"t")], T0)
    for pos in (8, 20, len(msg) - 1):
        bad = bytearray(msg)
        bad[pos] ^= 0x80
        assert a.decapsulate(bytes(bad), T0).error == "decrypt"
    bad = bytearray(msg)
    bad[4] ^= 1
    assert a.decapsulate(bytes(bad), T0).error == "unknown_index"
    assert a.decapsulate(msg, T0).error is None  # forged counters did not move the window


def test_handshake_replay_and_flood():
    a, b = make_pair()
    [init] = a.encapsulate(b.public_key, [udp4(A4, B4, b"1")], T0)
    assert b.decapsulate(init, T0).error is None
    again = b.decapsulate(init, T0 + 1)
    assert again.error == "handshake_replay" and again.to_peer == []
    # A second device holding A's key: a newer timestamp, but within 20 ms of the last one
    a2 = Device(private_key=key("a static"), worker=1, random_bytes=DetRandom(b"a2"))
    a2.set_peer(b.public_key, [])
    [init2] = a2.encapsulate(b.public_key, [b"x"], T0 + 0.0168)
    assert b.decapsulate(init2, T0 + 0.0169).error == "handshake_flood"
    [init3] = a2.encapsulate(b.public_key, [b"x"], T0 + 6)
    assert b.decapsulate(init3, T0 + 6).error is None
    assert b.counters["handshake_replay"] == 1 and b.counters["handshake_flood"] == 1


def test_initiation_rate_limited_by_rekey_timeout():
    a, b = make_pair()
    assert len(a.encapsulate(b.public_key, [b"1"], T0)) == 1
    assert a.encapsulate(b.public_key, [b"2"], T0 + 4.9) == []
    assert a.peer_stats(b.public_key)["staged"] == 2
    [init] = a.encapsulate(b.public_key, [b"3"], T0 + 5.0)
    assert message_type(init) == MESSAGE_INITIATION


def test_staged_queue_bounded_oldest_dropped():
    a, b = make_pair(max_staged=8)
    packets = [udp4(A4, B4, struct.pack("!I", i)) for i in range(20)]
    init = a.encapsulate(b.public_key, packets, T0)
    assert a.counters["queue_drop"] == 12
    _, at_b = converse(a, b, init, T0)
    assert at_b == packets[12:]


def test_cookie_reply_under_load():
    a, b = make_pair()
    [init] = a.encapsulate(b.public_key, [udp4(A4, B4, b"load")], T0)
    r = b.decapsulate(init, T0, under_load=True, src=b"198.51.100.7:41641")
    assert r.peer_key is None and r.error == "under_load" and r.to_tunnel == []
    [cookie] = r.to_peer
    assert message_type(cookie) == MESSAGE_COOKIE_REPLY
    assert receiver_index(cookie) == struct.unpack_from("<I", init, 4)[0]
    assert b.counters["cookie_reply_sent"] == 1 and "handshake_initiation_received" not in b.counters
    rc = a.decapsulate(cookie, T0)
    assert rc.peer_key == b.public_key and rc.error is None and rc.to_peer == []
    # the retransmitted initiation carries mac2 and gets through while B is under load
    t1 = a.next_timer()
    assert T0 + 5 <= t1 < T0 + 5.334
    [(peer, [init2])] = a.update_timers(t1)
    assert peer == b.public_key and init2[132:] != bytes(16)
    # mac2 is bound to the source address: the same message from elsewhere is refused
    r3 = b.decapsulate(init2, t1, under_load=True, src=b"203.0.113.9:1")
    assert r3.error == "under_load" and len(r3.to_peer) == 1
    r2 = b.decapsulate(init2, t1, under_load=True, src=b"198.51.100.7:41641")
    assert r2.error is None and r2.peer_key == a.public_key and b.counters["handshake_response_sent"] == 1
    [data] = a.decapsulate(r2.to_peer[0], t1).to_peer
    assert b.decapsulate(data, t1).to_tunnel == [udp4(A4, B4, b"load")]


def test_response_under_load_gets_cookie():
    a, b = make_pair()
    [init] = a.encapsulate(b.public_key, [b"x"], T0)
    [resp] = b.decapsulate(init, T0).to_peer
    r = a.decapsulate(resp, T0, under_load=True, src=b"b-addr")
    assert r.error == "under_load" and receiver_index(r.to_peer[0]) == struct.unpack_from("<I", resp, 4)[0]
    assert b.decapsulate(r.to_peer[0], T0).error is None  # B stores the cookie


def test_bad_cookie_replies():
    a, b = make_pair()
    [init] = a.encapsulate(b.public_key, [b"x"], T0)
    cookie = b.decapsulate(init, T0, under_load=True, src=b"s").to_peer[0]
    bad = bytearray(cookie)
    bad[50] ^= 1
    assert a.decapsulate(bytes(bad), T0).error == "cookie_decrypt"
    bad = bytearray(cookie)
    bad[4] ^= 1
    assert a.decapsulate(bytes(bad), T0).error == "unknown_index"


def test_mac1_always_checked():
    a, b = make_pair()
    [init] = a.encapsulate(b.public_key, [b"x"], T0)
    bad = bytearray(init)
    bad[120] ^= 1
    assert b.decapsulate(bytes(bad), T0).error == "mac1"
    # an initiation for someone else fails mac1 too
    c = Device(private_key=key("c static"), random_bytes=DetRandom(b"c"))
    c.set_peer(a.public_key, [])
    assert c.decapsulate(init, T0).error == "mac1"


def test_initiator_static_without_state_change():
    a, b = make_pair()
    [init] = a.encapsulate(b.public_key, [b"x"], T0)
    # another worker of B's node: same key, no peers
    other = Device(private_key=key("b static"), worker=9, random_bytes=DetRandom(b"o"))
    assert other.initiator_static(init, T0) == a.public_key
    assert b.initiator_static(init, T0) == a.public_key
    assert other.counters == {} and b.counters == {}
    assert other.decapsulate(init, T0).error == "unknown_peer"
    assert b.decapsulate(init, T0).error is None  # the probe did not consume the timestamp
    c = Device(private_key=key("c static"), random_bytes=DetRandom(b"c"))
    assert c.initiator_static(init, T0) is None  # not for us (mac1)
    assert b.initiator_static(init[:-1], T0) is None and b.initiator_static(b"\x04" + bytes(40), T0) is None
    bad = bytearray(init)
    bad[50] ^= 1  # encrypted static corrupted, mac1 recomputed by nobody -> mac1 fails first
    assert b.initiator_static(bytes(bad), T0) is None


def test_indices_carry_worker_number():
    for seed in (b"1", b"2", b"3"):
        a, b = make_pair(seed=seed)
        [init] = a.encapsulate(b.public_key, [b"x"], T0)
        [resp] = b.decapsulate(init, T0).to_peer
        [data] = a.decapsulate(resp, T0).to_peer
        assert worker_of_index(struct.unpack_from("<I", init, 4)[0]) == A_WORKER
        assert worker_of_index(struct.unpack_from("<I", resp, 4)[0]) == B_WORKER
        assert worker_of_index(receiver_index(resp)) == A_WORKER
        assert worker_of_index(receiver_index(data)) == B_WORKER
        back = b.encapsulate(a.public_key, [b"y"], T0)
        assert all(worker_of_index(receiver_index(m)) == A_WORKER for m in back if m)


def test_set_peer_update_keeps_session_and_remove_peer():
    a, b = established()
    a.set_peer(b.public_key, [f"{B4}/32"])  # narrower AllowedIPs, same session
    assert a.peer_stats(b.public_key)["session"] and a.allowed_ips(b.public_key) == [f"{B4}/32"]
    [msg] = b.encapsulate(a.public_key, [udp4(B4, A4, b"still")], T0 + 1)
    assert a.decapsulate(msg, T0 + 1).to_tunnel == [udp4(B4, A4, b"still")]
    assert a.decapsulate(b.encapsulate(a.public_key, [udp6(B6, A6, b"v6")], T0)[0], T0).error == "allowed_ips_drop"
    a.remove_peer(b.public_key)
    assert a.peers() == [] and a.route(B4) is None and a._entries == {}
    [msg] = b.encapsulate(a.public_key, [udp4(B4, A4, b"gone")], T0 + 2)
    assert a.decapsulate(msg, T0 + 2).error == "unknown_index"
    assert a.encapsulate(b.public_key, [b"x"], T0) == [] and a.counters["unknown_peer_tx"] == 1
    a.remove_peer(b.public_key)  # idempotent


def test_route_longest_prefix():
    a, b = make_pair()
    c_key = Device(private_key=key("c static"), random_bytes=DetRandom(b"c")).public_key
    a.set_peer(c_key, ["10.1.2.0/24", "::/0"])
    assert a.route(B4) == b.public_key and a.route("10.1.9.9") == b.public_key
    assert a.route("10.1.2.3") == c_key and a.route(bytes([10, 1, 2, 3])) == c_key
    assert a.route(B6) == b.public_key and a.route("2001:db8::1") == c_key
    assert a.route("192.0.2.1") is None
    assert sorted(a.peers()) == sorted([b.public_key, c_key])


def test_decapsulate_batch_groups_by_peer():
    a, b = established()
    msgs = b.encapsulate(a.public_key, [udp4(B4, A4, bytes([i])) for i in range(5)], T0)
    results = a.decapsulate_batch([msgs[0], b"garbage", msgs[1], msgs[1], *msgs[2:]], T0)
    by_key = {r.peer_key: r for r in results}
    assert len(by_key[b.public_key].to_tunnel) == 5 and by_key[b.public_key].error == "replay"
    assert by_key[None].error == "malformed"
    assert list(by_key) == [b.public_key, None]


def test_own_key_and_bad_keys_are_our_bugs():
    a, _ = make_pair()
    import pytest

    with pytest.raises(ValueError):
        a.set_peer(a.public_key, [])
    with pytest.raises(ValueError):
        a.set_peer(b"short", [])
    with pytest.raises(ValueError):
        Device(private_key=bytes(32), worker=256, random_bytes=DetRandom(b"w"))


def test_low_order_peer_key_cannot_handshake():
    a, _ = make_pair()
    a.set_peer(bytes(32), ["10.9.0.0/16"])  # the all-zero point: DH is refused
    assert a.encapsulate(bytes(32), [b"x"], T0) == []
    assert a.counters["invalid_peer_key"] == 1


def _burst(b: Device, a_key: bytes, sizes: list[int]) -> list[bytes]:
    return b.encapsulate(a_key, [udp4(B4, A4, bytes([i % 251]) * n) for i, n in enumerate(sizes)], T0)


def test_decapsulate_run_gives_what_decapsulate_batch_gives():
    """A GRO burst (equal-size messages back to back, a shorter last one) decrypted whole:
    the same packets, counters and peer statistics as message by message."""
    (a1, b1), (a2, b2) = established(), established()  # deterministic: twins
    msgs = _burst(b1, a1.public_key, [1200] * 20 + [100])
    assert msgs == _burst(b2, a2.public_key, [1200] * 20 + [100])
    size = len(msgs[0])
    assert all(len(m) == size for m in msgs[:-1]) and len(msgs[-1]) < size
    run = a1.decapsulate_run(b"".join(msgs), size, T0 + 1)
    (batch,) = a2.decapsulate_batch(msgs, T0 + 1)
    assert run == batch and len(run.to_tunnel) == 21 and run.error is None
    assert a1.counters == a2.counters
    p1, p2 = a1._peers[b1.public_key], a2._peers[b2.public_key]
    assert (p1.rx_bytes, p1.rx_packets) == (p2.rx_bytes, p2.rx_packets)
    assert p1.timers.send_keepalive == p2.timers.send_keepalive is not None


def test_decapsulate_run_drops_a_tampered_and_a_replayed_message_only():
    (a1, b1), (a2, b2) = established(), established()
    msgs = _burst(b1, a1.public_key, [1000] * 6)
    _burst(b2, a2.public_key, [1000] * 6)
    msgs[2] = msgs[2][:-1] + bytes([msgs[2][-1] ^ 1])
    msgs[4] = msgs[1]  # a replay of an earlier one
    run = a1.decapsulate_run(b"".join(msgs), len(msgs[0]), T0)
    (batch,) = a2.decapsulate_batch(msgs, T0)
    assert run == batch and len(run.to_tunnel) == 4 and run.error == "replay"
    assert a1.counters == a2.counters and a1.counters["decrypt"] == 1 and a1.counters["replay"] == 1


def test_decapsulate_run_filters_inner_packets_as_batch_does():
    """The run's inline IPv4 path (a source already accepted in the run) keeps every check
    of `_inner`: a spoofed source, a bad IP length from an accepted source, trailing bytes
    trimmed, IPv6 and a second allowed source: the same as message by message."""
    good = udp4(B4, A4, b"g" * 1000)
    inner = [
        good,
        good[:2] + b"\x05\xdc" + good[4:],  # B's source again, IP length beyond the packet
        udp4(B4, A4, b"t" * 990) + bytes(10),  # trailing bytes after the IP length
        udp4("10.1.7.7", A4, b"s" * 1000),  # B's subnet
        udp4("10.0.0.99", A4, b"x" * 1000),  # not B's
        udp6(B6, A6, b"v" * 980),
        udp4(B4, A4, b"h" * 1000),
    ]
    assert len({len(p) for p in inner}) == 1
    (a1, b1), (a2, b2) = established(), established()
    msgs = b1.encapsulate(a1.public_key, inner, T0)
    assert msgs == b2.encapsulate(a2.public_key, inner, T0) and len({len(m) for m in msgs}) == 1
    run = a1.decapsulate_run(b"".join(msgs), len(msgs[0]), T0)
    (batch,) = a2.decapsulate_batch(msgs, T0)
    assert run == batch and a1.counters == a2.counters
    assert run.to_tunnel == [inner[0], inner[2][:-10], inner[3], inner[5], inner[6]]
    assert a1.counters["allowed_ips_drop"] == 1 and a1.counters["bad_ip_packet"] == 1


def test_decapsulate_run_declines_what_is_not_one_live_session():
    a, b = established()
    msgs = _burst(b, a.public_key, [500] * 3)
    size = len(msgs[0])
    before = dict(a.counters)
    other_index = msgs[1][:4] + bytes(4) + msgs[1][8:]
    assert a.decapsulate_run(msgs[0] + other_index + msgs[2], size, T0) is None
    assert a.decapsulate_run(msgs[0] + b"\x01" + msgs[1][1:], size, T0) is None  # not transport
    assert a.decapsulate_run(b"".join(msgs) + b"\x04\x00\x00\x00", size, T0) is None  # too short a tail
    assert a.decapsulate_run(b"".join(msgs), size, T0 + 10_000) is None  # expired: one by one
    assert a.counters == before
    # the side that answered the handshake holds an unconfirmed keypair until data arrives
    c, d = make_pair()
    (init,) = c.encapsulate(d.public_key, [udp4(A4, B4, b"x")], T0)
    (resp,) = d.decapsulate(init, T0).to_peer
    first = c.decapsulate(resp, T0).to_peer
    assert d.decapsulate_run(b"".join(first), len(first[0]), T0) is None
    assert d.decapsulate_batch(first, T0)[0].to_tunnel == [udp4(A4, B4, b"x")]


def test_transport_run_index():
    a, b = established()
    msgs = _burst(b, a.public_key, [300] * 4 + [20])
    size, blob = len(msgs[0]), b"".join(msgs)
    index = struct.unpack_from("<I", msgs[0], 4)[0]
    assert transport_run_index(blob, size) == index
    assert transport_run_index(msgs[0], size) == index
    assert transport_run_index(blob, size - 1) is None  # the boundaries do not line up
    assert transport_run_index(blob[:-1] + b"", 16) is None
    assert transport_run_index(b"", size) is None
    assert split_segments(blob, size) == msgs and split_segments(blob, 0) == [blob]
