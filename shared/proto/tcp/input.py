"""Segment arrival (RFC 9293 section 3.10.7): `_Input`, a layer of `Connection` (see `tcb`).

The fast path (header prediction, as in Van Jacobson's and every BSD-derived stack)
takes a segment in ESTABLISHED or FIN-WAIT-2 (or a pure ACK in CLOSE-WAIT) with ACK (and
maybe PSH), no other flag, no options, the expected sequence number, an ACK inside
[SND.UNA, SND.MAX], data that fits the window, and an empty out-of-order queue: it
processes the ACK (`_Sender._ack`), appends the data to the receive buffer and owes an
ACK. That ACK goes out at the next `poll`: one (stretch) ACK per batch and connection,
as receive-side coalescing (GRO) makes Linux do. Deviation: RFC 9293 3.8.6.3 / RFC 1122
4.2.3.2 ask for an ACK at least every second full-sized segment; the sender's byte
counting (`congestion`) does not need it. Out-of-order data, a filled gap, a FIN and
anything unacceptable are acknowledged at once. Quick ACKs: out-of-order data (a loss,
or reordering) also makes the next ``Config.quick_acks`` (16, Linux's TCP_MAX_QUICKACKS)
in-order segments ACKed every second one, as the RFC asks (Linux's quickack mode after a
hole): on a lossy path a burst answered by one stretch ACK stalls the sender for a whole
RTO when that one ACK is lost (seen on the emulated link, 20 ms each way + 0.5 % loss:
tailscaled's sender waited 200 ms 3-5 times per 15 MB with us, 1-2 times with its own
receiver); a clean path never enters it, so bulk transfers keep one ACK per batch. Not
more than 16: with 256, a download that lost several MB when its direct path died kept
every ACK per second segment through the recovery over DERP; tailscaled's sender grew its
window per ACK into bursts its DERP write queue evicted (magicsock_send_derp_dropped: 536
of 998 in half a second), lost its retransmissions, and sat in RTO backoff (14, 27, 55,
111 s) -- 6 of 7 runs of test_disco's UDP-cut download timed out, 0 of 6 with 16 or 0.
A sparse stretch ACK covering two or more segments goes out as two (`output`, split ACKs).

Everything else takes the slow path (`_slow_input`), which follows the RFC's checks in
order, one method each (the third, security, and the sixth, URG, do not apply):

- first, check sequence number (`_check_sequence`): the four-case table of 3.10.7.4, with
  RCV.WND = RCV.ADV - RCV.NXT; an unacceptable segment is answered with an ACK
  (`_unacceptable`). With a zero window an in-sequence segment's ACK is still processed,
  its data dropped and re-ACKed. The segment is then trimmed to the window
  (`_trim_to_window`: data before RCV.NXT, and after the right edge with its FIN).
- second, check the RST bit (`_check_rst`): reset only when SEQ == RCV.NXT exactly,
  otherwise a challenge ACK (RFC 5961 3.2).
- fourth, check the SYN bit: in a synchronized state, a challenge ACK (RFC 5961 4.2). The
  peer's own SYN again (SEQ = IRS) loses its SYN bit first, as in BSD: a retransmitted
  SYN in SYN-RECEIVED gets our SYN-ACK again, and the SYN-ACK of a simultaneous open acts
  as the ACK.
- fifth, check the ACK field (`_check_ack`): SYN-RECEIVED -> ESTABLISHED when it
  acknowledges our SYN (else RST); an ACK for data never sent is answered with an ACK and
  the segment dropped; old ACKs are ignored; our FIN acknowledged moves FIN-WAIT-1 ->
  FIN-WAIT-2, CLOSING -> TIME-WAIT, LAST-ACK -> CLOSED.
- seventh, process the segment text (`_text`): in order -> receive buffer (plus whatever
  the out-of-order queue now completes, then an immediate ACK, RFC 5681 4.2); above
  RCV.NXT -> `Reassembly` and an immediate duplicate ACK carrying SACK blocks.
- eighth, check the FIN bit (`_fin_received`), once in order: RCV.NXT + 1,
  `PeerFinished`, ESTABLISHED -> CLOSE-WAIT, FIN-WAIT-1 -> CLOSING (or TIME-WAIT if our
  FIN is acknowledged too), FIN-WAIT-2 -> TIME-WAIT; a FIN again in TIME-WAIT restarts
  its timer.

SYN-SENT (3.10.7.3, `_input_syn_sent`): an ACK outside (ISS, SND.NXT] gets a RST; a RST with an acceptable
ACK means "refused"; SYN-ACK -> ESTABLISHED; a bare SYN -> SYN-RECEIVED (simultaneous open).
"""

