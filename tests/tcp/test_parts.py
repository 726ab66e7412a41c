"""The small cores on their own: out-of-order reassembly, SACK scoreboard, RTO estimator, RACK."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sunbeam.shared.proto.tcp.rack import Rack
from sunbeam.shared.proto.tcp.reassembly import Reassembly
from sunbeam.shared.proto.tcp.rtt import RttEstimator
from sunbeam.shared.proto.tcp.scoreboard import Scoreboard


def test_reassembly_in_any_order_with_overlaps():
    data = bytes(random.Random(1).randbytes(5000))
    r = Reassembly()
    pieces = [(100, 300), (600, 900), (250, 700), (1000, 1200), (950, 1100), (600, 900)]
    for s, e in pieces:
        r.add(s, data[s:e])
    assert [tuple(x) for x in r.ranges] == [(100, 900), (950, 1200)]
    assert r.nbytes == 800 + 250
    assert r.pop_ready(50) == []  # still a gap below 100
    out = b"".join(r.pop_ready(100))
    assert out == data[100:900] and r.nbytes == 250
    assert [tuple(x) for x in r.ranges] == [(950, 1200)]
    out = b"".join(r.pop_ready(1000))  # 950..1000 arrived in order meanwhile: the rest is trimmed
    assert out == data[1000:1200] and not r
    assert r.add(10, b"") == 0


@given(st.lists(st.tuples(st.integers(0, 3000), st.integers(1, 400)), max_size=40), st.randoms())
def test_reassembly_property(pieces, rnd):
    data = bytes(rnd.randbytes(4000))
    r = Reassembly()
    have = set()
    for s, n in pieces:
        s += 1
        r.add(s, data[s:s + n])
        have.update(range(s, min(s + n, 4000)))
    # stored bytes are exactly the union, ranges merged and sorted
    assert r.nbytes == len(have)
    flat = [(a, b) for a, b in r.ranges]
    assert all(a < b for a, b in flat) and all(flat[i][1] < flat[i + 1][0] for i in range(len(flat) - 1))
    assert set().union(*(range(a, b) for a, b in flat)) == have if flat else not have
    for a, b in flat:  # every byte is the right byte
        assert b"".join(c for s, c in zip(r.starts, r.chunks) if a <= s < b) == data[a:b]
    blocks = r.sack_blocks()
    assert len(blocks) <= 4 and all(list(b) in r.ranges for b in blocks)


def test_sack_blocks_latest_first():
    r = Reassembly()
    for s in (100, 300, 500, 700, 900):
        r.add(s, b"x" * 50)
    r.add(300, b"x" * 10)  # duplicate: not "latest"
    r.add(520, b"y" * 40)
    assert r.sack_blocks() == [(500, 560), (900, 950), (700, 750), (300, 350)]
    assert r.sack_blocks(2) == [(500, 560), (900, 950)]


def test_scoreboard():
    sb = Scoreboard()
    una, smax, mss = 1000, 20000, 1000
    assert sb.add(3000, 4000, una, smax) and sb.add(5000, 6000, una, smax)
    assert not sb.add(3000, 3500, una, smax)  # nothing new
    assert sb.add(4000, 5000, una, smax)  # merges into 3000..6000
    assert sb.blocks == [[3000, 6000]] and sb.sacked == 3000
    assert sb.add(500, 1500, una, smax) and sb.blocks[0] == [1000, 1500]  # clipped to SND.UNA
    assert sb.lost_boundary(mss) == 3000  # > 2 MSS SACKed above: the hole below is lost
    assert sb.next_hole(1000, 3000) == (1500, 3000)
    assert sb.hole_bytes(1000, 6000) == 1500
    sb.ack(3500)
    assert sb.blocks == [[3500, 6000]] and sb.sacked == 2500
    sb.clear()
    assert not sb and sb.sacked == 0 and sb.lost_boundary(mss) == 0


def test_rto_estimator_rfc6298():
    r = RttEstimator(min_rto=0.2, max_rto=60)
    assert r.rto == 1.0  # before any sample (2.1)
    r.sample(0.5)
    assert (r.srtt, r.rttvar, r.rto) == (0.5, 0.25, 1.5)  # 2.2
    r.sample(0.1)
    assert abs(r.rttvar - (0.75 * 0.25 + 0.25 * 0.4)) < 1e-12 and abs(r.srtt - (0.875 * 0.5 + 0.125 * 0.1)) < 1e-12
    r.sample(0.001)
    r.sample(0.001)
    assert r.rto >= 0.2
    base = r.rto
    r.expired()
    r.expired()
    assert r.backoffs == 2 and r.rto == 4 * base  # 5.5
    for _ in range(20):
        r.expired()
    assert r.rto == 60  # capped
    r.sample(0.01)  # a new sample ends the backoff (5.7 note)
    assert r.backoffs == 0 and r.rto == r.srtt + max(0.2, 4 * r.rttvar)
    # a steady 100 ms path: the floor applies to the variance term, as Linux's, so the RTO
    # stays a floor's width above SRTT (0.3 s) instead of sitting at 0.2 s, one RTT away
    steady = RttEstimator(min_rto=0.2, max_rto=60)
    for _ in range(100):
        steady.sample(0.1)
    assert steady.rto == pytest.approx(0.3)
    r2 = RttEstimator()
    r2.handshake_retried()
    assert r2.rto == 3.0  # 5.7


def test_rack_detects_loss_and_lost_retransmission():
    rk = Rack(0)
    for i in range(6):  # six segments at t = 0, 1, ... ms
        rk.sent(i * 100, i * 100 + 100, i * 0.001)
    rk.sacked(300, 600, 0.010)  # 3..5 delivered; 0..2 not
    assert rk.reo_wnd(False, 3, 0.01) == 0.0  # no reordering seen, DupThresh SACKed
    rk.detect(0.010, 0.0)
    assert rk.boundary >= 300  # unSACKed bytes below it are lost: 0..300
    rk.sent(0, 100, 0.011)  # retransmit segment 0
    rk.sent(600, 700, 0.012)  # new data after it
    rk.sacked(600, 700, 0.018)  # RACK.rtt = 6 ms
    again = rk.detect(0.018, 0.005)
    assert rk.rtx[0].lost is False and abs(again - 0.022) < 1e-9  # 0.011 + 6 ms + 5 ms reordering window
    rk.detect(0.0225, 0.005)
    assert rk.rtx[0].lost is True  # sent before a delivered segment, and too long ago: lost
    assert rk.lost_rtx_bytes(0) == 100
    rk.acked(700, 0.031)
    assert rk.rtx == [] and rk.head == 7


def test_rack_reordering_window():
    rk = Rack(0)
    for i in range(3):
        rk.sent(i * 100, i * 100 + 100, 0.0)
    rk.sacked(200, 300, 0.01)
    assert not rk.reord
    rk.acked(200, 0.011)  # 0..200 delivered after 200..300: reordering
    assert rk.reord and rk.reo_wnd(True, 5, 1.0) == rk.min_rtt / 4
    rk.on_dsack()
    assert rk.reo_wnd(True, 5, 1.0) == 2 * rk.min_rtt / 4
