"""Branches of segment arrival, recovery, probes and the user calls that the scenario
files did not take (found by line tracing while `_slow_input` and `_output_data` were
split): each one here against a scripted peer."""

from __future__ import annotations

import pytest
from sunbeam.shared.proto.tcp import Closed, Connected, PeerFinished, Readable, Reset
from sunbeam.shared.proto.tcp.segment import ACK, FIN, PSH, RST, SYN, build_syn_options

from .scripted import Scripted

NO_SACK = build_syn_options(1240, None, False)


def test_data_past_the_right_window_edge_is_cut_with_its_fin():
    s = Scripted(recv_buffer=4096)
    cid, synack = s.passive_open(options=NO_SACK)
    s.events()
    mine = synack.seq + 1
    (ack,) = s.deliver(ACK | PSH | FIN, 1001, mine, b"w" * 5000)  # the window is 4096
    assert ack.ack == 1001 + 4096 and ack.window == 0
    assert s.events() == [Readable(cid)]  # no PeerFinished: the FIN was past the edge
    assert s.stack.read(cid, 8192) == b"w" * 4096


def test_syn_ack_carrying_data_and_fin():
    s = Scripted()
    cid = s.stack.connect(s.ours, (s.peer, 443), s.now)
    (syn,) = s.out()
    s.sport, s.dport = 443, syn.sport
    acks = s.deliver(SYN | ACK | FIN, 9000, syn.seq + 1, b"early", options=NO_SACK)
    # (two: the FIN's own at once, and the one the handshake owes)
    assert [(x.flags, x.ack) for x in acks] == [(ACK, 9000 + 1 + 5 + 1)] * 2
    assert s.events() == [Connected(cid), Readable(cid), PeerFinished(cid)]
    assert s.stack.info(cid)["state"] == "CLOSE-WAIT" and s.stack.read(cid) == b"early"


def test_newreno_inflates_cwnd_per_further_duplicate_ack():
    s = Scripted(congestion="newreno")
    cid, _ = s.active_open(options=NO_SACK, window=65535)
    conn = s.stack._by_id[cid]
    una = conn.snd_una
    conn.cc.cwnd = 10 * 1240
    s.stack.send(cid, b"n" * 40 * 1240, s.now)
    assert len(s.out()) == 10
    for _ in range(3):
        s.deliver(ACK, 5001, una)
    assert conn.recovery
    assert conn.snd_max - una == 12 * 1240  # limited transmit sent two more (RFC 3042)
    cwnd = conn.cc.cwnd
    assert cwnd == conn.cc.ssthresh + 3 * 1240 == 9 * 1240
    # each further duplicate ACK inflates cwnd by one MSS (RFC 6582 3.2 step 4): at 13 MSS,
    # one more than the 12 in flight, a new segment leaves
    sent = [[len(x.payload) for x in s.deliver(ACK, 5001, una)] for _ in range(4)]
    assert conn.cc.cwnd == cwnd + 4 * 1240 and conn.dupacks == 7
    assert sent == [[], [], [], [1240]] and conn.snd_max == una + 13 * 1240


def test_persist_gives_up_when_the_peer_stops_answering():
    s = Scripted(min_rto=0.2, max_rto=2.0, max_retries=3)
    cid, _ = s.active_open(options=NO_SACK, window=1000)
    una = s.stack._by_id[cid].snd_una
    s.stack.send(cid, b"z" * 5000, s.now)
    s.out()
    s.deliver(ACK, 5001, una + 1000, window=0)
    s.events()
    probes = s.advance(30)
    assert len(probes) == 3 and s.stack.counters["window_probe"] == 3
    assert s.events() == [Reset(cid, "timeout"), Closed(cid)]


def test_user_calls_out_of_turn():
    s = Scripted()
    s.stack.listen(80)
    s.deliver(SYN, 1000)
    (req,) = s.events()
    with pytest.raises(ValueError, match="is a request"):
        s.stack.shutdown(req.conn_id, s.now)
    s.stack.abort(req.conn_id, s.now)  # as refuse: RST, ACKing the SYN
    (rst,) = s.out()
    assert rst.flags == RST | ACK and rst.ack == 1001
    assert s.events() == [Closed(req.conn_id)]
    cid, _ = s.passive_open(isn=3000, port=81)
    s.events()
    with pytest.raises(ValueError, match="not waiting for accept"):
        s.stack._by_id[cid].accept(s.now)
    s.stack.shutdown(cid, s.now)
    with pytest.raises(ValueError, match="send after shutdown"):
        s.stack.send(cid, b"late", s.now)
    s.stack.shutdown(cid, s.now)  # twice: nothing more
    assert [x.flags for x in s.out()] == [FIN | ACK]
