"""One TCP connection (RFC 9293): its control block, user calls and timers, sans-IO.

The segment-arrival logic lives in `input` (`_Input`), acknowledgement processing,
loss recovery and the retransmission timer in `sender` (`_Sender`), tail loss, window and
keepalive probes in `probes` (`_Probes`), and everything that builds segments in
`output` (`_Output`); `Connection` combines them and adds the user calls
(RFC 9293 3.10.1-3.10.6) and the timer dispatch.

States (RFC 9293 3.3.2), plus REQUESTED: a SYN for a listened port, reported as a
`ConnectionRequest` and waiting for `accept` (-> SYN-RECEIVED, SYN-ACK sent) or `refuse`
(RST)::

    REQUESTED --accept--> SYN-RCVD --ACK--> ESTABLISHED --shutdown--> FIN-WAIT-1 --ACK--> FIN-WAIT-2
    connect: SYN-SENT --SYN-ACK--> ESTABLISHED       ESTABLISHED --FIN--> CLOSE-WAIT --shutdown--> LAST-ACK
    FIN-WAIT-1 --FIN--> CLOSING --ACK--> TIME-WAIT;  FIN-WAIT-2 --FIN--> TIME-WAIT --2 s--> gone

Sequence numbers are kept *extended*: plain Python ints that never wrap, starting at the
32-bit ISS / IRS; a wire value is mapped next to a reference (`unwrap`) and written
``& 0xffffffff``. So every comparison is an ordinary ``<``. The send buffer holds the
bytes from ``sbuf_seq`` (the first unacknowledged data byte) on; the receive buffer the
in-order bytes the application has not read; the out-of-order queue is `Reassembly`.

Bounds: ``send()`` accepts only what fits the send buffer; the advertised window never
exceeds the receive buffer's free space, so a slow reader closes the window (zero window)
instead of growing memory. Ownership: the `TcpStack` that made it, on its loop thread.
"""

from __future__ import annotations

from ..ip.headers import addr_text
from .congestion import NewReno
from .events import Closed, Connected, Reset, Writable
from .input import _Input
from .output import _Output
from .probes import _Probes
from .reassembly import Reassembly
from .rtt import RttEstimator
from .segment import ACK, RST
from .sender import _Sender
from .states import (
    CLOSE_WAIT,
    CLOSED,
    ESTABLISHED,
    FIN_WAIT_1,
    FIN_WAIT_2,
    LAST_ACK,
    M32,
    REQUESTED,
    STATE_NAMES,
    SYN_RCVD,
    SYN_SENT,
    TIME_WAIT,
)

__all__ = ["STATE_NAMES", "Config", "Connection"]



class Config:
    """Settings shared by every connection of one stack (read-only once made)."""

    __slots__ = (
        "keepalive_count",
        "keepalive_idle",
        "keepalive_interval",
        "max_retries",
        "max_rto",
        "min_rto",
        "mss4",
        "mss6",
        "recv_buffer",
        "request_timeout",
        "sack",
        "send_buffer",
        "syn_retries",
        "time_wait",
        "ttl",
        "wscale",
    )

    def __init__(self, *, mss4: int = 1240, mss6: int = 1220, recv_buffer: int = 1 << 20,
                 send_buffer: int = 1 << 20, sack: bool = True, min_rto: float = 0.2, max_rto: float = 60.0,
                 syn_retries: int = 5, max_retries: int = 10, time_wait: float = 2.0,
                 request_timeout: float = 30.0, keepalive_idle: float | None = None,
                 keepalive_interval: float = 10.0, keepalive_count: int = 5, ttl: int = 64) -> None:
        self.mss4, self.mss6 = mss4, mss6
        self.recv_buffer, self.send_buffer = recv_buffer, send_buffer
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


