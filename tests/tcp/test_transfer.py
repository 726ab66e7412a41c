"""Two of our stacks back to back through an in-memory link: clean, and lossy + reordering +
duplicating (seeded), with every byte checked by sha256; flow control with a stalled reader."""

from __future__ import annotations

import hashlib
import random

import pytest
from sunbeam.shared.proto.tcp import (
    Closed,
    ConnectionRequest,
    PeerFinished,
    Readable,
    Writable,
)

from .link import Impairer, Pair, Transfer, make_stack

MB = 1_000_000


@pytest.mark.parametrize("v6", [False, True])
def test_clean_link_both_ways(v6):
    a_addr, b_addr = ("fd00::a", "fd00::b") if v6 else ("10.0.0.1", "10.0.0.2")
    rng = random.Random(5)
    a, b = make_stack(a_addr, 1), make_stack(b_addr, 2)
    pair = Pair(a, b, delay=2)
    t = Transfer(pair, b_addr, 80, rng.randbytes(2 * MB), rng.randbytes(2 * MB), src_a=a_addr)
    t.run(max_seconds=60)
    t.check()
    assert a.counters["retransmit"] == 0 and b.counters["retransmit"] == 0
    print(f"\nclean {'IPv6' if v6 else 'IPv4'}: 2 MB each way in {pair.now:.3f} simulated s")


@pytest.mark.parametrize("seed", [1, 2])
def test_lossy_reordering_duplicating_link_5mb_each_way(seed):
    rng = random.Random(seed)
    a, b = make_stack("10.0.0.1", seed), make_stack("10.0.0.2", seed + 50)
    ab = Impairer(seed, loss=0.05, dup=0.01, reorder=0.1)
    ba = Impairer(seed + 100, loss=0.05, dup=0.01, reorder=0.1)
    pair = Pair(a, b, ab, ba, delay=5)
    t = Transfer(pair, "10.0.0.2", 80, rng.randbytes(5 * MB), rng.randbytes(5 * MB), src_a="10.0.0.1")
    t.run(max_seconds=300)
    t.check()
    assert ab.stats["lost"] > 100 and ba.stats["reordered"] > 100 and ab.stats["duplicated"] > 10
    assert a.counters["retransmit"] > 0 and b.counters["retransmit"] > 0
    print(f"\nlossy seed {seed}: 5 MB each way in {pair.now:.1f} simulated s; a {dict(a.counters)}")


def test_flow_control_stalled_reader_closes_the_window():
    rng = random.Random(9)
    data = rng.randbytes(6 * MB)
    a, b = make_stack("10.0.0.1", 1, send_buffer=1 << 20), make_stack("10.0.0.2", 2, recv_buffer=1 << 20)
    b.listen(80)
    pair = Pair(a, b, delay=2)
    cid = a.connect("10.0.0.1", ("10.0.0.2", 80), pair.now)
    server = None
    sent = 0
    got = bytearray()
    writable = 0
    max_rcv = max_ooo = 0
    zero_window_seen = False

    def on_event(side, ev):
        nonlocal server, writable
        if side == "b" and server is None and hasattr(ev, "src"):
            server = ev.conn_id
            b.accept(server)
        if side == "a" and isinstance(ev, Writable):
            writable += 1

    pair.on_event = on_event
    for step in range(40_000):
        if sent < len(data):
            sent += a.send(cid, memoryview(data)[sent:sent + (1 << 18)], pair.now)
            if sent == len(data):
                a.shutdown(cid, pair.now)
        stalled = 20 <= step < 2000  # the reader takes a long break (2 simulated seconds)
        if server is not None and not stalled:
            while chunk := b.read(server, 1 << 16):
                got += chunk
        pair.step()
        if server is not None:
            conn_b = b._by_id.get(server)
            if conn_b is not None:
                max_rcv = max(max_rcv, len(conn_b.rcv_buf))
                max_ooo = max(max_ooo, conn_b.ooo.nbytes if conn_b.ooo else 0)
        info = a.info(cid)
        if stalled and step > 1000:
            zero_window_seen |= info["snd_wnd"] == 0
            assert info["send_buffered"] <= 1 << 20
        if len(got) == len(data):
            break
    assert zero_window_seen  # the sender saw our closed window
    assert max_rcv <= 1 << 20 and max_ooo == 0  # memory stayed bounded by the receive buffer
    assert writable >= 1  # the full send buffer drained again
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert a.counters["window_probe"] >= 1