from __future__ import annotations

from ..ip.headers import Malformed
from .events import PeerFinished, Readable
from .rack import Rack
from .reassembly import Reassembly
from .scoreboard import Scoreboard
from .segment import ACK, FIN, NO_OPTIONS, RST, SYN, Options, parse_options
from .sender import _Sender
from .states import (
    CLOSE_WAIT,
    CLOSED,
    CLOSING,
    ESTABLISHED,
    FIN_ACKED,
    FIN_IN,
    FIN_WAIT_1,
    FIN_WAIT_2,
    LAST_ACK,
    M32,
    REQUESTED,
    SYN_IN,
    SYN_RCVD,
    SYN_SENT,
    TIME_WAIT,
)

__all__: list[str] = []

MIN_MSS = 64
"""In-order segments ACKed every second one after out-of-order data (Linux allows up to 16
quick ACKs per event with a per-segment ACK default; ours is one ACK per batch, so the
mode lasts about as long as a lossy path goes between two losses at 0.5 %)."""


class _Input(_Sender):
    __slots__ = ()

    def input(self, seqw: int, ackw: int, flags: int, wnd: int, pkt: bytes, opt: int, off: int, end: int,
              now: float) -> None:
        """One segment for this connection: options are ``pkt[opt:off]``, data ``pkt[off:end]``."""
        self.last_rx = now
        self.rcv_wnd_max = self.stack.rcv_wnd_max
        rcv_nxt = self.rcv_nxt
        state = self.state
        if ((state == ESTABLISHED or state == FIN_WAIT_2 or (state == CLOSE_WAIT and end == off))
                and flags & 0x37 == ACK and opt == off and seqw == rcv_nxt & M32):
            una = self.snd_una
            d = (ackw - una) & M32
            plen = end - off
            if d <= self.snd_max - una and (not plen or (self.ooo is None and plen <= self.rcv_adv - rcv_nxt)):
                self._ack(una + d, wnd << self.snd_ws, rcv_nxt, plen, flags, (), now)
                if plen:
                    self.rcv_buf += pkt[off:end]
                    self.last_seg = rcv_nxt
                    self.rcv_nxt = rcv_nxt + plen
                    if not self.readable:
                        self.readable = True
                        self.stack._readable.append(self)
                    if self.quick_acks:
                        self.quick_acks -= 1
                        self.unacked_segs += 1
                        if self.unacked_segs >= 2:
                            self._send_ack_now()
                            return
                    if not self.ack_pending:
                        self.ack_pending = True
                        self._mark()
                return
        self._slow_input(seqw, ackw, flags, wnd, pkt, opt, off, end, now)

    def input_run(self, seqw: int, ackw: int, wnd: int, run: list[tuple[bytes, int, int, int]], total: int,
                  now: float) -> None:
        """Data segments without options, contiguous from ``seqw``, all with ACK ``ackw``
        and window ``wnd`` (``run``: (packet, data start, data end, flags), flags ACK and
        maybe PSH; ``total``: their data bytes): the same as `input` for each in turn, in one
        step when the first takes the fast path, no quick ACK is owed, and the window holds
        them all. Their `_ack` calls would differ only in SND.WL1, which ends at the last
        one's sequence number."""
        last = run[-1]
        if self._take_run(seqw, ackw, wnd, total, last[2] - last[1], last[3], now):
            buf = self.rcv_buf
            for pkt, off, end, _flags in run:
                buf += pkt[off:end]
            return
        for pkt, off, end, flags in run:
            self.input(seqw, ackw, flags, wnd, pkt, off, off, end, now)
            seqw = (seqw + end - off) & M32

    def input_bulk(self, seqw: int, ackw: int, wnd: int, data: bytes, last_len: int, last_flags: int,
                   now: float) -> bool:
        """`input_run` for a run whose data is already joined (`bulk`; ``last_len`` and
        ``last_flags``: its last segment's): taken whole, or not at all (False: nothing
        changed, the caller hands the segments over one by one)."""
        if self._take_run(seqw, ackw, wnd, len(data), last_len, last_flags, now):
            self.rcv_buf += data
            return True
        return False

    def _take_run(self, seqw: int, ackw: int, wnd: int, total: int, last_len: int, last_flags: int,
                  now: float) -> bool:
        """A run's fast path but the appending of its data: when it applies, the ACK
        processed, RCV.NXT moved past ``total`` bytes, an ACK owed; else False, nothing done."""
        rcv_nxt = self.rcv_nxt
        state = self.state
        if (not self.quick_acks and self.ooo is None and (state == ESTABLISHED or state == FIN_WAIT_2)
                and seqw == rcv_nxt & M32 and total <= self.rcv_adv - rcv_nxt):
            una = self.snd_una
            d = (ackw - una) & M32
            if d <= self.snd_max - una:
                self.last_rx = now
                self.rcv_wnd_max = self.stack.rcv_wnd_max
                self.last_seg = last = rcv_nxt + total - last_len
                self._ack(una + d, wnd << self.snd_ws, last, total, last_flags, (), now)
                self.rcv_nxt = rcv_nxt + total
                if not self.readable:
                    self.readable = True
                    self.stack._readable.append(self)
                if not self.ack_pending:
                    self.ack_pending = True
                    self._mark()
                return True
        return False

    def _slow_input(self, seqw: int, ackw: int, flags: int, wnd: int, pkt: bytes, opt: int, off: int, end: int,
                    now: float) -> None:
        try:
            opts = parse_options(pkt[opt:off]) if off > opt else NO_OPTIONS
        except Malformed as e:
            self.stack._drop(e.reason, e.detail)
            return
        state = self.state
        if state == SYN_SENT:
            self._input_syn_sent(seqw, ackw, flags, wnd, opts, pkt, off, end, now)
            return
        if state == REQUESTED:
            if flags & RST and seqw == self.rcv_nxt & M32:
                self._fail("reset")
            return
        if state == CLOSED:
            return
        seq = self.unwrap(seqw, self.rcv_nxt)
        plen = end - off
        syn = flags & SYN
        fin = flags & FIN
        dup_syn = syn and seq == self.irs
        if dup_syn:  # the peer's SYN again (or its SYN-ACK in a simultaneous open): drop the SYN
            syn = 0
            seq += 1
        if not self._check_sequence(seq, plen + (1 if syn else 0) + fin):
            self._unacceptable(seq, plen, syn, fin, flags, ackw, wnd, opts, now)
            return
        data_seq, off, plen, fin = self._trim_to_window(seq, off, plen, fin)
        if flags & RST:
            self._check_rst(seq)
            return
        if syn:  # fourth, check the SYN bit: in a synchronized state, a challenge ACK (RFC 5961 4.2)
            self._send_ack_now()
            return
        if not flags & ACK:  # fifth, if the ACK bit is off, drop the segment
            if dup_syn and state == SYN_RCVD:
                self.snd_nxt = self.iss  # the peer missed our SYN-ACK: send it again
                self._mark()
            return
        if not self._check_ack(seq, ackw, wnd, plen, flags, opts, now):
            return
        if plen > 0 or fin:  # seventh, process the segment text; eighth, check the FIN bit
            state = self.state
            if state == ESTABLISHED or state == FIN_WAIT_1 or state == FIN_WAIT_2:
                self._text(data_seq, pkt[off:off + plen] if plen > 0 else b"", fin, now)
            elif fin and state == TIME_WAIT:
                self._enter_time_wait(now, FIN_IN)
                self._send_ack_now()

    # --- the RFC 9293 3.10.7.4 checks, in order -------------------------------------

    def _check_sequence(self, seq: int, seg_len: int) -> bool:
        """First, check sequence number: is the segment acceptable (the four cases of the
        table, with RCV.WND = RCV.ADV - RCV.NXT)?"""
        rcv_nxt = self.rcv_nxt
        rwnd = max(self.rcv_adv - rcv_nxt, 0)
        if seg_len == 0:
            return seq == rcv_nxt if rwnd == 0 else rcv_nxt <= seq < rcv_nxt + rwnd
        if rwnd == 0:
            return False
        last = seq + seg_len - 1
        return rcv_nxt <= seq < rcv_nxt + rwnd or rcv_nxt <= last < rcv_nxt + rwnd

    def _unacceptable(self, seq: int, plen: int, syn: int, fin: int, flags: int, ackw: int, wnd: int,
                      opts: Options, now: float) -> None:
        """An unacceptable segment: dropped, and answered with an ACK unless it is a RST.
        With a zero window, an in-sequence segment's ACK is still processed."""
        if flags & RST:
            return
        rcv_nxt = self.rcv_nxt
        state = self.state
        if self.rcv_adv <= rcv_nxt and seq == rcv_nxt and flags & ACK and not syn and state >= ESTABLISHED:
            self.stack.counters["zero_window_drop"] += 1
            ok_ack = self.unwrap(ackw, self.snd_una)
            if self.snd_una <= ok_ack <= self.snd_max:
                self._ack(ok_ack, wnd << self.snd_ws, seq, 0, flags, opts.sack if self.sb is not None else (), now)
        elif state == TIME_WAIT and fin:
            self._enter_time_wait(now, FIN_IN)
        if plen and seq + plen <= rcv_nxt:
            self.dsack = (seq, seq + plen)
        self.stack.counters["unacceptable"] += 1
        self._send_ack_now()

    def _trim_to_window(self, seq: int, off: int, plen: int, fin: int) -> tuple[int, int, int, int]:
        """An acceptable segment cut to the window: the data before RCV.NXT (noted as a
        D-SACK), and after the right edge with its FIN. Returns (SEQ of the data, its
        offset, its length, FIN)."""
        rcv_nxt = self.rcv_nxt
        if seq < rcv_nxt:
            cut = rcv_nxt - seq
            if cut > plen:
                fin = 0
                cut = plen
            if cut:
                self.dsack = (seq, seq + cut)
            off += cut
            plen -= cut
            seq = rcv_nxt
        over = seq + plen - max(self.rcv_adv, rcv_nxt)
        if over > 0:
            plen -= over
            fin = 0
        return seq, off, plen, fin

    def _check_rst(self, seq: int) -> None:
        """Second, check the RST bit: reset only when SEQ == RCV.NXT exactly, otherwise a
        challenge ACK (RFC 5961 3.2)."""
        if seq != self.rcv_nxt:
            self._send_ack_now()
        elif self.state >= CLOSING:
            self._finish()
        else:
            self._fail("reset")

    def _check_ack(self, seq: int, ackw: int, wnd: int, plen: int, flags: int, opts: Options, now: float) -> bool:
        """Fifth, check the ACK field (the ACK bit is on); False when the segment is done with."""
        una = self.snd_una
        ack = self.unwrap(ackw, una)
        state = self.state
        if state == SYN_RCVD:
            if not una < ack <= self.snd_max:
                self._send_rst_now(ack)
                return False
            self.snd_wl1 = seq - 1
            self._established()
            state = self.state
        if ack > self.snd_max:  # acknowledges something not yet sent
            self._send_ack_now()
            return False
        if ack >= una:
            self._ack(ack, wnd << self.snd_ws, seq, plen, flags, opts.sack if self.sb is not None else (), now)
        fin_seq = self.fin_seq
        if fin_seq is not None and self.snd_una > fin_seq:  # our FIN is acknowledged
            if state == FIN_WAIT_1:
                self._go(FIN_ACKED)
                self.rtx_at = 0.0
            elif state == CLOSING:
                self._enter_time_wait(now, FIN_ACKED)
                return False
            elif state == LAST_ACK:
                self._go(FIN_ACKED)
                self._finish()
                return False
        return True

    def _text(self, seq: int, data: bytes, fin: int, now: float) -> None:
        rcv_nxt = self.rcv_nxt
        if seq > rcv_nxt:
            ooo = self.ooo
            if ooo is None:
                ooo = self.ooo = Reassembly()
            if data and not ooo.add(seq, data):
                self.dsack = (seq, seq + len(data))
            if fin:
                ooo.fin = seq + len(data)
            self.stack.counters["out_of_order"] += 1
            self.quick_acks = self.cfg.quick_acks
            self._send_ack_now()
            return
        if data:
            self.rcv_buf += data
            self.last_seg = rcv_nxt
            rcv_nxt += len(data)
        ooo = self.ooo
        filled = False
        if ooo is not None:
            for chunk in ooo.pop_ready(rcv_nxt):
                self.rcv_buf += chunk
                rcv_nxt += len(chunk)
                filled = True
            if ooo.fin is not None and ooo.fin <= rcv_nxt:
                fin = 1
                ooo.fin = None
            if not ooo:
                self.ooo = None
            filled = True
        self.rcv_nxt = rcv_nxt
        if (data or filled) and not self.readable and self.rcv_buf:
            self.readable = True
            self.stack._readable.append(self)
        if fin:
            self._fin_received(now)
        elif filled:
            self._send_ack_now()
        else:
            self.ack_pending = True
            self._mark()

    def _fin_received(self, now: float) -> None:
        if self.peer_fin:
            return
        self.peer_fin = True
        self.rcv_nxt += 1
        stack = self.stack
        if self.readable:
            self.readable = False
            stack._events.append(Readable(self.id))
        stack._events.append(PeerFinished(self.id))
        if self.state == FIN_WAIT_1 and self.fin_seq is not None and self.snd_una > self.fin_seq:
            # (no test reaches this: `_check_ack` takes FIN_ACKED before the text is read)
            self._go(FIN_ACKED)  # both FINs acknowledged: FIN-WAIT-2 -> TIME-WAIT below
        if self.state == FIN_WAIT_2:
            self._enter_time_wait(now, FIN_IN)
        else:
            self._go(FIN_IN)
        self._send_ack_now()

    def _input_syn_sent(self, seqw: int, ackw: int, flags: int, wnd: int, opts: Options, pkt: bytes, off: int,
                        end: int, now: float) -> None:
        ack = 0
        if flags & ACK:
            ack = self.unwrap(ackw, self.iss)
            if ack <= self.iss or ack > self.snd_max:
                if not flags & RST:
                    self._send_rst_now(ack)
                return
        if flags & RST:
            if ack:
                self._fail("refused")
            return
        if not flags & SYN:
            return
        self.irs = seqw
        self.rcv_nxt = self.rcv_adv = seqw + 1
        self.apply_syn_options(opts)
        if ack:
            self.snd_wl1 = seqw - 1
            self._ack(ack, wnd, seqw, 0, 0, (), now)
            self._established()
            plen = end - off
            if plen > 0 or flags & FIN:
                self._text(seqw + 1, pkt[off:end], flags & FIN, now)
            self.ack_pending = True
            self._mark()
        else:
            self._go(SYN_IN)  # simultaneous open: SYN-ACK with our ISS
            self.snd_wnd = self.max_snd_wnd = wnd
            self.snd_nxt = self.iss
            self._mark()

    def apply_syn_options(self, opts: Options) -> None:
        """What the peer's SYN says: its MSS, window scale, SACK permission (RFC 7323, 2018)."""
        peer_mss = opts.mss if opts.mss is not None else (1220 if self.v6 else 536)
        self.mss = mss = max(min(self.mss, peer_mss), MIN_MSS)
        self.cc.set_mss(mss)
        if opts.wscale is not None:
            self.snd_ws = opts.wscale
            self.rcv_ws = self.cfg.wscale
            self.ws_ok = True
        if opts.sack_ok and self.cfg.sack:
            self.sack_ok = True
            self.sb = Scoreboard()
            self.rack = Rack(self.iss + 1)
