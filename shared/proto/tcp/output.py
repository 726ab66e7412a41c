"""Everything a connection transmits: `_Output`, a layer of `Connection` (see `tcb`).

Each packet is built in one go, IP header + TCP header (+ options) + data, with both
checksums computed arithmetically: the constant part of each (addresses, ports, protocol,
TTL) is summed once per connection (``hsum``, ``ip_base``) and only the per-segment words
and the data (`segment.data_sum`; for a run of new segments, one batched
`sunbeam.shared.proto.ip.wordsums.word_sums`) are added per segment. A run of at least
`bulk.BULK_MIN` full segments of new data over IPv4 is built at once, as arrays
(`bulk.build`, byte for byte what `_tx4_run` builds one by one). IPv4: no options, DF clear,
TTL 64, identification counting up per connection. IPv6: flow label 0, hop limit 64.

What `output` sends, in order (RFC 9293 3.10.7 and the recovery rules in `sender`):

1. SYN (SYN-SENT) or SYN-ACK (SYN-RECEIVED) with MSS, window scale and SACK-permitted
   (the latter two only on a SYN-ACK when the peer's SYN had them); the window in a SYN
   is never scaled (RFC 7323 2.2).
2. The first unacknowledged segment, when a fast retransmit, partial ACK or timeout asked
   for it (``rexmit_una``; `_retransmit_una`).
3. With SACK in recovery: lost retransmissions, then lost holes above HighRxt, while
   pipe < cwnd (RFC 6675 NextSeg; `_retransmit_lost`).
4. Data from SND.NXT within min(send window, cwnd) (+ 2 MSS of limited transmit), full
   segments only unless it is the last of the buffer or half the peer's largest window
   fits (sender SWS avoidance, RFC 9293 3.8.6.2.1; Nagle is off: a proxy forwards what it
   has at once). PSH on the segment that empties the buffer (`_send_new_data`).
5. Our FIN once all data is sent (it needs one byte of send window, not cwnd); then
   SND.NXT / SND.MAX and the retransmission, tail loss probe and persist timers
   (`_after_send`).
6. A pure ACK if one is owed and nothing above carried it, with SACK blocks while the
   out-of-order queue holds data. Split ACKs: when that ACK covers two or more segments
   we have not acknowledged, and our previous ACK is at least ``SPLIT_ACK_IDLE`` old, an
   ACK for all but the last of them goes out first (``Config.split_acks``; counted
   ``split_acks``). One ACK per batch (see `input`) then answers a whole flight when the
   sender's flight arrives as one burst -- a small window on a long path -- and when
   that one ACK is lost, a sender without tail loss probes (tailscaled's netstack: Reno,
   RACK off) waits for its RTO (200 ms, then cwnd 1). On the emulated link (20 ms each
   way + 0.5 % loss, 50 MB download, captured on our side) 14 of the sender's 16 stalls
   came right after one lone ACK of ours; tailscaled's receiver, which ACKs a burst in two
   or more, saw 11. The first ACK moves SND.UNA to the last segment, so the sender may
   send on and the next ACK covers the rest. Where ACKs are frequent (bulk transfers on
   fast paths: several per millisecond) no flight hangs on one ACK, and none is split.

Window (RFC 9293 3.8.6.2.2, receiver SWS avoidance): the right edge moves only when it
can move by min(buffer / 2, MSS); RCV.ADV, the edge we accept data up to, never moves left.

Relayed (``rcv_wnd_max``: the peer's latest segment came over DERP): the window we
advertise is at most ``Config.relayed_window`` (36 kB: 29 full segments), even when that puts the
edge we advertise left of RCV.ADV (data up to RCV.ADV is still accepted: nothing in flight
is refused). A peer's DERP client queues at most 32 packets and drops the rest
(tailscaled's magicsock, ``bufferedDerpWritesBeforeDrop``); tailscaled's netstack sends
what cwnd and our window allow at once, and a retransmission it loses waits for its RTO,
doubled each time. A 24 MB download at 1 MB/s that moved from a direct path to DERP
(test_disco), measured on 2026-12-07 as seconds from the cut to the last byte: with our
4 MB window it stalled for minutes in 2 of 4 runs; capped at 128 kB 16.0, 15.9, 15.9,
49.6; at 64 kB 55.8, 15.9, 24.4, 15.3; at 36 kB 15.8, 15.7, 14.4, 15.0. The price: one
connection carries at most 36 kB per round trip over a relay (~0.7 MB/s at 50 ms).
"""

