"""The transmission control block (RFC 9293 3.3.1): every variable of one connection,
declared once, and the small helpers every part of the connection uses.

A connection is one object built in layers, each a class that adds the methods of one
concern and uses only the layers below it (so a type checker follows every call)::

    Connection   user calls (RFC 9293 3.10.1-3.10.6), timer dispatch      connection
    _Input       segment arrival (3.10.7)                                 input
    _Sender      ACK processing, loss recovery, the RTO                   sender
    _Probes      tail loss, zero-window and keepalive probes              probes
    _Output      building and sending segments                            output
    _Tcb         the variables below; state entry / exit helpers          tcb

Only `_Tcb` has slots; the layers add none, so an attribute or method lookup costs what
it costs on one flat class. Ownership: the `TcpStack` that made the connection, on its
loop thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .congestion import ALGORITHMS, Cubic, NewReno
from .events import Closed, Connected, Reset, Writable
from .rack import Rack
from .reassembly import Reassembly
from .rtt import RttEstimator
from .scoreboard import Scoreboard
from .sendbuf import SendBuffer
from .states import (
    CLOSE,
    CLOSED,
    DELETE,
    M32,
    NEXT_STATE,
    REQUESTED,
    STATE_NAMES,
    SYN_ACKED,
    TIME_WAIT,
)

if TYPE_CHECKING:
    from .bulk import Outgoing
    from .stack import TcpStack

__all__ = ["Config"]


class Config:
    """Settings shared by every connection of one stack (read-only once made)."""

    __slots__ = (
        "congestion",
        "flows",
        "keepalive_count",
        "keepalive_idle",
        "keepalive_interval",
        "max_retries",
        "max_rto",
        "min_rto",
        "mss4",
        "mss6",
        "quick_acks",
        "recv_buffer",
        "relayed_window",
        "request_timeout",
        "sack",
        "send_buffer",
        "split_acks",
        "syn_retries",
        "time_wait",
        "ttl",
        "wscale",
    )

    def __init__(self, *, mss4: int = 1240, mss6: int = 1220, recv_buffer: int = 1 << 20,
                 send_buffer: int = 1 << 20, sack: bool = True, min_rto: float = 0.2, max_rto: float = 60.0,
                 syn_retries: int = 5, max_retries: int = 10, time_wait: float = 2.0,
                 request_timeout: float = 30.0, keepalive_idle: float | None = None,
                 keepalive_interval: float = 10.0, keepalive_count: int = 5, ttl: int = 64,
                 congestion: str = "cubic", flows: int = 1, quick_acks: int = 16, split_acks: bool = True,
                 relayed_window: int = 36 << 10) -> None:
        self.mss4, self.mss6 = mss4, mss6
        self.recv_buffer, self.send_buffer = recv_buffer, send_buffer
        if relayed_window < 4 * max(mss4, mss6):
            raise ValueError(f"relayed_window {relayed_window!r}: at least 4 segments")
        self.relayed_window = relayed_window
        """The most window we advertise while the peer's segments reach us through a relay
        (`TcpStack.receive`'s ``relayed``: DERP): below the 32 packets a DERP client
        queues (see `output`)."""
        ws = 0
        while (65535 << ws) < recv_buffer and ws < 14:
            ws += 1
        self.wscale = ws
        """Our window shift: the smallest that lets the window cover the receive buffer."""
        self.sack = sack
        self.min_rto, self.max_rto = min_rto, max_rto
        self.syn_retries, self.max_retries = syn_retries, max_retries
        self.time_wait, self.request_timeout = time_wait, request_timeout
        self.keepalive_idle, self.keepalive_interval, self.keepalive_count = (
            keepalive_idle, keepalive_interval, keepalive_count)
        self.ttl = ttl
        if congestion not in ALGORITHMS:
            raise ValueError(f"congestion control {congestion!r}: one of {', '.join(sorted(ALGORITHMS))}")
        self.congestion = congestion
        """The congestion control algorithm (`congestion.ALGORITHMS`)."""
        if not 1 <= flows <= 8:
            raise ValueError(f"flows {flows!r}: 1..8")
        self.flows = flows
        if not 0 <= quick_acks <= 1024:
            raise ValueError(f"quick_acks {quick_acks!r}: 0..1024")
        self.quick_acks = quick_acks
        """After out-of-order data, how many in-order segments are ACKed every second one
        (`input`); 0: none."""
        self.split_acks = split_acks
        """A sparse ACK that covers two or more new segments goes out as two (`output`)."""
        """How many standard flows one connection responds as (CUBIC; `congestion`)."""


class _Tcb:
    __slots__ = (  # noqa: RUF023 - grouped by concern, not sorted
        "stack", "cfg", "id", "key", "v6", "laddr", "raddr", "lport", "rport", "addr_sum", "hsum", "ip_base",
        "ident", "state",
        # send side
        "iss", "snd_una", "snd_nxt", "snd_max", "snd_wnd", "snd_wl1", "snd_wl2", "max_snd_wnd", "snd_ws",
        "sbuf", "sbuf_seq", "fin_seq", "want_writable", "mss",
        # receive side
        "irs", "rcv_nxt", "rcv_adv", "rcv_ws", "ws_ok", "rcv_buf", "ooo", "peer_fin", "sack_ok", "last_seg",
        "acked_to", "acked_at", "rcv_wnd_max",
        # congestion control and loss recovery
        "cc", "dupacks", "recovery", "recover", "rexmit_una", "high_rxt", "sb", "rack", "cwnd_limited", "force",
        "tlp_out", "prior_cwnd", "prior_ssthresh", "undo_marker", "undo_retrans", "dsack",
        "rtt", "rtt_seq", "rtt_time", "syn_retried",
        # timers (absolute times; 0 = off)
        "rtx_at", "tlp_at", "rack_at", "persist_at", "tw_at", "ka_at", "req_at", "heap_at", "retries", "probes", "last_rx",
        # bookkeeping
        "ack_pending", "quick_acks", "unacked_segs", "dirty", "readable", "closed_emitted", "retransmits", "fast_retransmits", "timeouts",
    )

    def __init__(self, stack: TcpStack, cfg: Config, conn_id: int, laddr: bytes, lport: int, raddr: bytes,
                 rport: int, iss: int, now: float) -> None:
        self.stack = stack
        self.cfg = cfg
        self.id = conn_id
        self.laddr, self.lport, self.raddr, self.rport = laddr, lport, raddr, rport
        self.key = raddr + laddr + rport.to_bytes(2, "big") + lport.to_bytes(2, "big")
        """The demultiplexing key: the inbound packet's ``src | dst | sport | dport``."""
        self.v6 = len(laddr) == 16
        self.addr_sum = int.from_bytes(laddr + raddr, "big") % 0xFFFF
        self.hsum = self.addr_sum + 6 + lport + rport
        """The constant part of the TCP checksum (pseudo-header and ports)."""
        self.ip_base = 0x4500 + (cfg.ttl << 8 | 6) + self.addr_sum
        """The constant part of the IPv4 header checksum."""
        self.ident = iss & 0xFFFF
        """The last IPv4 identification sent."""
        self.state = CLOSED
        """One of `states`; changed only by `_go`, through `states.NEXT_STATE`."""
        # send side (extended sequence numbers, see `connection`)
        self.iss = iss
        self.snd_una = self.snd_nxt = self.snd_max = iss
        """SND.UNA, SND.NXT and the highest sequence number sent so far."""
        self.snd_wnd = self.max_snd_wnd = 0
        """The peer's window (scaled) and the largest it ever offered."""
        self.snd_wl1 = self.snd_wl2 = 0
        self.snd_ws = 0
        """The peer's window shift."""
        self.sbuf = SendBuffer()
        """Send buffer: the bytes from ``sbuf_seq`` on, sent or not."""
        self.sbuf_seq = iss + 1
        self.fin_seq: int | None = None
        """The sequence number of our FIN once the user shut down."""
        self.want_writable = False
        """A `send` was turned away: report `Writable` when space frees."""
        mss = cfg.mss6 if self.v6 else cfg.mss4
        self.mss = mss
        # receive side
        self.irs = self.rcv_nxt = self.rcv_adv = 0
        """IRS, RCV.NXT and RCV.ADV (the right edge we advertised; RCV.WND = RCV.ADV - RCV.NXT)."""
        self.rcv_ws = 0
        """Our window shift, once the peer agreed to window scaling."""
        self.rcv_wnd_max = cfg.recv_buffer
        """The most window we advertise: ``cfg.relayed_window`` while the peer's latest
        segment came through a relay, else the receive buffer (`output`)."""
        self.ws_ok = False
        self.rcv_buf = bytearray()
        """In-order data the application has not read."""
        self.ooo: Reassembly | None = None
        """Out-of-order data (None while there is none)."""
        self.peer_fin = False
        self.sack_ok = False
        self.last_seg = 0
        """Where the last in-order data segment received began (RCV.NXT before it)."""
        self.acked_to = 0
        """The highest ACK number we sent (RCV.NXT when we last sent a segment with ACK)."""
        self.acked_at = now
        """When `output` last sent a segment with ACK."""
        # congestion control and loss recovery
        self.cc: Cubic | NewReno = ALGORITHMS[cfg.congestion](mss, cfg.flows)
        self.dupacks = 0
        self.recovery = False
        self.recover = iss
        """NewReno's "recover": SND.MAX when recovery (or the last timeout) began."""
        self.rexmit_una = False
        """`output` retransmits the segment at SND.UNA first."""
        self.high_rxt = iss
        """HighRxt (RFC 6675): the highest sequence number retransmitted."""
        self.sb: Scoreboard | None = None
        self.rack: Rack | None = None
        """With SACK, both (made together in `_Input.apply_syn_options`); else None."""
        self.tlp_out = False
        """A tail loss probe is unanswered."""
        self.prior_cwnd = self.prior_ssthresh = self.undo_marker = 0
        self.undo_retrans = -1
        """Retransmissions of the last recovery not yet proven needless by a D-SACK; -1: none to undo."""
        self.dsack: tuple[int, int] | None = None
        """A duplicate range received, reported as a D-SACK block in our next ACK."""
        self.cwnd_limited = self.force = False
        """``force``: the persist timer asks to fill a small window (sender SWS override)."""
        self.rtt = RttEstimator(cfg.min_rto, cfg.max_rto)
        self.rtt_seq = 0
        """The end of the one segment being timed (0: none); sent at ``rtt_time``."""
        self.rtt_time = 0.0
        self.syn_retried = False
        # timers (absolute times; 0 = off)
        self.rtx_at = self.tlp_at = self.rack_at = self.persist_at = self.tw_at = self.ka_at = self.req_at = 0.0
        self.heap_at = float("inf")
        """The time this connection is queued for in the stack's timer heap (-1: forgotten)."""
        self.retries = self.probes = 0
        self.last_rx = now
        # bookkeeping
        self.ack_pending = self.dirty = self.readable = self.closed_emitted = False
        self.quick_acks = 0
        """In-order segments still to be ACKed every second one (`input`: after out-of-order data)."""
        self.unacked_segs = 0
        """In-order segments received since our last ACK, counted while ``quick_acks``."""
        self.retransmits = self.fast_retransmits = self.timeouts = 0

    # --- helpers every layer uses ----------------------------------------------------

    def unwrap(self, wire: int, ref: int) -> int:
        """The extended sequence number nearest ``ref`` whose low 32 bits are ``wire``."""
        d = (wire - ref) & M32
        return ref + d - (1 << 32) if d >= 1 << 31 else ref + d

    def _arm(self, t: float) -> None:
        if t < self.heap_at:
            self.heap_at = t
            self.stack._schedule(self, t)

    def _mark(self) -> None:
        if not self.dirty:
            self.dirty = True
            self.stack._dirty.append(self)

    def _go(self, event: str) -> None:
        """The transition `states.NEXT_STATE` lists for (state, ``event``)."""
        try:
            self.state = NEXT_STATE[self.state, event]
        except KeyError:
            raise AssertionError(f"connection {self.id}: no transition from {STATE_NAMES[self.state]} on {event}") \
                from None

    def _established(self) -> None:
        """Our SYN is acknowledged: ESTABLISHED, or FIN-WAIT-1 when the user shut down meanwhile."""
        self._go(SYN_ACKED)
        if self.fin_seq is not None:
            self._go(CLOSE)
        if self.syn_retried:
            self.rtt.handshake_retried()
        self.stack._events.append(Connected(self.id))
        if self.cfg.keepalive_idle is not None:
            self.ka_at = self.last_rx + self.cfg.keepalive_idle
            self._arm(self.ka_at)

    def _fail(self, reason: str) -> None:
        """The connection is lost: report `Reset`, drop everything, then `Closed`."""
        self.stack.counters["reset_" + reason] += 1
        self.stack._events.append(Reset(self.id, reason))
        self.rcv_buf.clear()
        self._finish()

    def _finish(self) -> None:
        """Enter CLOSED: the stack forgets the connection; `Closed` once the data is read."""
        if self.state == REQUESTED:
            self.stack._requests -= 1
        self._go(DELETE)
        self.rtx_at = self.tlp_at = self.rack_at = self.persist_at = self.tw_at = self.ka_at = self.req_at = 0.0
        self.sbuf = SendBuffer()
        self.ooo = None
        self.stack._forget(self)
        self._maybe_closed()

    def _maybe_closed(self) -> None:
        if not self.closed_emitted and self.state >= TIME_WAIT and not self.rcv_buf:
            self.closed_emitted = True
            self.stack._events.append(Closed(self.id))
            self.stack._closed(self)

    def _enter_time_wait(self, now: float, event: str) -> None:
        """Take ``event`` into TIME-WAIT (or again in it): its timer (re)starts."""
        self._go(event)
        assert self.state == TIME_WAIT, STATE_NAMES[self.state]
        self.rtx_at = self.tlp_at = self.rack_at = self.persist_at = self.ka_at = 0.0
        self.sbuf = SendBuffer()
        self.tw_at = now + self.cfg.time_wait
        self._arm(self.tw_at)
        self._maybe_closed()

    def _sent_space(self) -> None:
        """After an ACK freed send-buffer space: `Writable` if the user was turned away."""
        if self.want_writable and self.cfg.send_buffer - len(self.sbuf) >= self.cfg.send_buffer // 4:
            self.want_writable = False
            self.stack._events.append(Writable(self.id))

    # --- provided by the layers above; the stack calls them on what `_mark` / `_arm` queued

    def output(self, now: float, out: Outgoing) -> None:
        raise NotImplementedError  # `_Output.output`

    def on_timer(self, now: float) -> None:
        raise NotImplementedError  # `Connection.on_timer`
