"""A scripted peer: hand-made segments into one `TcpStack`, its output parsed back.

Our side is 100.64.0.1 (fd7a:115c:a1e0::1), the peer 100.64.0.2 (fd7a:115c:a1e0::2);
time is simulated (``advance`` runs due timers)."""

from __future__ import annotations

import random

from sunbeam.shared.proto.ip.headers import addr_bytes
from sunbeam.shared.proto.tcp import TcpStack
from sunbeam.shared.proto.tcp.segment import (
    ACK,
    FIN,
    SYN,
    Segment,
    build_packet,
    build_syn_options,
    parse_packet,
)

OURS, PEER = "100.64.0.1", "100.64.0.2"
OURS6, PEER6 = "fd7a:115c:a1e0::1", "fd7a:115c:a1e0::2"
PEER_PORT = 40000


class Scripted:
    def __init__(self, *, v6: bool = False, seed: int = 7, **options) -> None:
        self.ours, self.peer = (OURS6, PEER6) if v6 else (OURS, PEER)
        self.ours_b, self.peer_b = addr_bytes(self.ours), addr_bytes(self.peer)
        rng = random.Random(seed)
        self.stack = TcpStack(random_bytes=rng.randbytes, **options)
        self.stack.set_local_addresses([OURS, OURS6])
        self.now = 0.0
        self.sport, self.dport = PEER_PORT, 80

    # --- peer -> us ----------------------------------------------------------------

    def packet(self, flags: int, seq: int, ack: int = 0, payload: bytes = b"", *, window: int = 65535,
               options: bytes = b"", sport: int | None = None, dport: int | None = None) -> bytes:
        return build_packet(self.peer_b, self.ours_b, self.sport if sport is None else sport,
                            self.dport if dport is None else dport, seq, ack, flags, window, options, payload)

    def deliver(self, flags: int, seq: int, ack: int = 0, payload: bytes = b"", **kw) -> list[Segment]:
        """Send one segment to the stack; returns what the stack transmits right after."""
        self.stack.receive([self.packet(flags, seq, ack, payload, **kw)], self.now)
        return self.out()

    def out(self) -> list[Segment]:
        return [parse_packet(p) for p in self.stack.poll(self.now)]

    def events(self) -> list:
        return self.stack.events()

    def advance(self, dt: float) -> list[Segment]:
        """Let ``dt`` seconds pass (in small steps, running timers); returns all output."""
        end = self.now + dt
        out: list[Segment] = []
        while True:
            t = self.stack.next_timer()
            if t is None or t > end:
                break
            self.now = max(self.now, t)
            self.stack.handle_timer(self.now)
            out += self.out()
        self.now = end
        return out + self.out()

    # --- common openings -------------------------------------------------------------

    def passive_open(self, *, isn: int = 1000, options: bytes | None = None, window: int = 65535,
                     port: int = 80) -> tuple[int, Segment]:
        """Peer connects to our listening ``port``; returns (conn_id, our SYN-ACK); ESTABLISHED after."""
        self.stack.listen(port)
        self.dport = port
        opts = build_syn_options(1240, 7, True) if options is None else options
        assert self.deliver(SYN, isn, options=opts, window=window) == []
        (req,) = self.events()
        self.stack.accept(req.conn_id)
        (synack,) = self.out()
        assert synack.flags == SYN | ACK and synack.ack == isn + 1
        assert self.deliver(ACK, isn + 1, synack.seq + 1, window=window) == []
        return req.conn_id, synack

    def active_open(self, *, isn: int = 5000, options: bytes | None = None, window: int = 65535,
                    port: int = 443) -> tuple[int, Segment]:
        """We connect to the peer; returns (conn_id, our SYN); ESTABLISHED after (our ACK consumed)."""
        cid = self.stack.connect(self.ours, (self.peer, port), self.now)
        (syn,) = self.out()
        self.sport, self.dport = port, syn.sport
        opts = build_syn_options(1240, 7, True) if options is None else options
        (ack,) = self.deliver(SYN | ACK, isn, syn.seq + 1, options=opts, window=window)
        assert ack.flags == ACK and ack.ack == isn + 1
        return cid, syn


STATES = ["listen", "syn_sent", "syn_rcvd", "established", "fin_wait", "close_wait", "time_wait"]


def stack_in(state: str, v6: bool = False) -> tuple[Scripted, int | None]:
    """A fresh stack brought into ``state`` by a scripted opening; the connection id (None
    for ``listen``)."""
    s = Scripted(v6=v6)
    cid = None
    if state == "listen":
        s.stack.listen(80)
    elif state == "syn_sent":
        cid = s.stack.connect(s.ours, (s.peer, 443), s.now)
        syn = s.out()[0]
        s.sport, s.dport = 443, syn.sport
    elif state == "syn_rcvd":
        s.stack.listen(80)
        s.deliver(SYN, 1000, options=build_syn_options(1240, 7, True))
        cid = s.events()[0].conn_id
        s.stack.accept(cid)
        s.out()
    else:
        cid, synack = s.passive_open()
        s.stack.send(cid, b"x" * 5000, s.now)
        s.out()
        if state == "fin_wait":
            s.stack.shutdown(cid, s.now)
        elif state == "close_wait":
            s.deliver(FIN | ACK, 1001, synack.seq + 1)
        elif state == "time_wait":
            s.stack.shutdown(cid, s.now)
            s.out()
            s.deliver(FIN | ACK, 1001, synack.seq + 5002)
    s.out()
    s.events()
    return s, cid
