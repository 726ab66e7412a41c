"""One TCP connection (RFC 9293): its control block, user calls and timers, sans-IO.

The connection's variables are declared in `tcb` (`_Tcb`); on top of them, each layer
using only those below it, come building segments (`output`, `_Output`), tail loss,
window and keepalive probes (`probes`, `_Probes`), acknowledgement processing, loss
recovery and the retransmission timer (`sender`, `_Sender`) and segment arrival (`input`,
`_Input`); `Connection` adds the user calls (RFC 9293 3.10.1-3.10.6) and the timer
dispatch.

States (RFC 9293 3.3.2), plus REQUESTED: a SYN for a listened port, reported as a
`ConnectionRequest` and waiting for `accept` (-> SYN-RECEIVED, SYN-ACK sent) or `refuse`
(RST). Every transition, and which code takes it, is the table in `states`.

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

from typing import Any

from ..ip.headers import addr_text
from .input import _Input
from .segment import ACK, RST
from .states import (
    ACCEPT,
    CLOSE,
    CLOSE_WAIT,
    CLOSED,
    CONNECT,
    ESTABLISHED,
    FIN_WAIT_1,
    FIN_WAIT_2,
    LAST_ACK,
    REQUESTED,
    STATE_NAMES,
    SYN_IN,
    SYN_RCVD,
    TIME_WAIT,
)
from .tcb import Config

__all__ = ["STATE_NAMES", "Config", "Connection"]


class Connection(_Input):
    __slots__ = ()

    # --- user calls ------------------------------------------------------------------

    def open_active(self, now: float) -> None:
        self._go(CONNECT)
        self._mark()

    def open_passive(self, now: float) -> None:
        """A SYN arrived for a listened port: wait for `accept` / `refuse`."""
        self._go(SYN_IN)
        self.req_at = now + self.cfg.request_timeout
        self._arm(self.req_at)

    def accept(self, now: float) -> None:
        if self.state != REQUESTED:
            raise ValueError(f"connection {self.id} is {STATE_NAMES[self.state]}, not waiting for accept")
        self._go(ACCEPT)
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
        self.sbuf.append(data)
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
        self._go(CLOSE)  # in the handshake the FIN waits for ESTABLISHED (`_established`)
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
        if self.tlp_at and now >= self.tlp_at:  # before the RTO: a probe due with it goes instead
            self.tlp_at = 0.0
            self._tlp_expired(now)  # (which re-arms the RTO after the probe)
        if self.rtx_at and now >= self.rtx_at:
            self.rtx_at = self.tlp_at = 0.0
            self._rto_expired(now)
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

    def info(self) -> dict[str, Any]:
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
