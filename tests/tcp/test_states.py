"""Connection state machine (RFC 9293 3.3.2, 3.10): openings, closings, RST, TIME-WAIT."""

from __future__ import annotations

import pytest
from sunbeam.shared.proto.tcp import (
    Closed,
    Connected,
    ConnectionRequest,
    PeerFinished,
    Readable,
    Reset,
)
from sunbeam.shared.proto.tcp.segment import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    build_syn_options,
    parse_options,
)

from .scripted import Scripted


def state(s: Scripted, cid: int) -> str:
    return s.stack.info(cid)["state"]


def test_passive_open_and_data():
    s = Scripted()
    s.stack.listen(80)
    assert s.deliver(SYN, 1000, options=build_syn_options(1240, 7, True)) == []
    (req,) = s.events()
    assert isinstance(req, ConnectionRequest) and req.src == (s.peer, 40000) and req.dst == (s.ours, 80)
    assert state(s, req.conn_id) == "REQUESTED"
    # a retransmitted SYN while the user decides changes nothing
    assert s.deliver(SYN, 1000, options=build_syn_options(1240, 7, True)) == [] and s.events() == []
    s.stack.accept(req.conn_id)
    (synack,) = s.out()
    assert synack.flags == SYN | ACK and synack.ack == 1001
    opts = parse_options(synack.options)
    assert opts.mss == 1240 and opts.wscale == 5 and opts.sack_ok
    assert synack.window == 65535  # never scaled in a SYN
    assert state(s, req.conn_id) == "SYN-RECEIVED"
    assert s.deliver(ACK, 1001, synack.seq + 1) == []
    assert s.events() == [Connected(req.conn_id)]
    assert state(s, req.conn_id) == "ESTABLISHED"
    s.stack.receive([s.packet(ACK | PSH, 1001, synack.seq + 1, b"hello")], s.now)
    assert s.events() == [Readable(req.conn_id)]
    (ack,) = s.out()  # one ACK per poll for in-order data
    assert ack.flags == ACK and ack.ack == 1006
    assert ack.window == ((1 << 20) - 5) >> 5
    assert s.stack.read(req.conn_id) == b"hello" and s.stack.read(req.conn_id) == b""
    # our reply carries data and the ACK
    assert s.stack.send(req.conn_id, b"world", s.now) == 5
    (data,) = s.out()
    assert data.payload == b"world" and data.flags == ACK | PSH and data.seq == synack.seq + 1


def test_refuse_and_unlistened_ports_get_rst():
    s = Scripted()
    s.stack.listen(80)
    s.deliver(SYN, 77)
    (req,) = s.events()
    s.stack.refuse(req.conn_id)
    (rst,) = s.out()
    assert rst.flags == RST | ACK and rst.ack == 78
    assert s.events() == [Closed(req.conn_id)]
    # a SYN to a port nobody listens on: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>
    (rst,) = s.deliver(SYN, 500, dport=81)
    assert (rst.flags, rst.seq, rst.ack, rst.sport, rst.dport) == (RST | ACK, 0, 501, 81, 40000)
    # anything with ACK for no connection: <SEQ=SEG.ACK><CTL=RST>
    (rst,) = s.deliver(ACK, 500, 12345, b"x", dport=81)
    assert (rst.flags, rst.seq) == (RST, 12345)
    assert s.deliver(RST, 500, dport=81) == []  # never answer a RST
    s.stack.unlisten(80)
    (rst,) = s.deliver(SYN, 900)
    assert rst.flags == RST | ACK
    # not our address: dropped silently
    s.stack.receive([s.packet(SYN, 1)[:16] + bytes([1, 2, 3, 4]) + s.packet(SYN, 1)[20:]], s.now)
    assert s.out() == [] and s.stack.counters["drop_bad_ip_checksum"] + s.stack.counters["drop_not_local"] == 1


def test_active_open():
    s = Scripted()
    cid = s.stack.connect(s.ours, (s.peer, 443), s.now)
    (syn,) = s.out()
    assert syn.flags == SYN and syn.dport == 443 and 1024 <= syn.sport <= 65535
    opts = parse_options(syn.options)
    assert (opts.mss, opts.wscale, opts.sack_ok) == (1240, 5, True)
    s.sport, s.dport = 443, syn.sport
    (ack,) = s.deliver(SYN | ACK, 9000, syn.seq + 1, options=build_syn_options(1000, None, False))
    assert ack.flags == ACK and ack.seq == syn.seq + 1 and ack.ack == 9001
    assert s.events() == [Connected(cid)]
    info = s.stack.info(cid)
    assert info["mss"] == 1000 and info["wscale"] == (0, 0) and not info["sack"]  # what the peer allowed
    # IPv6 uses the IPv6 MSS
    s6 = Scripted(v6=True)
    s6.stack.connect(s6.ours, (s6.peer, 443), s6.now)
    (syn6,) = s6.out()
    assert parse_options(syn6.options).mss == 1220


