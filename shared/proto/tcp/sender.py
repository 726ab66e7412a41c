"""The send side's reaction to ACKs and timeouts: `_Sender`, a layer of `Connection` (see `tcb`).

- ACK processing (RFC 9293 3.10.7.4, fifth check): the send window is taken from a
  segment newer than the last one that set it (SND.WL1/SND.WL2); acknowledged bytes leave
  the send buffer; a round-trip sample is taken when the one timed segment is covered
  (Karn: never from a retransmission; RFC 6298 section 3); the RTO restarts (5.3) or
  stops when nothing is outstanding (5.2).
- Duplicate ACKs (RFC 5681 section 2): no data, no SYN/FIN, same window, ACK == SND.UNA,
  data outstanding. The first two allow one new segment each (limited transmit, RFC 3042).
- Without SACK: NewReno (RFC 6582). The third duplicate ACK starts fast retransmit,
  unless the ACK is still below the point of the last timeout ("recover");
  cwnd = ssthresh + 3 MSS, +1 MSS per further duplicate; a partial ACK retransmits the
  next unacknowledged segment and deflates cwnd; the ACK covering ``recover`` ends
  recovery with cwnd = min(ssthresh, max(FlightSize, MSS) + MSS).
- With SACK: the scoreboard (`scoreboard`) plus RACK (`rack`, RFC 8985) decide what is
  lost; the first loss starts recovery (cwnd = ssthresh = FlightSize / 2, the first lost
  segment at once); `output` then retransmits lost holes and lost retransmissions, and
  new data, while pipe < cwnd (RFC 6675). D-SACKs (RFC 2883) widen RACK's reordering
  window, and when every retransmission of a recovery proves needless, its cwnd
  reduction is undone (as Linux does).
- Retransmission timeout (RFC 6298 section 5; RFC 5681 eq. 4): ssthresh halves (first
  expiry only), cwnd = 1 MSS, the RTO doubles, SACK and RACK state is dropped and sending
  goes back to SND.UNA (SND.NXT = SND.UNA, "go-back-N"). After ``max_retries`` expiries
  without progress (``syn_retries`` for the handshake) the connection fails ("timeout").
"""

from __future__ import annotations

from .probes import _Probes
from .segment import FIN, SYN
from .states import SYN_RCVD, SYN_SENT

__all__: list[str] = []