from __future__ import annotations

import struct

from ..ip.wordsums import numpy_if_loaded, word_sums
from .bulk import BULK_MIN, Outgoing
from .bulk import build as bulk_build
from .rack import Rack
from .segment import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    build_sack_option,
    build_syn_options,
    data_sum,
)
from .states import ESTABLISHED, M32, SYN_RCVD, SYN_SENT, TIME_WAIT
from .tcb import _Tcb

__all__: list[str] = []

SPLIT_ACK_IDLE = 0.001
"""Seconds since our previous ACK before an ACK covering two or more segments is split."""

H4 = struct.Struct("!BBHHHBBH4s4sHHIIBBHHH")
"""IPv4 header (20) + TCP header (20)."""
H6 = struct.Struct("!IHBB16s16sHHIIBBHHH")
"""IPv6 header (40) + TCP header (20)."""


class _Output(_Tcb):
    __slots__ = ()

    # --- building ------------------------------------------------------------------

    def _tx(self, out: Outgoing, seq: int, flags: int, payload: bytes | bytearray = b"", opts: bytes = b"", wndf: int = -1,
            psum: int = -1, ack: int = -1) -> None:
        """Append one segment with our current ACK (or ``ack``) and window (``psum``: the
        payload's word sum, when the caller computed a batch of them)."""
        seqw = seq & M32
        if flags & ACK:
            self.acked_to = ack = self.rcv_nxt if ack < 0 else ack
            ackw = ack & M32
        else:
            ackw = 0
        if wndf < 0:
            wndf = self._window_field()
        hl = 20 + len(opts)
        tlen = hl + len(payload)
        s = (self.hsum + tlen + (seqw >> 16) + (seqw & 0xFFFF) + (ackw >> 16) + (ackw & 0xFFFF)
             + ((hl << 10) | flags) + wndf)
        if payload:
            s += data_sum(payload) if psum < 0 else psum
        if opts:
            s += data_sum(opts)
        csum = -s % 0xFFFF
        if self.v6:
            pkt = H6.pack(0x60000000, tlen, 6, self.cfg.ttl, self.laddr, self.raddr, self.lport, self.rport,
                          seqw, ackw, hl << 2, flags, wndf, csum, 0)
        else:
            self.ident = ident = (self.ident + 1) & 0xFFFF
            total = tlen + 20
            pkt = H4.pack(0x45, 0, total, ident, 0, self.cfg.ttl, 6, -(self.ip_base + total + ident) % 0xFFFF,
                          self.laddr, self.raddr, self.lport, self.rport, seqw, ackw, hl << 2, flags, wndf, csum, 0)
        if opts:
            pkt += opts
        out.append(pkt + payload if payload else pkt)

    def _tx4_run(self, out: Outgoing, fresh: list[tuple[int, int, bytes]], sums: list[int],
                 wndf: int) -> None:
        """`_tx` for each of ``fresh`` (seq, flags with ACK, payload) over IPv4 without
        options, the words every segment shares summed once."""
        ackw = self.rcv_nxt & M32
        shared = self._run_sum(ackw, wndf)
        ip_base, ident, ttl = self.ip_base, self.ident, self.cfg.ttl
        laddr, raddr, lport, rport = self.laddr, self.raddr, self.lport, self.rport
        pack, append = H4.pack, out.append
        for (seq, flags, payload), psum in zip(fresh, sums, strict=True):
            seqw = seq & M32
            n = len(payload)
            ident = (ident + 1) & 0xFFFF
            total = n + 40
            append(pack(0x45, 0, total, ident, 0, ttl, 6, -(ip_base + total + ident) % 0xFFFF, laddr, raddr, lport,
                        rport, seqw, ackw, 80, flags, wndf,
                        -(shared + n + (seqw >> 16) + (seqw & 0xFFFF) + flags + psum) % 0xFFFF, 0) + payload)
        self.ident = ident

    def _run_sum(self, ackw: int, wndf: int) -> int:
        """The TCP checksum words every segment of a run of IPv4 data segments without
        options shares: pseudo-header but the length, ACK number, data offset, window."""
        return self.hsum + 20 + (ackw >> 16) + (ackw & 0xFFFF) + (20 << 10) + wndf

    def _window_field(self) -> int:
        """The window to advertise now (scaled), at most ``rcv_wnd_max``; moves RCV.ADV,
        never to the left (relayed: the edge advertised may lie left of RCV.ADV)."""
        rcv_nxt = self.rcv_nxt
        cap = self.cfg.recv_buffer
        most = self.rcv_wnd_max
        free = min(cap - len(self.rcv_buf), most)
        adv = self.rcv_adv
        ws = self.rcv_ws
        if rcv_nxt + free - adv >= min(cap >> 1, self.mss):
            wndf = free >> ws
            wndf = min(wndf, 0xFFFF)
            self.rcv_adv = rcv_nxt + (wndf << ws)
            return wndf
        return min(adv - rcv_nxt, most) >> ws

    def _window_update_due(self) -> bool:
        """After a read: is the window now worth announcing (it at least doubled)?"""
        if self.state < ESTABLISHED or self.peer_fin:
            return False
        most = self.rcv_wnd_max
        cur = min(self.rcv_adv - self.rcv_nxt, most)
        free = min(self.cfg.recv_buffer - len(self.rcv_buf), most)
        return free - cur >= min(self.cfg.recv_buffer >> 1, self.mss) and free >= 2 * cur

    def _ack_options(self) -> bytes:
        """SACK blocks while data waits out of order; a pending D-SACK block first (RFC 2883)."""
        ooo = self.ooo
        dsack = self.dsack
        if dsack is not None:
            self.dsack = None
            if self.sack_ok:
                blocks = ooo.sack_blocks(3) if ooo is not None else []
                return build_sack_option([dsack, *blocks])
        if ooo is not None and self.sack_ok and ooo.ranges:
            return build_sack_option(ooo.sack_blocks())
        return b""

    def _send_ack_now(self) -> None:
        """An ACK right away (out-of-order data, a gap filled, an unacceptable segment)."""
        self.ack_pending = False
        self.unacked_segs = 0
        self._tx(self.stack._out, self.snd_max, ACK, b"", self._ack_options())

    def _send_rst_now(self, seq: int) -> None:
        self._tx(self.stack._out, seq, RST, b"", b"", 0)
        self.stack.counters["rst_sent"] += 1

    def _send_probe(self) -> None:
        """Zero-window / keepalive probe: SEQ = SND.UNA - 1, no data; the peer answers with an ACK."""
        self._tx(self.stack._out, self.snd_una - 1, ACK)

    def _syn_segment(self, out: Outgoing, now: float) -> None:
        cfg = self.cfg
        ack = self.state == SYN_RCVD
        if ack:  # answer with what the peer offered
            opts = build_syn_options(cfg.mss6 if self.v6 else cfg.mss4, self.rcv_ws if self.ws_ok else None,
                                     self.sack_ok)
        else:
            opts = build_syn_options(cfg.mss6 if self.v6 else cfg.mss4, cfg.wscale, cfg.sack)
        wndf = min(cfg.recv_buffer - len(self.rcv_buf), 0xFFFF)
        self.rcv_adv = self.rcv_nxt + wndf
        self._tx(out, self.iss, SYN | ACK if ack else SYN, b"", opts, wndf)
        self.snd_nxt = self.iss + 1
        if self.snd_max < self.snd_nxt:
            self.snd_max = self.snd_nxt
            self.rtt_seq, self.rtt_time = self.snd_nxt, now
        else:
            self.rtt_seq = 0
        if not self.rtx_at:
            self.rtx_at = now + self.rtt.rto
            self._arm(self.rtx_at)

    # --- the output routine ----------------------------------------------------------

    def output(self, now: float, out: Outgoing) -> None:
        """Append whatever this connection may send now to ``out``."""
        self.dirty = False
        state = self.state
        if state < ESTABLISHED:
            if (state == SYN_SENT or state == SYN_RCVD) and self.snd_nxt == self.iss:
                self._syn_segment(out, now)
            return
        if state >= TIME_WAIT:
            if self.ack_pending and state == TIME_WAIT:
                self._send_ack_now()
            return
        if self._output_data(now, out):  # every segment it sent carries ACK RCV.NXT
            self.acked_to = self.rcv_nxt
            self.acked_at = now
        elif self.ack_pending:
            self.ack_pending = False
            self.unacked_segs = 0
            last = self.last_seg
            if last > self.acked_to and now - self.acked_at >= SPLIT_ACK_IDLE and self.cfg.split_acks:
                self._split_ack(out, last)
            self.acked_at = now
            self._tx(out, self.snd_max, ACK, b"", self._ack_options())

    def _split_ack(self, out: Outgoing, last: int) -> None:
        """An ACK for everything before the last segment received, ahead of the full ACK
        (``SPLIT_ACK_IDLE``). Its window reaches the right edge we advertised (RCV.ADV), to
        the window shift's unit below it, as every ACK's does while the edge stays put."""
        wndf = min(self.rcv_adv - last, self.rcv_wnd_max) >> self.rcv_ws
        if wndf > 0xFFFF:  # cannot happen: RCV.ADV is at most a full window past an ACK we sent
            return
        self._tx(out, self.snd_max, ACK, b"", b"", wndf, ack=last)
        self.stack.counters["split_acks"] += 1

    def _output_data(self, now: float, out: Outgoing) -> int:
        """Retransmissions, new data and FIN, in that order (steps 2-5 of the module
        docstring); returns the number of segments sent."""
        una = self.snd_una
        nxt = self.snd_nxt
        cwnd = self.cc.cwnd
        sent = 0
        if self.rexmit_una:
            self.rexmit_una = False
            n = self._retransmit_una(out, now)
            if n:
                sent = 1
                nxt = max(nxt, una + n)
        rack = self.rack
        if self.recovery and rack is not None:
            k, pipe = self._retransmit_lost(out, now, rack, cwnd)
            sent += k
            cwnd_edge = nxt + max(cwnd - pipe, 0)
        else:
            dupacks = self.dupacks
            if 0 < dupacks < 3 and not self.recovery:
                cwnd += dupacks * self.mss  # limited transmit (RFC 3042)
            cwnd_edge = una + cwnd
        wnd_edge = una + self.snd_wnd
        snd_max = self.snd_max
        nxt, k, new = self._send_new_data(out, now, nxt, min(cwnd_edge, wnd_edge), snd_max)
        sent += k
        fin_seq = self.fin_seq
        if fin_seq is not None and nxt == fin_seq and fin_seq < wnd_edge:  # one byte of window, not cwnd
            self._tx(out, fin_seq, ACK | FIN)
            sent += 1
            if nxt < snd_max:
                self._rexmitted(nxt, nxt + 1, now)
            nxt += 1
        self._after_send(now, nxt, cwnd, sent, new)
        return sent

    def _retransmit_una(self, out: Outgoing, now: float) -> int:
        """Step 2: the first unacknowledged segment (or our FIN), which a fast retransmit,
        a partial ACK or a timeout asked for; returns the sequence space resent (0: none)."""
        una = self.snd_una
        base = self.sbuf_seq
        n = min(self.mss, base + len(self.sbuf) - una)
        if n > 0:
            self._tx(out, una, ACK, self.sbuf[una - base:una - base + n])
        elif self.fin_seq is not None and una == self.fin_seq:
            self._tx(out, una, ACK | FIN)
            n = 1
        else:
            return 0
        self._rexmitted(una, una + n, now)
        return n

    def _retransmit_lost(self, out: Outgoing, now: float, rack: Rack, cwnd: int) -> tuple[int, int]:
        """Step 3, SACK recovery (RFC 6675 NextSeg, with RACK's losses): lost
        retransmissions first, then the lost holes above HighRxt, while pipe < cwnd.
        Returns (segments sent, pipe)."""
        sb = self.sb
        assert sb is not None  # made with rack
        mss = self.mss
        una = self.snd_una
        base = self.sbuf_seq
        sbuf = self.sbuf
        data_end = base + len(sbuf)
        lost = rack.boundary
        frm = max(self.high_rxt, una)
        pipe = (self.snd_max - una) - sb.sacked - sb.hole_bytes(frm, lost) - rack.lost_rtx_bytes(una)
        sent = 0
        for r in [r for r in rack.rtx if r.lost]:  # lost retransmissions first
            if cwnd - pipe < mss:
                break
            s = r.start = max(r.start, una)
            n = min(mss, r.end - s, data_end - s)
            if n <= 0:
                continue
            self._tx(out, s, ACK, sbuf[s - base:s - base + n])
            sent += 1
            self._rexmitted(s, s + n, now)
            pipe += n
        while cwnd - pipe >= mss:
            hole = sb.next_hole(frm, lost)
            if hole is None:
                break
            s = hole[0]
            n = min(mss, hole[1] - s, data_end - s)
            if n <= 0:
                break
            self._tx(out, s, ACK, sbuf[s - base:s - base + n])
            sent += 1
            frm = s + n
            self._rexmitted(s, frm, now)
            pipe += n
        return sent, pipe

    def _send_new_data(self, out: Outgoing, now: float, nxt: int, edge: int, snd_max: int) -> tuple[int, int, int]:
        """Step 4: data from ``nxt`` up to ``edge`` (min of the cwnd and send window edges);
        below SND.MAX that is a go-back-N resend. Full segments only, unless it is the last
        of the buffer or half the peer's largest window fits (sender SWS avoidance, RFC 9293
        3.8.6.2.1; no Nagle), or the persist timer forces a small window to be filled.
        Returns (the new SND.NXT, segments sent, segments of new data)."""
        mss = self.mss
        base = self.sbuf_seq
        sbuf = self.sbuf
        data_end = base + len(sbuf)
        rack = self.rack
        force = self.force
        wndf = -1  # computed at the first segment: it moves RCV.ADV
        bulk = 0  # full segments of new data built at once, first
        if nxt >= snd_max and not (mss & 3 or self.v6):
            full = (min(edge, data_end) - nxt) // mss
            if full >= BULK_MIN and numpy_if_loaded() is not None:
                wndf = self._window_field()
                bulk = self._send_bulk(out, now, nxt, full, data_end, wndf)
                nxt += bulk * mss
        new = bulk
        fresh: list[tuple[int, int, bytes]] = []
        while nxt < data_end:
            n = data_end - nxt
            n = min(n, mss)
            room = edge - nxt
            if room < n:
                if room <= 0 or (room < mss and room < self.max_snd_wnd >> 1 and not force):
                    break
                n = room
                force = False
            off = nxt - base
            end = nxt + n
            if wndf < 0:
                wndf = self._window_field()
            fresh.append((nxt, ACK | PSH if end == data_end else ACK, sbuf.get(off, n)))
            if nxt < snd_max:
                self._rexmitted(nxt, end, now)
            else:
                new += 1
                if rack is not None:
                    rack.ends.append(end)
                    rack.times.append(now)
                    rack.tx_high = end
                if not self.rtt_seq:
                    self.rtt_seq, self.rtt_time = end, now
            nxt = end
        if fresh:  # built together: one batched checksum pass over the payloads
            # (it sums a short run one by one itself)
            sums = word_sums([f[2] for f in fresh])
            if self.v6:
                tx = self._tx
                for (seq, flags, payload), psum in zip(fresh, sums, strict=True):
                    tx(out, seq, flags, payload, b"", wndf, psum)
            else:
                self._tx4_run(out, fresh, sums, wndf)
        self.force = False
        return nxt, bulk + len(fresh), new

    def _send_bulk(self, out: Outgoing, now: float, nxt: int, count: int, data_end: int, wndf: int) -> int:
        """`count` full segments of new data from ``nxt`` over IPv4, built at once
        (`bulk.build`: what `_tx4_run` builds), with their RACK and RTT bookkeeping; returns ``count``."""
        mss = self.mss
        end = nxt + count * mss
        ackw = self.rcv_nxt & M32
        header = H4.pack(0x45, 0, 40 + mss, 0, 0, self.cfg.ttl, 6, 0, self.laddr, self.raddr, self.lport, self.rport,
                         0, ackw, 80, ACK, wndf, 0, 0)
        shared = self._run_sum(ackw, wndf)
        out.append(bulk_build(header, self.sbuf.view(nxt - self.sbuf_seq, count * mss), mss, nxt & M32, self.ident,
                              self.ip_base, shared, ACK | PSH if end == data_end else ACK))
        self.ident = (self.ident + count) & 0xFFFF
        self.stack.counters["packets_out"] += count - 1  # `poll` counts the burst as one
        rack = self.rack
        if rack is not None:
            rack.ends.extend(range(nxt + mss, end + 1, mss))
            rack.times.extend([now] * count)
            rack.tx_high = end
        if not self.rtt_seq:
            self.rtt_seq, self.rtt_time = nxt + mss, now
        return count

    def _after_send(self, now: float, nxt: int, cwnd: int, sent: int, new: int) -> None:
        """SND.NXT and SND.MAX; whether cwnd limits the flight (it grows only then); the
        retransmission timer (RFC 6298 5.1), the tail loss probe after new data, and the
        persist timer when data or FIN wait and nothing is in flight."""
        self.snd_nxt = nxt
        snd_max = self.snd_max
        if nxt > snd_max:
            self.snd_max = snd_max = nxt
        mss = self.mss
        flight = snd_max - self.snd_una
        self.cwnd_limited = (flight << 1 >= cwnd) if cwnd < self.cc.ssthresh else flight + mss >= cwnd
        if sent:
            self.ack_pending = False
        if flight:
            if not self.rtx_at:
                self.rtx_at = now + self.rtt.rto
                self._arm(self.rtx_at)
            if new and self.rack is not None and not self.tlp_at:
                self._arm_tlp(now)
        elif ((nxt < self.sbuf_seq + len(self.sbuf) or (self.fin_seq is not None and nxt <= self.fin_seq))
              and not self.persist_at):
            self.persist_at = now + self.rtt.rto
            self._arm(self.persist_at)

    def _arm_tlp(self, now: float) -> None:
        """Arm the tail loss probe (see `probes`, where it expires), when new data went out or an ACK brought news."""
        srtt = self.rtt.srtt
        if srtt is None or self.tlp_out:
            return
        pto = max(2 * srtt, 0.01)
        if self.snd_max - self.snd_una <= self.mss:
            pto += 0.2
        # No later than the RTO (RFC 8985 7.2, Linux tcp_schedule_loss_probe): at RTTs near
        # the 200 ms RTO floor, 2 x SRTT is past the RTO, and a probe that was never armed
        # left every tail loss to a timeout (cwnd 1, go-back-N): 36-42 RTOs per 20 MB at
        # 50 ms each way + 1 % loss, 0 probes.
        if not self.rtx_at:  # nothing in flight that a timeout guards
            self.tlp_at = 0.0
            return
        self.tlp_at = t = min(now + pto, self.rtx_at)
        self._arm(t)

    def _rexmitted(self, start: int, end: int, now: float) -> None:
        """Bookkeeping for a retransmission of [start, end)."""
        self.retransmits += 1
        if self.undo_retrans >= 0:
            self.undo_retrans += 1
        self.stack.counters["retransmit"] += 1
        if self.rtt_seq:
            self.rtt_seq = 0  # Karn: no sample from this flight's timed segment
        self.high_rxt = max(self.high_rxt, end)
        if self.rack is not None:
            self.rack.sent(start, end, now)