class Connection(_Input, _Sender, _Probes, _Output):
    __slots__ = (  # noqa: RUF023 - grouped by concern, not sorted
        "stack", "cfg", "id", "key", "v6", "laddr", "raddr", "lport", "rport", "addr_sum", "hsum", "ip_base",
        "ident", "state",
        # send side
        "iss", "snd_una", "snd_nxt", "snd_max", "snd_wnd", "snd_wl1", "snd_wl2", "max_snd_wnd", "snd_ws",
        "sbuf", "sbuf_seq", "fin_seq", "want_writable", "mss",
        # receive side
        "irs", "rcv_nxt", "rcv_adv", "rcv_ws", "ws_ok", "rcv_buf", "ooo", "peer_fin", "sack_ok",
        # congestion control and loss recovery
        "cc", "dupacks", "recovery", "recover", "rexmit_una", "high_rxt", "sb", "rack", "cwnd_limited", "force",
        "tlp_out", "prior_cwnd", "prior_ssthresh", "undo_marker", "undo_retrans", "dsack",
        "rtt", "rtt_seq", "rtt_time", "syn_retried",
        # timers (absolute times; 0 = off)
        "rtx_at", "tlp_at", "rack_at", "persist_at", "tw_at", "ka_at", "req_at", "heap_at", "retries", "probes", "last_rx",
        # bookkeeping
        "ack_pending", "dirty", "readable", "closed_emitted", "retransmits", "fast_retransmits", "timeouts",
    )

    def __init__(self, stack, cfg: Config, conn_id: int, laddr: bytes, lport: int, raddr: bytes, rport: int,
                 iss: int, now: float) -> None:
        self.stack = stack
        self.cfg = cfg
        self.id = conn_id
        self.laddr, self.lport, self.raddr, self.rport = laddr, lport, raddr, rport
        self.key = raddr + laddr + rport.to_bytes(2, "big") + lport.to_bytes(2, "big")
        self.v6 = len(laddr) == 16
        self.addr_sum = int.from_bytes(laddr + raddr, "big") % 0xFFFF
        self.hsum = self.addr_sum + 6 + lport + rport
        self.ip_base = 0x4500 + (cfg.ttl << 8 | 6) + self.addr_sum
        self.ident = iss & 0xFFFF
        self.state = CLOSED
        self.iss = iss
        self.snd_una = self.snd_nxt = self.snd_max = iss
        self.snd_wnd = self.max_snd_wnd = 0
        self.snd_wl1 = self.snd_wl2 = 0
        self.snd_ws = 0
        self.sbuf = bytearray()
        self.sbuf_seq = iss + 1
        self.fin_seq: int | None = None
        self.want_writable = False
        mss = cfg.mss6 if self.v6 else cfg.mss4
        self.mss = mss
        self.irs = self.rcv_nxt = self.rcv_adv = 0
        self.rcv_ws = 0
        self.ws_ok = False
        self.rcv_buf = bytearray()
        self.ooo: Reassembly | None = None
        self.peer_fin = False
        self.sack_ok = False
        self.cc = NewReno(mss)
        self.dupacks = 0
        self.recovery = False
        self.recover = iss
        self.rexmit_una = False
        self.high_rxt = iss
        self.sb = None
        self.rack = None
        self.tlp_out = False
        self.prior_cwnd = self.prior_ssthresh = self.undo_marker = 0
        self.undo_retrans = -1
        self.dsack: tuple[int, int] | None = None
        self.cwnd_limited = self.force = False
        self.rtt = RttEstimator(cfg.min_rto, cfg.max_rto)
        self.rtt_seq = 0
        self.rtt_time = 0.0
        self.syn_retried = False
        self.rtx_at = self.tlp_at = self.rack_at = self.persist_at = self.tw_at = self.ka_at = self.req_at = 0.0
        self.heap_at = float("inf")
        self.retries = self.probes = 0
        self.last_rx = now
        self.ack_pending = self.dirty = self.readable = self.closed_emitted = False
        self.retransmits = self.fast_retransmits = self.timeouts = 0

    # --- helpers shared by the mixins -----------------------------------------------

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

    def _established(self) -> None:
        self.state = ESTABLISHED if self.fin_seq is None else FIN_WAIT_1
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
        self.state = CLOSED
        self.rtx_at = self.tlp_at = self.rack_at = self.persist_at = self.tw_at = self.ka_at = self.req_at = 0.0
        self.sbuf = bytearray()
        self.ooo = None
        self.stack._forget(self)
        self._maybe_closed()

    def _maybe_closed(self) -> None:
        if not self.closed_emitted and self.state >= TIME_WAIT and not self.rcv_buf:
            self.closed_emitted = True
            self.stack._events.append(Closed(self.id))
            self.stack._closed(self)

    def _enter_time_wait(self, now: float) -> None:
        self.state = TIME_WAIT
        self.rtx_at = self.tlp_at = self.rack_at = self.persist_at = self.ka_at = 0.0
        self.sbuf = bytearray()
        self.tw_at = now + self.cfg.time_wait
        self._arm(self.tw_at)
        self._maybe_closed()

    def _sent_space(self) -> None:
        """After an ACK freed send-buffer space: `Writable` if the user was turned away."""
        if self.want_writable and self.cfg.send_buffer - len(self.sbuf) >= self.cfg.send_buffer // 4:
            self.want_writable = False
            self.stack._events.append(Writable(self.id))

    # --- user calls ------------------------------------------------------------------

    def open_active(self, now: float) -> None:
        self.state = SYN_SENT
        self._mark()

    def open_passive(self, now: float) -> None:
        """A SYN arrived for a listened port: wait for `accept` / `refuse`."""
        self.state = REQUESTED
        self.req_at = now + self.cfg.request_timeout
        self._arm(self.req_at)

    def accept(self, now: float) -> None:
        if self.state != REQUESTED:
            raise ValueError(f"connection {self.id} is {STATE_NAMES[self.state]}, not waiting for accept")
        self.state = SYN_RCVD
        self.req_at = 0.0
        self._mark()

    def send(self, data: bytes | bytearray | memoryview, now: float) -> int:
        state = self.state
        if state > CLOSE_WAIT or state == FIN_WAIT_1 or state == FIN_WAIT_2 or self.fin_seq is not None:
            if state >= TIME_WAIT:
                return 0
            raise ValueError(f"send after shutdown on connection {self.id}")
        room = self.cfg.send_buffer - len(self.sbuf)
        n = len(data)
        if n > room:
            self.want_writable = True
            n = room
            if n <= 0:
                return 0
            data = memoryview(data)[:n]
        self.sbuf += data
        if state >= ESTABLISHED:
            self._mark()
        return n

    def read(self, max_bytes: int) -> bytes:
        buf = self.rcv_buf
        if not buf:
            return b""
        if max_bytes >= len(buf):
            out = bytes(buf)
            buf.clear()
        else:
            out = bytes(buf[:max_bytes])
            del buf[:max_bytes]
        if self.state >= TIME_WAIT:
            self._maybe_closed()
        elif self._window_update_due():
            self.ack_pending = True
            self._mark()
        return out

    def shutdown(self, now: float) -> None:
        """Queue our FIN after the buffered data (RFC 9293 3.10.4 CLOSE)."""
        state = self.state
        if self.fin_seq is not None or state >= TIME_WAIT:
            return
        if state == REQUESTED:
            raise ValueError(f"connection {self.id} is a request: answer it with accept or refuse")
        self.fin_seq = self.sbuf_seq + len(self.sbuf)
        if state == ESTABLISHED:
            self.state = FIN_WAIT_1
        elif state == CLOSE_WAIT:
            self.state = LAST_ACK
        self._mark()

    def abort(self, now: float) -> None:
        """RFC 9293 3.10.5 ABORT: RST in synchronized states, unread data dropped, gone."""
        self.rcv_buf.clear()
        if self.state >= TIME_WAIT:
            self._maybe_closed()  # closed already; the user gives up its unread data
            return
        if SYN_RCVD <= self.state <= LAST_ACK:
            self._send_rst_now(self.snd_nxt)
        elif self.state == REQUESTED:  # as `refuse`
            self._tx(self.stack._out, 0, RST | ACK, b"", b"", 0)
        self._finish()

    # --- timers ----------------------------------------------------------------------

    def on_timer(self, now: float) -> None:
        """Run whatever timer is due; re-arm the next one."""
        self.heap_at = float("inf")
        if self.tw_at and now >= self.tw_at:
            self.tw_at = 0.0
            self._finish()
            return
        if self.req_at and now >= self.req_at:
            self.stack.counters["request_timeout"] += 1
            self._fail("timeout")
            return
        if self.rtx_at and now >= self.rtx_at:
            self.rtx_at = self.tlp_at = 0.0
            self._rto_expired(now)
        if self.tlp_at and now >= self.tlp_at:
            self.tlp_at = 0.0
            self._tlp_expired(now)
        if self.rack_at and now >= self.rack_at:
            self.rack_at = 0.0
            if self.rack is not None:
                self._rack_detect(now)
        if self.persist_at and now >= self.persist_at:
            self.persist_at = 0.0
            self._persist_expired(now)
        if self.ka_at and now >= self.ka_at:
            self.ka_at = 0.0
            self._keepalive_expired(now)
        if self.state == CLOSED:
            return
        t = min(t for t in (self.rtx_at, self.tlp_at, self.rack_at, self.persist_at, self.tw_at, self.ka_at,
                            self.req_at, float("inf")) if t)
        if t < float("inf"):
            self._arm(t)

    # --- introspection ---------------------------------------------------------------

    def info(self) -> dict:
        return {
            "conn_id": self.id, "state": STATE_NAMES[self.state],
            "local": (addr_text(self.laddr), self.lport), "remote": (addr_text(self.raddr), self.rport),
            "mss": self.mss, "cwnd": self.cc.cwnd, "ssthresh": self.cc.ssthresh,
            "srtt": self.rtt.srtt, "rttvar": self.rtt.rttvar, "rto": self.rtt.rto,
            "snd_wnd": self.snd_wnd, "rcv_wnd": max(0, self.rcv_adv - self.rcv_nxt),
            "bytes_in_flight": self.snd_max - self.snd_una, "send_buffered": len(self.sbuf),
            "recv_buffered": len(self.rcv_buf), "out_of_order": self.ooo.nbytes if self.ooo else 0,
            "in_recovery": self.recovery, "sack": self.sack_ok, "wscale": (self.snd_ws, self.rcv_ws),
            "retransmits": self.retransmits, "fast_retransmits": self.fast_retransmits,
            "timeouts": self.timeouts,
        }
