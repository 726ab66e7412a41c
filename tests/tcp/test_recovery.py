"""Loss recovery and flow control against a scripted peer: RTO backoff and Karn (RFC 6298),
fast retransmit on three duplicate ACKs (RFC 5681 / 6582), SACK + RACK, zero window and
the persist probe, bounded buffers."""

from __future__ import annotations

import pytest
from sunbeam.shared.proto.tcp import Closed, Reset, Writable
from sunbeam.shared.proto.tcp.segment import (
    ACK,
    PSH,
    build_sack_option,
    build_syn_options,
)

from .scripted import Scripted

NO_SACK = build_syn_options(1240, 7, False)


def test_rto_backoff_and_karn():
    s = Scripted(min_rto=0.2)
    cid, _ = s.active_open(options=NO_SACK)
    conn = s.stack._by_id[cid]
    una = conn.snd_una
    assert conn.rtt.srtt is not None  # sampled from the handshake (SYN sent once)
    s.stack.send(cid, b"a" * 100, s.now)
    (seg,) = s.out()
    rto0 = conn.rtt.rto
    assert rto0 == 0.2  # min RTO (the handshake RTT here is 0)
    got = []
    for _ in range(4):
        t = s.stack.next_timer()
        s.now = t
        s.stack.handle_timer(t)
        (re,) = s.out()
        assert re.seq == seg.seq and re.payload == seg.payload
        got.append(round(t, 6))
    assert got == [0.2, 0.6, 1.4, 3.0]  # 0.2, then doubling: 0.4, 0.8, 1.6 apart
    assert conn.rtt.rto == 3.2
    # the ACK for the retransmitted segment gives no RTT sample (Karn): RTO stays backed off
    s.now += 0.05
    assert s.deliver(ACK, 5001, una + 100) == []
    assert conn.rtt.rto == 3.2
    # a fresh segment, acknowledged without retransmission, is sampled again
    s.stack.send(cid, b"b" * 100, s.now)
    s.out()
    s.now += 0.03
    s.deliver(ACK, 5001, una + 200)
    assert conn.rtt.rto < 1.0 and conn.rtt.backoffs == 0


def test_retransmissions_give_up():
    s = Scripted(max_retries=3, min_rto=0.2)
    cid, _ = s.active_open()
    s.stack.send(cid, b"x" * 10, s.now)
    s.out()
    s.advance(60)
    assert s.events()[-2:] == [Reset(cid, "timeout"), Closed(cid)]


def _established_sender(options: bytes, segments: int, **kw) -> tuple[Scripted, int, int]:
    s = Scripted(**kw)
    cid, _ = s.active_open(options=options, window=65535)
    una = s.stack._by_id[cid].snd_una
    s.stack._by_id[cid].cc.cwnd = 20 * 1240
    s.stack.send(cid, bytes(range(256)) * 5 * segments, s.now)
    return s, cid, una


@pytest.mark.parametrize(("congestion", "beta"), [("newreno", 0.5), ("cubic", 0.7)])
def test_fast_retransmit_on_three_dupacks_newreno(congestion, beta):
    """NewReno's recovery (RFC 6582) with either window arithmetic: NewReno halves the
    flight (RFC 5681 eq. 4), CUBIC keeps 0.7 of it (RFC 9438 4.6)."""
    s, cid, una = _established_sender(NO_SACK, 10, congestion=congestion)
    segs = s.out()
    assert len(segs) == 11 and segs[0].seq == una  # 10 * 1280 bytes in 1240-byte segments
    conn = s.stack._by_id[cid]
    assert s.deliver(ACK, 5001, una) == []  # nothing new: just an ACK for what was there
    new = []
    for i in range(3):  # three duplicate ACKs: segment 1 is missing
        s.now += 0.001
        new += s.deliver(ACK, 5001, una)
    assert s.now < 0.2  # long before any RTO
    rexmit = [x for x in new if x.seq == una]
    assert len(rexmit) == 1 and rexmit[0].payload == segs[0].payload
    assert conn.recovery and conn.cc.ssthresh == max(int(len(b"".join(x.payload for x in segs)) * beta), 2 * 1240)
    assert s.stack.counters["fast_retransmit"] == 1
    # partial ACK: the next hole goes at once (NewReno)
    out = s.deliver(ACK, 5001, una + 3 * 1240)
    assert [x.seq for x in out][:1] == [una + 3 * 1240]
    # the full ACK ends recovery
    s.deliver(ACK, 5001, conn.snd_max)
    assert not conn.recovery and conn.cc.cwnd <= conn.cc.ssthresh + 1240


