"""The receive side of one connection: out-of-order reassembly with SACK and D-SACK
(RFC 2018, 2883), immediate ACKs (RFC 5681 4.2), FIN out of order, byte-at-a-time."""

from __future__ import annotations

import pytest
from sunbeam.shared.proto.tcp import PeerFinished, Readable
from sunbeam.shared.proto.tcp.segment import ACK, FIN, PSH, parse_options
from sunbeam.shared.proto.tcp.tcb import Config

from .scripted import Scripted


def test_out_of_order_reassembly_with_sack():
    s = Scripted()
    cid, synack = s.passive_open()
    s.events()
    mine = synack.seq + 1
    data = bytes(range(256)) * 20
    chunks = [(1001 + i, data[i:i + 1000]) for i in range(0, len(data), 1000)]  # 6 segments
    order = [2, 4, 1, 5, 3, 0]
    for k, idx in enumerate(order[:-1]):
        seq, chunk = chunks[idx]
        (dup,) = s.deliver(ACK | PSH, seq, mine, chunk)  # each out-of-order segment: an immediate dupack
        assert dup.ack == 1001
        blocks = parse_options(dup.options).sack
        assert blocks and blocks[0][0] <= seq < blocks[0][1]  # first block: the latest segment
    assert s.events() == []  # nothing readable yet: the first segment is missing
    assert [tuple(b) for b in s.stack._by_id[cid].ooo.ranges] == [(2001, 1001 + len(data))]
    seq, chunk = chunks[0]
    (ack,) = s.deliver(ACK | PSH, seq, mine, chunk)  # fills the gap: everything at once
    assert ack.ack == 1001 + len(data) and ack.options == b""
    assert s.events() == [Readable(cid)]
    assert s.stack.read(cid, 1 << 20) == data


def test_duplicates_are_dsacked():
    s = Scripted()
    _, synack = s.passive_open()
    mine = synack.seq + 1
    s.deliver(ACK, 1001, mine, b"a" * 100)
    (ack,) = s.deliver(ACK, 1001, mine, b"a" * 100)  # the same segment again
    assert ack.ack == 1101 and parse_options(ack.options).sack == ((1001, 1101),)
    s.deliver(ACK, 1201, mine, b"c" * 100)  # out of order
    (ack,) = s.deliver(ACK, 1201, mine, b"c" * 100)  # and again: D-SACK first, then the SACK block
    assert parse_options(ack.options).sack == ((1201, 1301), (1201, 1301))


def test_fin_out_of_order_waits_for_the_data():
    s = Scripted()
    cid, synack = s.passive_open()
    s.events()
    mine = synack.seq + 1
    s.deliver(FIN | ACK, 1006, mine, b"world")
    assert s.events() == [] and s.stack.info(cid)["state"] == "ESTABLISHED"
    (ack,) = s.deliver(ACK, 1001, mine, b"hello")
    assert ack.ack == 1012  # data + FIN
    assert s.events() == [Readable(cid), PeerFinished(cid)]
    assert s.stack.read(cid) == b"helloworld" and s.stack.info(cid)["state"] == "CLOSE-WAIT"


def test_byte_at_a_time_and_all_at_once_agree():
    data = bytes(range(200))
    results = []
    for step in (1, 7, 200):
        s = Scripted()
        cid, synack = s.passive_open()
        for i in range(0, len(data), step):
            s.stack.receive([s.packet(ACK | PSH, 1001 + i, synack.seq + 1, data[i:i + step])], s.now)
        (ack,) = s.out()  # one stretch ACK for the whole batch of arrivals
        assert ack.ack == 1201
        results.append(s.stack.read(cid, 1000))
    assert results == [data] * 3


def test_overlapping_retransmission_is_trimmed():
    s = Scripted()
    cid, synack = s.passive_open()
    mine = synack.seq + 1
    s.deliver(ACK, 1001, mine, b"abcdef")
    s.deliver(ACK, 1004, mine, b"defghi")  # 3 old bytes, 3 new ones
    assert s.stack.read(cid) == b"abcdefghi"


def _batch(s: Scripted, first_seq: int, ack: int, n: int) -> list:
    """``n`` in-order 1000-byte segments from ``first_seq`` in one receive batch; our ACKs."""
    pkts = [s.packet(ACK, first_seq + i * 1000, ack, bytes(1000)) for i in range(n)]
    s.stack.receive(pkts, s.now)
    return [x for x in s.out() if not x.payload]


