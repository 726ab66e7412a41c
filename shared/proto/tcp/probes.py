"""Probes a connection sends when ACKs stop coming: `_Probes`, a layer of `Connection` (see `tcb`).

- Tail loss probe (RFC 8985 section 7), with SACK: PTO = 2 SRTT (+200 ms when one segment
  is in flight, as the peer may delay its ACK), at least 10 ms, armed when new data goes
  out or an ACK / SACK brings news, only if it beats the RTO and no probe is unanswered.
  On expiry it sends one new segment (beyond cwnd, within the peer's window) or else
  retransmits the oldest outstanding retransmission or the last segment, so that RACK
  gets the feedback it needs instead of waiting for the RTO. Deviation: it also fires
  during fast recovery (RFC 8985 7.2 waits for recovery to end): with a flight of two or
  three segments a lost retransmission otherwise always costs a full RTO.
- Persist timer (RFC 9293 3.8.6.1): data waiting, nothing in flight and the window too
  small: probe with SEQ = SND.UNA - 1 and no data (as Linux does), which makes the peer
  repeat its window; a non-zero but small window is filled instead (sender SWS override).
  Probes back off exponentially; the connection fails ("timeout") only when the peer
  stops answering at all (``max_retries`` probes without any segment back).
- Keepalive (RFC 9293 3.8.4), off unless ``keepalive_idle`` is set: after that much
  silence, ``keepalive_count`` probes ``keepalive_interval`` apart, then "keepalive".
"""

from __future__ import annotations

from .output import _Output
from .segment import ACK, FIN
from .states import CLOSE_WAIT, ESTABLISHED

__all__: list[str] = []


class _Probes(_Output):
    __slots__ = ()

    def _tlp_expired(self, now: float) -> None:
        una, nxt = self.snd_una, self.snd_nxt
        if self.snd_max == una or self.state < ESTABLISHED or self.tlp_out:
            return
        rack = self.rack
        assert rack is not None  # armed only with SACK
        self.tlp_out = True
        self.stack.counters["tail_loss_probe"] += 1
        out = self.stack._out
        base = self.sbuf_seq
        data_end = base + len(self.sbuf)
        room = una + self.snd_wnd - nxt
        if nxt == self.snd_max and nxt < data_end and room > 0:
            n = min(self.mss, data_end - nxt, room)  # new data, beyond cwnd
            self._tx(out, nxt, ACK, self.sbuf[nxt - base:nxt - base + n])
            rack.sent(nxt, nxt + n, now)
            self.snd_nxt = self.snd_max = nxt + n
        else:
            if rack.rtx:
                oldest = rack.rtx[0]
                oldest.start = start = max(oldest.start, una)
                end = oldest.end
            else:
                end = min(self.snd_max, data_end)
                start = max(una, end - self.mss)
            if end > start:
                self._tx(out, start, ACK, self.sbuf[start - base:end - base])
                self._rexmitted(start, end, now)
            elif self.fin_seq is not None and self.snd_max > self.fin_seq:
                self._tx(out, self.fin_seq, ACK | FIN)
        self.rtx_at = now + self.rtt.rto
        self._arm(self.rtx_at)

    def _persist_expired(self, now: float) -> None:
        if self.snd_max != self.snd_una or self.state < ESTABLISHED:
            return
        self.probes += 1
        if self.probes > self.cfg.max_retries and now - self.last_rx > self.rtt.max_rto:
            self._fail("timeout")
            return
        room = self.snd_una + self.snd_wnd - self.snd_nxt
        if room > 0:
            self.force = True
            self._mark()
        else:
            self._send_probe()
            self.stack.counters["window_probe"] += 1
        self.persist_at = now + min(self.rtt.rto * (1 << min(self.probes, 10)), self.rtt.max_rto)
        self._arm(self.persist_at)

    def _keepalive_expired(self, now: float) -> None:
        cfg = self.cfg
        idle = cfg.keepalive_idle
        assert idle is not None  # armed only with keepalive on
        if self.state != ESTABLISHED and self.state != CLOSE_WAIT:
            return
        if now - self.last_rx < idle:
            self.probes = 0
            self.ka_at = self.last_rx + idle
            return
        if self.probes >= cfg.keepalive_count:
            self._fail("keepalive")
            return
        self.probes += 1
        self._send_probe()
        self.ka_at = now + cfg.keepalive_interval