def test_sack_loss_detection_retransmits_only_the_hole():
    s, cid, una = _established_sender(build_syn_options(1240, 7, True), 10)
    segs = s.out()
    conn = s.stack._by_id[cid]
    s.now += 0.01
    # segments 2..6 arrived, 1 did not: the peer SACKs them
    blocks = build_sack_option([(segs[1].seq, segs[6].seq)])
    out = s.deliver(ACK, 5001, una, options=blocks)  # five SACKed, no reordering seen: lost at once
    rexmit = [x for x in out if x.seq < conn.snd_max and x.payload]
    assert [x.seq for x in rexmit] == [una]
    assert conn.recovery and s.stack.counters["retransmit"] == 1


def test_zero_window_and_persist_probe():
    s = Scripted(min_rto=0.2)
    cid, _ = s.active_open(options=build_syn_options(1240, None, True), window=1000)
    conn = s.stack._by_id[cid]
    una = conn.snd_una
    s.stack.send(cid, b"z" * 5000, s.now)
    (first,) = s.out()
    assert len(first.payload) == 1000  # the peer's window, not more
    # the peer takes it but its window is now closed
    assert s.deliver(ACK, 5001, una + 1000, window=0) == []
    probes = s.advance(0.25)
    assert len(probes) == 1 and probes[0].seq == una + 999 and probes[0].payload == b""  # SND.UNA - 1
    probes = s.advance(0.45)
    assert len(probes) == 1  # backed off: 0.4 s later
    assert s.stack.counters["window_probe"] == 2
    # the window opens: data flows again
    out = s.deliver(ACK, 5001, una + 1000, window=3000)
    # two full segments; the 520-byte rest waits (sender SWS avoidance: < MSS and < half the window)
    assert [len(x.payload) for x in out] == [1240, 1240] and out[0].seq == una + 1000


def test_receiver_zero_window_and_reopen():
    s = Scripted(recv_buffer=4096)
    cid, synack = s.passive_open(options=build_syn_options(1240, None, True))
    mine = synack.seq + 1
    seq = 1001
    for _ in range(3):
        s.deliver(ACK | PSH, seq, mine, b"q" * 1240)
        seq += 1240
    (ack,) = s.deliver(ACK | PSH, seq, mine, b"q" * 376)  # fills the 4096-byte buffer
    seq += 376
    assert ack.window == 0 and ack.ack == seq
    (ack,) = s.deliver(ACK | PSH, seq, mine, b"overflow")  # beyond the window: dropped, re-ACKed
    assert ack.ack == seq and ack.window == 0 and s.stack.counters["zero_window_drop"] == 1
    (ack,) = s.deliver(ACK, seq - 1, mine)  # a window probe (SEQ = RCV.NXT - 1)
    assert ack.ack == seq and ack.window == 0
    assert s.stack.read(cid, 100) == b"q" * 100
    assert s.out() == []  # 100 bytes free: not worth a window update (SWS avoidance)
    s.stack.read(cid, 4000)
    (upd,) = s.out()
    assert upd.flags == ACK and upd.window == 4096 and upd.ack == seq


def test_send_buffer_bound_and_writable():
    s = Scripted(send_buffer=10_000)
    cid, _ = s.active_open(window=65535)
    s.events()
    assert s.stack.send(cid, b"w" * 25_000, s.now) == 10_000
    assert s.stack.send(cid, b"w", s.now) == 0
    segs = s.out()
    una = s.stack._by_id[cid].snd_una
    s.deliver(ACK, 5001, una + 1240)
    assert s.events() == []  # 1240 free: less than a quarter
    s.deliver(ACK, 5001, una + 5 * 1240)
    assert s.events() == [Writable(cid)]
    assert sum(len(x.payload) for x in segs) == 10_000