def test_many_short_connections_leave_nothing_behind():
    """Request/response churn over a lossy link: every id ends Closed, nothing leaks."""
    rng = random.Random(11)
    a, b = make_stack("10.0.0.1", 3, time_wait=1.0), make_stack("10.0.0.2", 4, time_wait=1.0)
    b.listen(80)
    pair = Pair(a, b, Impairer(1, loss=0.03, reorder=0.05, dup=0.01), Impairer(2, loss=0.03, reorder=0.05), delay=3)
    requests = {a.connect("10.0.0.1", ("10.0.0.2", 80), 0.0): rng.randbytes(rng.randint(1, 20_000)) for _ in range(60)}
    replies: dict[int, bytearray] = {}
    got = {cid: bytearray() for cid in requests}
    closed = {"a": set(), "b": set()}

    def on_event(side, ev):
        stack = a if side == "a" else b
        if isinstance(ev, ConnectionRequest):
            replies[ev.conn_id] = bytearray()
            stack.accept(ev.conn_id)
        elif isinstance(ev, Readable) and side == "b":
            replies[ev.conn_id] += stack.read(ev.conn_id, 1 << 20)
        elif isinstance(ev, Readable):
            got[ev.conn_id] += stack.read(ev.conn_id, 1 << 20)
        elif isinstance(ev, PeerFinished) and side == "b":  # echo the request back reversed, then close
            replies[ev.conn_id] += stack.read(ev.conn_id, 1 << 20)
            assert stack.send(ev.conn_id, bytes(replies[ev.conn_id][::-1]), pair.now) == len(replies[ev.conn_id])
            stack.shutdown(ev.conn_id, pair.now)
        elif isinstance(ev, Closed):
            closed[side].add(ev.conn_id)

    pair.on_event = on_event
    for cid, req in requests.items():
        assert a.send(cid, req, 0.0) == len(req)
        a.shutdown(cid, 0.0)
    while pair.now < 120 and not (len(closed["a"]) == len(closed["b"]) == len(requests) and not a._by_key
                                   and not b._by_key):
        pair.step()
    assert closed["a"] == set(requests) and len(closed["b"]) == len(requests)
    assert all(got[cid] == req[::-1] for cid, req in requests.items())
    assert not a._by_key and not b._by_key and not a._by_id and not b._by_id  # TIME-WAIT over too
    assert a.next_timer() is None and b.next_timer() is None


def test_long_rtt_tail_losses_are_probed_not_timed_out():
    """At 100 ms each way the 2 x SRTT probe time lies past the 200 ms RTO floor: the probe is
    then due with the RTO and goes instead of it (RFC 8985 7.2), so tail losses cost a probe,
    not a collapse to one segment (the refnet link bench saw 36-42 RTOs per 20 MB, 0 probes)."""
    rng = random.Random(11)
    a, b = make_stack("10.0.0.1", 11), make_stack("10.0.0.2", 12)
    ab, ba = Impairer(41, loss=0.02), Impairer(42, loss=0.02)  # draws with tail losses
    pair = Pair(a, b, ab, ba, delay=100)
    t = Transfer(pair, "10.0.0.2", 80, rng.randbytes(4 * MB), b"", src_a="10.0.0.1")
    t.run(max_seconds=600)
    t.check()
    assert ab.stats["lost"] > 20, ab.stats
    assert a.counters["tail_loss_probe"] > 0, dict(a.counters)
    assert a.counters["rto"] <= a.counters["tail_loss_probe"], dict(a.counters)
    print(f"\n100 ms each way, 2 % loss: 4 MB in {pair.now:.1f} simulated s; a {dict(a.counters)}")