def test_one_stretch_ack_per_batch_until_a_hole_then_every_second_segment():
    """A clean path: one ACK per batch. After out-of-order data (a loss), in-order segments
    are ACKed every second one for a while (quick ACKs), so losing one ACK does not leave a
    whole burst unacknowledged until the sender's RTO."""
    s = Scripted()
    cid, synack = s.passive_open()
    ack = synack.seq + 1
    seq = 1001
    acks = _batch(s, seq, ack, 8)
    assert [a.ack for a in acks] == [seq + 8000]  # one stretch ACK for the batch
    seq += 8000
    # a hole: the segment at seq is lost, the next one arrives (immediate duplicate ACK)
    (dup,) = s.deliver(ACK, seq + 1000, ack, bytes(1000))
    assert dup.ack == seq
    (filled,) = s.deliver(ACK, seq, ack, bytes(1000))  # the retransmission fills it
    assert filled.ack == seq + 2000
    seq += 2000
    acks = _batch(s, seq, ack, 8)
    assert [a.ack for a in acks] == [seq + 2000 * i for i in range(1, 5)]  # every second segment
    seq += 8000
    conn = s.stack._by_id[cid]
    for _ in range(300 // 8):  # the quick-ACK mode runs out; stretch ACKs again
        _batch(s, seq, ack, 8)
        seq += 8000
    assert conn.quick_acks == 0
    assert [a.ack for a in _batch(s, seq, ack, 8)] == [seq + 8000]
    got = 0
    while chunk := s.stack.read(cid):
        got += len(chunk)
    assert got == seq + 8000 - 1001  # every byte delivered once, in order


def test_quick_acks_are_bounded_and_configurable():
    """Linux's TCP_MAX_QUICKACKS (16) by default; 0 turns the mode off (one stretch ACK per
    batch even after a hole); out-of-range values are refused."""
    assert Config().quick_acks == 16
    with pytest.raises(ValueError, match="quick_acks -1"):
        Config(quick_acks=-1)
    with pytest.raises(ValueError, match="quick_acks 1025"):
        Config(quick_acks=1025)
    for quick, expect in ((16, 8), (0, 1)):
        s = Scripted(quick_acks=quick)
        _cid, synack = s.passive_open()
        ack, seq = synack.seq + 1, 1001
        s.deliver(ACK, seq + 1000, ack, bytes(1000))  # a hole at seq
        (filled,) = s.deliver(ACK, seq, ack, bytes(1000))
        assert filled.ack == seq + 2000
        seq += 2000
        acks = _batch(s, seq, ack, 32)
        assert len(acks) == expect + (1 if quick else 0), (quick, [a.ack for a in acks])
        assert acks[-1].ack == seq + 32000



def test_a_sparse_ack_covering_a_burst_is_split_in_two():
    """A burst that arrives after a quiet spell (a small window on a long path) is ACKed
    twice: first everything but its last segment, then all of it. Losing either ACK no
    longer leaves the whole flight unacknowledged. The first ACK's window reaches the right
    edge already advertised (to the window shift's unit), and neither ACK repeats an ACK
    number (a repeat would count as a duplicate ACK at the sender)."""
    s = Scripted()
    cid, synack = s.passive_open()
    conn = s.stack._by_id[cid]
    unit = 1 << conn.rcv_ws
    assert unit > 1
    ack, seq = synack.seq + 1, 1001
    sent: list = []
    for n, read in ((8, True), (3, True), (2, False), (5, False)):
        s.now += 0.043  # one round trip later, the next burst
        adv = conn.rcv_adv
        acks = _batch(s, seq, ack, n)
        assert [a.ack for a in acks] == [seq + (n - 1) * 1000, seq + n * 1000]
        assert all(a.options == b"" for a in acks)
        assert adv - unit < acks[0].ack + (acks[0].window << conn.rcv_ws) <= adv
        sent += acks
        seq += n * 1000
        while read and s.stack.read(cid):
            pass
    assert s.stack.counters["split_acks"] == 4
    numbers = [a.ack for a in sent]
    assert numbers == sorted(set(numbers))
    edges = [a.ack + (a.window << conn.rcv_ws) for a in sent]
    assert all(later > earlier - unit for earlier, later in zip(edges, edges[1:]))
    assert max(edges) <= conn.rcv_adv

    s.now += 0.043
    assert [a.ack for a in _batch(s, seq, ack, 1)] == [seq + 1000]  # one segment: one ACK
    seq += 1000
    assert [a.ack for a in _batch(s, seq, ack, 8)] == [seq + 8000]  # ACKs already frequent: one
    assert s.stack.counters["split_acks"] == 4
    assert len(s.stack.read(cid, 1 << 20)) == (2 + 5 + 1 + 8) * 1000  # all but the 11 segments read above


def test_split_acks_can_be_turned_off_and_stay_out_of_a_hole():
    s = Scripted(split_acks=False)
    _cid, synack = s.passive_open()
    ack, seq = synack.seq + 1, 1001
    s.now += 0.05
    assert [a.ack for a in _batch(s, seq, ack, 8)] == [seq + 8000]
    assert s.stack.counters["split_acks"] == 0

    s = Scripted(quick_acks=0)
    _cid, synack = s.passive_open()
    ack, seq = synack.seq + 1, 1001
    s.now += 0.05
    (dup,) = s.deliver(ACK, seq + 1000, ack, bytes(1000))  # out of order: an immediate SACK
    assert dup.ack == seq and parse_options(dup.options).sack
    s.now += 0.05
    acks = _batch(s, seq + 2000, ack, 4)  # more beyond the hole: each answered at once, no split
    assert [a.ack for a in acks] == [seq] * 4 and s.stack.counters["split_acks"] == 0


def test_no_split_ack_repeats_what_our_data_already_acknowledged():
    """Our data segments carry ACK = RCV.NXT too: after one acknowledged a burst, the next
    lone segment gets one ACK, not a first half that repeats the data's ACK number."""
    s = Scripted()
    cid, synack = s.passive_open()
    ack, seq = synack.seq + 1, 1001
    s.now += 0.05
    s.stack.send(cid, b"x" * 100, s.now)
    s.stack.receive([s.packet(ACK, seq + i * 1000, ack, bytes(1000)) for i in range(3)], s.now)
    (data,) = s.out()  # the burst's ACK rides on our data
    assert data.payload == b"x" * 100 and data.ack == seq + 3000
    seq += 3000
    s.now += 0.05
    assert [a.ack for a in _batch(s, seq, ack + 100, 1)] == [seq + 1000]
    assert s.stack.counters["split_acks"] == 0


def test_relayed_segments_cap_the_advertised_window_and_nothing_in_flight_is_refused():
    """Segments that came over DERP (``receive(..., relayed=True)``) make the connection
    advertise at most ``relayed_window``: a peer's DERP queue drops what a 4 MB window lets
    it burst. The edge we advertise then lies left of RCV.ADV, but data up to RCV.ADV is
    still taken; a segment that comes another way opens the window again."""
    s = Scripted(recv_buffer=4 << 20, relayed_window=128 << 10)
    cid, synack = s.passive_open()
    conn = s.stack._by_id[cid]
    ws, mine, seq = conn.rcv_ws, synack.seq + 1, 1001

    def send(payload: bytes, relayed: bool, at: int | None = None) -> list:
        s.stack.receive([s.packet(ACK, seq if at is None else at, mine, payload)], s.now, relayed=relayed)
        return s.out() + s.advance(0.5)  # the delayed ACK too

    (ack,) = send(b"a" * 1000, relayed=False)
    seq += 1000
    assert ack.window << ws > 3 << 20
    far_edge = conn.rcv_adv
    (ack,) = send(b"b" * 1000, relayed=True)
    seq += 1000
    assert ack.ack == seq and ack.window << ws == 128 << 10 and conn.rcv_adv == far_edge
    # beyond the edge we advertise, inside the one we advertised before: kept out of order
    unacceptable = s.stack.counters["unacceptable"]
    (ack,) = send(b"c" * 1000, relayed=True, at=seq + (1 << 20))
    assert ack.ack == seq and parse_options(ack.options).sack == ((seq + (1 << 20), seq + (1 << 20) + 1000),)
    assert ack.window << ws == 128 << 10 and s.stack.counters["unacceptable"] == unacceptable
    for _ in range(3):  # the advertised edge moves on with RCV.NXT, 128 kB ahead of it
        acks = send(b"d" * 1000, relayed=True)
        seq += 1000
        assert acks[-1].ack == seq and acks[-1].window << ws == 128 << 10
    assert len(s.stack.read(cid, 1 << 20)) == 5000
    (ack,) = send(b"e" * 1000, relayed=False)
    seq += 1000
    assert ack.ack + (ack.window << ws) > far_edge - (1 << ws) and conn.rcv_adv >= far_edge
