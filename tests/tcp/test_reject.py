"""`TcpStack.reject`: a far side's TSMP reject / ICMP unreachable ends a pending connect."""

from __future__ import annotations

from sunbeam.shared.proto.tcp import Closed, Reset
from sunbeam.shared.proto.tcp.segment import ACK, SYN

from .scripted import Scripted


def _connect(s: Scripted, port: int = 443):
    cid = s.stack.connect(s.ours, (s.peer, port), s.now)
    (syn,) = s.out()
    return cid, syn


def test_a_pending_connect_fails_at_once_with_the_reason():
    s = Scripted()
    cid, syn = _connect(s)
    assert s.stack.reject(s.ours_b, syn.sport, s.peer_b, 443, "denied", s.now) is True
    assert s.events() == [Reset(cid, "denied"), Closed(cid)]
    assert s.stack.counters["reset_denied"] == 1
    assert s.advance(60) == []  # no SYN retransmission afterwards
    assert s.stack.connections() == []


def test_only_the_named_flow_is_touched():
    s = Scripted()
    cid, syn = _connect(s)
    other, other_syn = _connect(s, 80)
    assert not s.stack.reject(s.ours_b, syn.sport, s.peer_b, 444, "denied", s.now)  # wrong remote port
    assert not s.stack.reject(s.ours_b, syn.sport + 1 if syn.sport < 65535 else 1024, s.peer_b, 443, "denied", s.now)
    assert s.stack.reject(s.ours_b, other_syn.sport, s.peer_b, 80, "host_unreachable", s.now)
    assert s.events() == [Reset(other, "host_unreachable"), Closed(other)]
    assert s.stack.counters["reject_ignored"] == 2
    assert s.stack.info(cid)["state"] == "SYN-SENT"


def test_an_established_connection_takes_it_as_a_soft_error():
    s = Scripted()
    cid, syn = _connect(s)
    s.sport, s.dport = 443, syn.sport
    s.deliver(SYN | ACK, 9000, syn.seq + 1)
    s.events()
    assert not s.stack.reject(s.ours_b, syn.sport, s.peer_b, 443, "host_unreachable", s.now)
    assert s.stack.info(cid)["state"] == "ESTABLISHED"
    assert s.events() == []
    s.deliver(ACK, 9001, syn.seq + 1, b"still here")
    assert s.stack.read(cid) == b"still here"
