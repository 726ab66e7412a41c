"""Time-based loss detection with SACK: RACK (RFC 8985 section 6), sans-IO.

A segment is lost when a segment *sent after it* has been delivered (cumulatively ACKed
or SACKed) and more than RACK.rtt + reo_wnd has passed since it was sent. That finds
losses in small or application-limited flights (no three duplicate ACKs needed), finds
lost retransmissions, and tolerates reordering shorter than the reordering window.

Transmission log, without an object per segment:

- ``ends`` / ``times``: end sequence number and send time of each transmission that
  extended the highest sequence sent (new data, or go-back-N resends after a timeout),
  in sequence order, which is also time order; entries below SND.UNA are skipped by
  moving ``head`` (compacted now and then).
- ``rtx``: retransmissions (of holes, or of the first segment), `Retransmission`s in
  time order; a segment retransmitted again moves to the end.

From the log ``detect`` derives ``boundary``: every unSACKed byte below it that has not
been retransmitted since (that is, above the sender's HighRxt) is lost; and ``lost``
flags on retransmissions. Reordering window (6.2 step 4): 0 while no reordering has been
seen and either in recovery or DupThresh segments are SACKed (the classic rule); else
min(mult * min_rtt / 4, SRTT), where mult grows by one per D-SACK and falls back to 1
after 16 recoveries without one. Reordering is seen when a never-retransmitted segment is
delivered below the highest one delivered so far, or a D-SACK arrives.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

__all__ = ["Rack", "Retransmission"]

INF = float("inf")
NONE = -INF


class Retransmission:
    """One retransmission of [start, end) at ``time``; ``lost`` once RACK says so."""

    __slots__ = ("end", "lost", "start", "time")

    def __init__(self, start: int, end: int, time: float) -> None:
        self.start = start
        """Moves up when the cumulative ACK covers the front."""
        self.end = end
        self.time = time
        self.lost = False

    def __repr__(self) -> str:
        return f"Retransmission({self.start}, {self.end}, {self.time}, lost={self.lost})"


class Rack:
    """RACK state and the transmission log of one connection; owned by its `Connection`."""

    __slots__ = (
        "boundary",
        "end_seq",
        "ends",
        "episodes",
        "fack",
        "head",
        "min_rtt",
        "reo_mult",
        "reord",
        "rtt",
        "rtx",
        "times",
        "tx_high",
        "xmit_ts",
    )

    def __init__(self, start: int) -> None:
        self.ends: list[int] = []
        self.times: list[float] = []
        self.head = 0
        self.tx_high = start
        self.rtx: list[Retransmission] = []
        self.xmit_ts = NONE
        """Send time of the most recently sent segment known delivered (NONE: none yet)."""
        self.end_seq = 0
        self.rtt = 0.0
        self.min_rtt = INF
        self.fack = 0
        """Highest end sequence number delivered (never-retransmitted segments)."""
        self.reord = False
        self.boundary = 0
        self.reo_mult = 1
        self.episodes = 0
        """Recovery episodes since the last D-SACK (after 16 the window shrinks back)."""

    def reset(self, una: int) -> None:
        """After a retransmission timeout: everything outstanding is resent from ``una``."""
        self.ends.clear()
        self.times.clear()
        self.head = 0
        self.tx_high = una
        self.rtx.clear()
        self.xmit_ts = NONE
        self.boundary = 0

    def sent(self, start: int, end: int, now: float) -> None:
        """Log a transmission of [start, end) (the fast path inlines the first branch)."""
        if start >= self.tx_high:
            self.ends.append(end)
            self.times.append(now)
            self.tx_high = end
            return
        rtx = self.rtx
        for i, r in enumerate(rtx):
            if r.start == start:
                del rtx[i]
                break
        rtx.append(Retransmission(start, end, now))

    def _delivered(self, t: float, end: int, retransmitted: bool, now: float) -> None:
        rtt = now - t
        if retransmitted:
            if rtt < self.min_rtt:
                return  # probably the original was delivered: ambiguous (6.2 step 2)
        else:
            self.min_rtt = min(self.min_rtt, rtt)
            if end < self.fack:
                self.reord = True
            else:
                self.fack = end
        if t > self.xmit_ts or (t == self.xmit_ts and end > self.end_seq):
            self.xmit_ts, self.end_seq, self.rtt = t, end, rtt

    def acked(self, una: int, now: float) -> None:
        """The cumulative ACK moved to ``una``."""
        ends, head = self.ends, self.head
        if head < len(ends) and ends[head] <= una:
            i = bisect_right(ends, una, head)
            self._delivered(self.times[i - 1], ends[i - 1], False, now)
            if i > 4096 and i * 2 > len(ends):
                del ends[:i]
                del self.times[:i]
                i = 0
            self.head = i
        if self.rtx:
            keep = []
            for r in self.rtx:
                if r.end <= una:
                    self._delivered(r.time, r.end, True, now)
                else:
                    keep.append(r)
            self.rtx = keep

    def sacked(self, start: int, end: int, now: float) -> None:
        """[start, end) was newly SACKed."""
        ends, head = self.ends, self.head
        i = bisect_right(ends, end, head) - 1  # the last transmission ending inside the block
        if i >= head and ends[i] > start and (i == head or ends[i - 1] >= start):
            self._delivered(self.times[i], ends[i], False, now)
        if self.rtx:
            keep = []
            for r in self.rtx:
                if start <= r.start and r.end <= end:
                    self._delivered(r.time, r.end, True, now)
                else:
                    keep.append(r)
            self.rtx = keep

    def reo_wnd(self, recovering: bool, sacked_segments: int, srtt: float) -> float:
        if not self.reord and (recovering or sacked_segments >= 3):
            return 0.0
        return min(self.reo_mult * self.min_rtt / 4, srtt)

    def on_dsack(self) -> None:
        """Spurious retransmission seen: the reordering window grows (6.2 step 4)."""
        self.reord = True
        self.episodes = 0
        if self.reo_mult < 16:
            self.reo_mult += 1

    def new_episode(self) -> None:
        self.episodes += 1
        if self.episodes >= 16:
            self.episodes = 0
            self.reo_mult = 1

    def detect(self, now: float, reo_wnd: float) -> float:
        """Move ``boundary`` and flag lost retransmissions; returns when to look again (0: no need)."""
        xmit_ts = self.xmit_ts
        if xmit_ts == NONE:
            return 0.0
        wait = self.rtt + reo_wnd
        cutoff = now - wait  # sent at or before it: waited long enough
        times, ends, head = self.times, self.ends, self.head
        # transmissions sent before the RACK segment: earlier time, or same time and lower sequence
        j = bisect_left(times, xmit_ts, head)
        k = bisect_right(times, xmit_ts, j)
        if k > j:
            j = max(j, min(k, bisect_left(ends, self.end_seq, j, k)))
        m = min(j, bisect_right(times, cutoff, head, j))
        if m > head and ends[m - 1] > self.boundary:
            self.boundary = ends[m - 1]
        again = times[m] + wait if m < j else 0.0
        for r in self.rtx:
            t = r.time
            if t > xmit_ts or (t == xmit_ts and r.end >= self.end_seq):
                break
            if r.lost:
                continue
            if t <= cutoff:
                r.lost = True
            elif not again or t + wait < again:
                again = t + wait
        return max(again, now + 1e-6) if again else 0.0

    def lost_rtx_bytes(self, una: int) -> int:
        return sum(r.end - max(r.start, una) for r in self.rtx if r.lost and r.end > una)