class _Sender(_Probes):
    __slots__ = ()

    def _ack(self, ack: int, wnd: int, seq: int, plen: int, flags: int, sack: tuple[tuple[int, int], ...],
             now: float) -> None:
        """An acceptable segment's ACK: SND.UNA <= ``ack`` <= SND.MAX (extended),
        ``wnd`` already scaled, ``seq`` extended, ``sack`` wire blocks (or ())."""
        una = self.snd_una
        old_wnd = self.snd_wnd
        if self.snd_wl1 < seq or (self.snd_wl1 == seq and self.snd_wl2 <= ack):
            self.snd_wl1 = seq
            self.snd_wl2 = ack
            if wnd != old_wnd:
                self.snd_wnd = wnd
                self.max_snd_wnd = max(self.max_snd_wnd, wnd)
                if wnd > old_wnd:
                    self.persist_at = 0.0
                    self._mark()
        self.probes = 0
        rack = self.rack
        sb = self.sb
        news = False
        if sack and rack is not None and sb is not None:
            unwrap, smax = self.unwrap, self.snd_max
            for i, (left, right) in enumerate(sack):
                s, e = unwrap(left, una), unwrap(right, una)
                if i == 0 and (e <= ack or (len(sack) > 1 and unwrap(sack[1][0], una) <= s
                                            and e <= unwrap(sack[1][1], una))):
                    self._dsack(s, e)  # RFC 2883: a duplicate reached the peer
                elif sb.add(s, e, una, smax):
                    rack.sacked(s, e, now)
                    news = True
        if ack > una:
            self._new_ack(ack, una, now)
        elif plen == 0 and wnd == old_wnd and self.snd_max > una and not flags & (SYN | FIN):
            self._dupack(now)
        if rack is not None and self.snd_max > self.snd_una:
            if self.recovery or (sb is not None and sb.blocks) or rack.rtx:
                self._rack_detect(now)
            if news or ack > una:
                self.tlp_out = False
                self._arm_tlp(now)

    def _rack_detect(self, now: float) -> None:
        """RACK loss detection (`rack`); losses start recovery or feed it."""
        rack, sb, mss = self.rack, self.sb, self.mss
        assert rack is not None and sb is not None  # only with SACK
        srtt = self.rtt.srtt if self.rtt.srtt is not None else 1.0
        again = rack.detect(now, rack.reo_wnd(self.recovery, sb.sacked // mss, srtt))
        if again:
            self.rack_at = again
            self._arm(again)
        frm = max(self.high_rxt, self.snd_una)
        if (rack.boundary > frm and sb.hole_bytes(frm, rack.boundary)) or any(r.lost for r in rack.rtx):
            if not self.recovery:
                self._enter_recovery(now, reduce=self.snd_una > self.recover)
            else:
                self._mark()

    def _new_ack(self, ack: int, una: int, now: float) -> None:
        acked = ack - una
        if self.rtt_seq and ack >= self.rtt_seq:
            self.rtt.sample(now - self.rtt_time)
            self.rtt_seq = 0
        base = self.sbuf_seq
        if ack > base:
            n = ack - base
            buf = self.sbuf
            n = min(n, len(buf))
            if n:
                buf.consume(n)
                self.sbuf_seq = base + n
                if self.want_writable:
                    self._sent_space()
        self.snd_una = ack
        self.snd_nxt = max(self.snd_nxt, ack)
        self.retries = 0
        sb = self.sb
        if sb is not None:
            if sb.blocks:
                sb.ack(ack)
            rack = self.rack
            assert rack is not None  # made with sb
            rack.acked(ack, now)
        cc = self.cc
        if self.recovery:
            if ack >= self.recover:
                self.recovery = False
                self.dupacks = 0
                if sb is None:
                    cc.cwnd = min(cc.ssthresh, max(self.snd_max - ack, self.mss) + self.mss)
                else:
                    cc.cwnd = cc.ssthresh
            elif sb is None:
                # NewReno partial ACK (RFC 6582 3.2 step 5): next hole, deflate
                cwnd = cc.cwnd - acked
                if acked >= self.mss:
                    cwnd += self.mss
                cc.cwnd = max(cwnd, self.mss)
                self.rexmit_una = True
            elif self.high_rxt < ack:
                self.high_rxt = ack
        else:
            self.dupacks = 0
            if self.cwnd_limited:
                srtt = self.rtt.srtt
                cc.on_ack(acked, now, srtt if srtt is not None else 0.0)
        if ack >= self.snd_max:
            self.rtx_at = self.tlp_at = 0.0
        else:
            self.rtx_at = t = now + self.rtt.rto
            if t < self.heap_at:
                self._arm(t)
        self._mark()

    def _dupack(self, now: float) -> None:
        self.dupacks += 1
        if self.recovery:
            if self.sb is None:
                self.cc.cwnd += self.mss  # NewReno inflation
            self._mark()
            return
        if self.sb is None and self.dupacks >= 3 and self.snd_una > self.recover:
            # (RFC 6582: not for data from before the last timeout)
            self._enter_recovery(now, reduce=True)
        else:
            self._mark()  # limited transmit; with SACK, RACK decides what is lost

    def _enter_recovery(self, now: float, reduce: bool) -> None:
        """Fast retransmit / recovery; ``reduce``: a new congestion event (halve cwnd)."""
        cc = self.cc
        if reduce:
            self.prior_cwnd, self.prior_ssthresh = cc.cwnd, cc.ssthresh
            self.undo_marker, self.undo_retrans = self.snd_una, 0
            if self.rack is not None:
                self.rack.new_episode()
            cc.on_loss(self.snd_max - self.snd_una)
            cc.cwnd = cc.ssthresh if self.sb is not None else cc.ssthresh + 3 * self.mss
            self.fast_retransmits += 1
            self.stack.counters["fast_retransmit"] += 1
        self.recovery = True
        self.recover = self.snd_max
        if self.high_rxt <= self.snd_una:
            self.high_rxt = self.snd_una
            self.rexmit_una = True  # the first lost segment goes at once (RFC 6675 4.3)
        self.rtt_seq = 0
        self._mark()

    def _rto_expired(self, now: float) -> None:
        state = self.state
        handshake = state == SYN_SENT or state == SYN_RCVD
        if not handshake and self.snd_max == self.snd_una:
            return
        self.timeouts += 1
        self.retries += 1
        self.stack.counters["rto"] += 1
        if self.retries > (self.cfg.syn_retries if handshake else self.cfg.max_retries):
            self._fail("timeout")
            return
        if handshake:
            self.syn_retried = True
        self.cc.on_timeout(self.snd_max - self.snd_una, self.rtt.backoffs == 0)
        self.rtt.expired()
        self.recovery = False
        self.dupacks = 0
        self.recover = self.snd_max
        self.rtt_seq = 0
        sb, rack = self.sb, self.rack
        if sb is not None and rack is not None:
            sb.clear()
            rack.reset(self.snd_una)
        self.tlp_at = self.rack_at = 0.0
        self.undo_retrans = -1
        self.high_rxt = self.snd_una
        self.snd_nxt = self.snd_una
        self.rexmit_una = not handshake
        self.rtx_at = now + self.rtt.rto
        self._arm(self.rtx_at)
        self._mark()

    def _dsack(self, start: int, end: int) -> None:
        """A D-SACK: [start, end) arrived twice. Reordering, not loss: widen RACK's window,
        and when every retransmission of the last recovery proves needless, undo its
        cwnd reduction (RFC 2883 section 5; Linux's DSACK undo)."""
        self.stack.counters["dsack"] += 1
        rack = self.rack
        assert rack is not None  # D-SACKs are read only with SACK
        rack.on_dsack()
        if self.undo_retrans > 0 and start >= self.undo_marker:
            self.undo_retrans -= max(1, (end - start) // self.mss)
            if self.undo_retrans <= 0:
                self.undo_retrans = -1
                self.cc.undo(self.prior_cwnd, self.prior_ssthresh)
                self.stack.counters["undo"] += 1
                self._mark()
