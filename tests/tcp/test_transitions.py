"""TCP's state transitions are the table `states.NEXT_STATE`: the code takes no other
(only `_Tcb._go` assigns a state, and it looks the pair up), and the scenarios of
`test_states` plus a few here take every entry of it."""

from __future__ import annotations

import ast
import inspect
import pathlib

import pytest
from sunbeam.shared.proto.tcp import Closed, Connected, PeerFinished, Reset, states
from sunbeam.shared.proto.tcp.segment import ACK, FIN, RST, SYN
from sunbeam.shared.proto.tcp.states import (
    CLOSED,
    DELETE,
    FIN_IN,
    NEXT_STATE,
    STATE_NAMES,
    SYN_RCVD,
)
from sunbeam.shared.proto.tcp.tcb import _Tcb

from . import test_states
from .scripted import Scripted

TCP = pathlib.Path(states.__file__).parent

UNREACHABLE = {
    (SYN_RCVD, FIN_IN): "segment text and FIN are processed only once our SYN is acknowledged "
                        "(RFC 9293 lists the pair; the fifth check moves SYN-RECEIVED on first)",
}


def state(s: Scripted, cid: int) -> str:
    return s.stack.info(cid)["state"]


def test_only_go_assigns_the_state():
    allowed = {("tcb.py", "__init__"), ("tcb.py", "_go")}
    found = set()
    for path in sorted(TCP.glob("*.py")):
        for fn in ast.walk(ast.parse(path.read_text())):
            if not isinstance(fn, ast.FunctionDef):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Attribute) and node.attr == "state" and isinstance(node.ctx, ast.Store):
                    found.add((path.name, fn.name))
    assert found == allowed


def test_every_state_is_reachable_from_closed():
    seen, todo = {CLOSED}, [CLOSED]
    while todo:
        s = todo.pop()
        for (a, event), b in NEXT_STATE.items():
            if a == s and event != DELETE and b not in seen:
                seen.add(b)
                todo.append(b)
    assert sorted(STATE_NAMES[s] for s in seen) == sorted(STATE_NAMES)


def test_an_unlisted_transition_is_our_bug():
    s = Scripted()
    s.stack.connect(s.ours, (s.peer, 443), s.now)
    (conn,) = s.stack._by_id.values()
    with pytest.raises(AssertionError, match="no transition from SYN-SENT on ACCEPT"):
        conn._go(states.ACCEPT)


def test_shutdown_while_connecting_sends_the_fin_once_established():
    s = Scripted()
    cid = s.stack.connect(s.ours, (s.peer, 443), s.now)
    (syn,) = s.out()
    s.sport, s.dport = 443, syn.sport
    s.stack.send(cid, b"hi", s.now)
    s.stack.shutdown(cid, s.now)
    assert state(s, cid) == "SYN-SENT"
    (data, fin) = s.deliver(SYN | ACK, 9000, syn.seq + 1)
    assert state(s, cid) == "FIN-WAIT-1" and s.events() == [Connected(cid)]
    assert data.payload == b"hi" and fin.flags == FIN | ACK and fin.seq == syn.seq + 3


def test_shutdown_while_accepting_sends_the_fin_once_established():
    s = Scripted()
    s.stack.listen(80)
    s.deliver(SYN, 1000)
    (req,) = s.events()
    s.stack.accept(req.conn_id)
    (synack,) = s.out()
    s.stack.shutdown(req.conn_id, s.now)
    assert state(s, req.conn_id) == "SYN-RECEIVED"
    (fin,) = s.deliver(ACK, 1001, synack.seq + 1)
    assert state(s, req.conn_id) == "FIN-WAIT-1" and fin.flags == FIN | ACK and fin.seq == synack.seq + 1


def test_fin_acknowledged_together_with_the_peers_fin():
    """FIN-WAIT-1: the peer's FIN acknowledging ours goes through FIN-WAIT-2 to TIME-WAIT."""
    s = Scripted()
    cid, _ = s.passive_open()
    s.events()
    conn = s.stack._by_id[cid]
    s.stack.shutdown(cid, s.now)
    (fin,) = s.out()
    (ack,) = s.deliver(FIN | ACK, 1001, fin.seq + 1)
    assert ack.ack == 1002 and STATE_NAMES[conn.state] == "TIME-WAIT"  # (info: CLOSED for the user)
    assert s.events() == [PeerFinished(cid), Closed(cid)]


def test_an_exact_rst_in_every_synchronized_state():
    """RFC 9293 3.10.7.4, second check: SYN-RECEIVED to CLOSE-WAIT report a reset;
    CLOSING, LAST-ACK and TIME-WAIT just end (the user's side is closed already)."""
    for name, peer_seq, reported in (("SYN-RECEIVED", 1001, True), ("FIN-WAIT-1", 1001, True),
                                     ("FIN-WAIT-2", 1001, True), ("CLOSE-WAIT", 1002, True),
                                     ("CLOSING", 1002, False), ("LAST-ACK", 1002, False)):
        s = Scripted()
        if name == "SYN-RECEIVED":
            s.stack.listen(80)
            s.deliver(SYN, 1000)
            (req,) = s.events()
            cid = req.conn_id
            s.stack.accept(cid)
            s.out()
        else:
            cid, synack = s.passive_open()
            mine = synack.seq + 1
            if name in ("CLOSE-WAIT", "LAST-ACK"):
                s.deliver(FIN | ACK, 1001, mine)
            if name != "CLOSE-WAIT":
                s.stack.shutdown(cid, s.now)
                s.out()
            if name == "FIN-WAIT-2":
                s.deliver(ACK, 1001, mine + 1)
            elif name == "CLOSING":
                s.deliver(FIN | ACK, 1001, mine)
        conn = s.stack._by_id[cid]
        assert STATE_NAMES[conn.state] == name
        s.events()
        assert s.deliver(RST, peer_seq) == []
        assert conn.state == CLOSED and s.stack.connections() == []
        assert s.events() == ([Reset(cid, "reset"), Closed(cid)] if reported else [Closed(cid)]), name


def test_every_transition_is_taken(monkeypatch):
    taken: set[tuple[int, str]] = set()
    go = _Tcb._go

    def recording(self: _Tcb, event: str) -> None:
        taken.add((self.state, event))
        go(self, event)

    monkeypatch.setattr(_Tcb, "_go", recording)
    for module in (test_states, __import__(__name__, fromlist=["_"])):
        for name in sorted(vars(module)):
            if name.startswith("test_") and name != "test_every_transition_is_taken":
                fn = getattr(module, name)
                if inspect.isfunction(fn) and not fn.__code__.co_argcount:
                    fn()
    assert set(UNREACHABLE) <= set(NEXT_STATE)
    missing = set(NEXT_STATE) - taken - set(UNREACHABLE)
    assert not missing, sorted((STATE_NAMES[s], e) for s, e in missing)
    assert not taken & set(UNREACHABLE)