def test_syn_sent_rst_and_bad_ack():
    s = Scripted()
    cid = s.stack.connect(s.ours, (s.peer, 443), s.now)
    (syn,) = s.out()
    s.sport, s.dport = 443, syn.sport
    # an ACK that does not acknowledge our SYN gets a RST and changes nothing
    (rst,) = s.deliver(SYN | ACK, 1, syn.seq + 5)
    assert rst.flags == RST and rst.seq == syn.seq + 5
    assert s.deliver(RST, 0) == [] and state(s, cid) == "SYN-SENT"  # RST without ACK: ignored
    assert s.deliver(RST | ACK, 0, syn.seq + 7) == [] and state(s, cid) == "SYN-SENT"  # unacceptable ACK
    assert s.deliver(RST | ACK, 0, syn.seq + 1) == []
    assert s.events() == [Reset(cid, "refused"), Closed(cid)]
    assert s.stack.info(cid)["state"] == "CLOSED"
    assert s.stack.send(cid, b"late", s.now) == 0 and s.stack.read(cid) == b""  # quiet once gone
    with pytest.raises(KeyError):
        s.stack.send(999, b"x", s.now)


def test_rst_in_established_needs_the_exact_sequence_number():
    s = Scripted()
    cid, synack = s.passive_open()
    s.events()
    # in the window but not RCV.NXT: challenge ACK (RFC 5961 3.2)
    (ch,) = s.deliver(RST, 1001 + 100)
    assert ch.flags == ACK and ch.ack == 1001 and state(s, cid) == "ESTABLISHED"
    assert s.deliver(RST, 1001 + (1 << 30)) == [] and state(s, cid) == "ESTABLISHED"  # outside: dropped
    # a SYN in a synchronized state: challenge ACK too (RFC 5961 4.2)
    (ch,) = s.deliver(SYN, 5)
    assert ch.flags == ACK and ch.ack == 1001 and state(s, cid) == "ESTABLISHED"
    s.stack.send(cid, b"pending", s.now)
    s.out()
    s.deliver(ACK | PSH, 1001, synack.seq + 1, b"unread")
    assert s.deliver(RST, 1007) == []
    assert s.events() == [Readable(cid), Reset(cid, "reset"), Closed(cid)]
    assert s.stack.read(cid) == b""  # discarded


def test_active_close_and_time_wait():
    s = Scripted(time_wait=2.0)
    cid, synack = s.passive_open()
    s.events()
    mine = synack.seq + 1
    s.stack.send(cid, b"bye", s.now)
    s.stack.shutdown(cid, s.now)
    assert state(s, cid) == "FIN-WAIT-1"
    (data, fin) = s.out()
    assert data.payload == b"bye" and fin.flags == FIN | ACK and fin.seq == mine + 3
    assert s.deliver(ACK, 1001, mine + 4) == [] and state(s, cid) == "FIN-WAIT-2"
    (ack,) = s.deliver(FIN | ACK, 1001, mine + 4)
    assert ack.ack == 1002 and ack.flags == ACK
    assert s.events() == [PeerFinished(cid), Closed(cid)]  # closed for the user; TIME-WAIT lingers
    # a retransmitted FIN in TIME-WAIT is acknowledged again
    (ack,) = s.deliver(FIN | ACK, 1001, mine + 4)
    assert ack.ack == 1002
    assert s.advance(2.5) == []
    # after TIME-WAIT the four-tuple is free: a stray segment now gets a RST
    (rst,) = s.deliver(ACK, 1002, mine + 4)
    assert rst.flags == RST


def test_passive_close():
    s = Scripted()
    cid, synack = s.passive_open()
    s.events()
    mine = synack.seq + 1
    (ack,) = s.deliver(FIN | ACK | PSH, 1001, mine, b"last")
    assert ack.ack == 1006
    assert s.events() == [Readable(cid), PeerFinished(cid)]
    assert state(s, cid) == "CLOSE-WAIT"
    s.stack.send(cid, b"reply", s.now)
    s.stack.shutdown(cid, s.now)
    assert state(s, cid) == "LAST-ACK"
    (data, fin) = s.out()
    assert data.payload == b"reply" and fin.flags & FIN and fin.seq == mine + 5
    s.deliver(ACK, 1006, mine + 6)
    assert s.events() == []  # "last" is still unread: Closed waits for the reader
    assert s.stack.read(cid) == b"last"
    assert s.events() == [Closed(cid)]


def test_simultaneous_close():
    s = Scripted()
    cid, synack = s.passive_open()
    s.events()
    mine = synack.seq + 1
    s.stack.shutdown(cid, s.now)
    (fin,) = s.out()
    assert fin.flags == FIN | ACK and state(s, cid) == "FIN-WAIT-1"
    # the peer's FIN crosses ours (it does not acknowledge our FIN)
    (ack,) = s.deliver(FIN | ACK, 1001, mine)
    assert ack.ack == 1002 and state(s, cid) == "CLOSING"
    assert s.deliver(ACK, 1002, mine + 1) == []
    assert state(s, cid) == "CLOSED" and s.events() == [PeerFinished(cid), Closed(cid)]
    assert s.stack.connections() == []


def test_simultaneous_open():
    s = Scripted()
    cid = s.stack.connect(s.ours, (s.peer, 443), s.now)
    (syn,) = s.out()
    s.sport, s.dport = 443, syn.sport
    # the peer's own SYN (no ACK) crosses ours
    (synack,) = s.deliver(SYN, 700, options=build_syn_options(1240, 2, True))
    assert synack.flags == SYN | ACK and synack.seq == syn.seq and synack.ack == 701
    assert state(s, cid) == "SYN-RECEIVED"
    # and the peer's SYN-ACK completes it
    assert s.deliver(SYN | ACK, 700, syn.seq + 1) == []
    assert state(s, cid) == "ESTABLISHED" and s.events() == [Connected(cid)]


def test_retransmitted_syn_in_syn_received_gets_the_syn_ack_again():
    s = Scripted()
    s.stack.listen(80)
    s.deliver(SYN, 1000)
    (req,) = s.events()
    s.stack.accept(req.conn_id)
    (synack,) = s.out()
    (again,) = s.deliver(SYN, 1000)
    assert again.flags == SYN | ACK and again.seq == synack.seq and again.ack == 1001


def test_syn_retransmission_and_handshake_timeout():
    s = Scripted(syn_retries=3)
    cid = s.stack.connect(s.ours, (s.peer, 443), s.now)
    s.out()
    times = [round(x, 6) for x in _retransmit_times(s, 20.0)]
    assert times == [1.0, 3.0, 7.0]  # RFC 6298: 1 s, doubling
    assert s.events() == [Reset(cid, "timeout"), Closed(cid)]


def _retransmit_times(s: Scripted, horizon: float) -> list[float]:
    out = []
    while s.now < horizon:
        t = s.stack.next_timer()
        if t is None or t > horizon:
            break
        s.now = t
        s.stack.handle_timer(t)
        if any(seg.flags & SYN or seg.payload for seg in s.out()):
            out.append(t)
    return out


def test_request_timeout_and_peer_rst_while_requested():
    s = Scripted(request_timeout=5.0)
    s.stack.listen(80)
    s.deliver(SYN, 10)
    (req,) = s.events()
    s.advance(6)
    assert s.events() == [Reset(req.conn_id, "timeout"), Closed(req.conn_id)]
    s.deliver(SYN, 20, sport=40001)
    (req,) = s.events()
    s.deliver(RST, 21, sport=40001)
    assert s.events() == [Reset(req.conn_id, "reset"), Closed(req.conn_id)]


def test_abort_sends_rst():
    s = Scripted()
    cid, synack = s.passive_open()
    s.events()
    s.stack.abort(cid, s.now)
    (rst,) = s.out()
    assert rst.flags == RST and rst.seq == synack.seq + 1
    assert s.events() == [Closed(cid)]


def test_unacceptable_segments_are_acknowledged():
    s = Scripted()
    cid, synack = s.passive_open()
    (ack,) = s.deliver(ACK, 1001 - 5000, synack.seq + 1, b"old")  # entirely old
    assert ack.ack == 1001 and ack.flags == ACK
    (ack,) = s.deliver(ACK, 1001, synack.seq + 1000, b"x")  # acknowledges data never sent
    assert ack.ack == 1001 and not s.stack._by_id[cid].rcv_buf


def test_keepalive():
    s = Scripted(keepalive_idle=10.0, keepalive_interval=1.0, keepalive_count=3)
    cid, synack = s.passive_open()
    s.events()
    probes = s.advance(10.5)
    assert len(probes) == 1 and probes[0].seq == synack.seq and probes[0].payload == b""  # SND.UNA - 1
    s.deliver(ACK, 1001, synack.seq + 1)  # the peer is alive
    assert s.advance(9) == []
    probes = s.advance(5)
    assert len(probes) == 3
    assert s.events() == [Reset(cid, "keepalive"), Closed(cid)]


def test_abort_after_the_peer_closed_drops_unread_data():
    s = Scripted()
    cid, synack = s.passive_open()
    s.events()
    mine = synack.seq + 1
    s.deliver(FIN | ACK, 1001, mine, b"unread")
    s.stack.shutdown(cid, s.now)
    (fin,) = s.out()
    assert fin.flags & FIN
    s.deliver(ACK, 1008, mine + 1)
    assert s.events() == [Readable(cid), PeerFinished(cid)]  # CLOSED, but data is waiting
    s.stack.abort(cid, s.now)
    assert s.events() == [Closed(cid)] and s.out() == []
