"""The out-of-order queue of one connection's receive side, and the SACK blocks it implies.

Segments that arrive above RCV.NXT (RFC 9293 3.10.7.4, "segment text") wait here until
the gap below them is filled. Sequence numbers are extended (unwrapped) integers, see
`connection`. Stored pieces never overlap: a new segment keeps only the bytes no stored
piece has (the first copy wins, as in Linux). ``ranges`` is the union of the stored
pieces, merged, which is what SACK reports (RFC 2018 section 4: the first block holds
the segment that arrived last; the others follow highest first).

Bounds: the caller only stores bytes inside the window it advertised, and the window
never exceeds the free space of the receive buffer, so this queue plus the in-order
buffer stay within the connection's receive buffer size. At most `MAX_PIECES` pieces are
kept (a peer sending tiny segments with gaps would otherwise make every insert slow): a
segment that would need more is not stored (the peer retransmits it).
"""

from __future__ import annotations

from bisect import bisect_right

__all__ = ["MAX_PIECES", "Reassembly"]

MAX_PIECES = 4096


class Reassembly:
    """Out-of-order pieces of one connection; owned by its `Connection`."""

    __slots__ = ("chunks", "fin", "latest", "nbytes", "ranges", "starts")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.chunks: list[bytes] = []
        self.ranges: list[list[int]] = []
        """Merged [start, end) ranges of stored bytes, sorted."""
        self.nbytes = 0
        self.fin: int | None = None
        """Sequence number of a FIN that arrived out of order."""
        self.latest = 0
        """Start of the most recently stored segment (for the first SACK block)."""

    def __bool__(self) -> bool:
        return bool(self.starts) or self.fin is not None

    def add(self, seq: int, data: bytes) -> int:
        """Store the bytes of ``data`` (starting at ``seq``) not stored yet; returns how many."""
        end = seq + len(data)
        starts, chunks = self.starts, self.chunks
        if len(starts) >= MAX_PIECES:
            return 0
        i = bisect_right(starts, seq) - 1
        cur = seq
        if i >= 0:
            prev_end = starts[i] + len(chunks[i])
            cur = max(cur, prev_end)
        j = i + 1
        added = 0
        while cur < end:
            if j < len(starts) and starts[j] < end:
                nxt = starts[j]
                if nxt > cur:
                    starts.insert(j, cur)
                    chunks.insert(j, data[cur - seq:nxt - seq])
                    added += nxt - cur
                    j += 1
                cur = max(cur, starts[j] + len(chunks[j]))
                j += 1
            else:
                starts.insert(j, cur)
                chunks.insert(j, data[cur - seq:])
                added += end - cur
                cur = end
        if added:
            self.nbytes += added
            self.latest = seq
            self._merge(seq, end)
        return added

    def _merge(self, start: int, end: int) -> None:
        ranges = self.ranges
        i = bisect_right(ranges, start, key=_start)
        # merge with the range before when it touches
        if i > 0 and ranges[i - 1][1] >= start:
            i -= 1
            start = ranges[i][0]
            end = max(end, ranges[i][1])
            del ranges[i]
        while i < len(ranges) and ranges[i][0] <= end:
            end = max(end, ranges[i][1])
            del ranges[i]
        ranges.insert(i, [start, end])

    def pop_ready(self, rcv_nxt: int) -> list[bytes]:
        """Pieces that are now in order at ``rcv_nxt``, trimmed, in order; drops stale ones."""
        starts, chunks = self.starts, self.chunks
        out: list[bytes] = []
        k = 0
        n = len(starts)
        while k < n and starts[k] <= rcv_nxt:
            s, c = starts[k], chunks[k]
            self.nbytes -= len(c)
            e = s + len(c)
            if e > rcv_nxt:
                out.append(c[rcv_nxt - s:] if s < rcv_nxt else c)
                rcv_nxt = e
            k += 1
        if k:
            del starts[:k]
            del chunks[:k]
        ranges = self.ranges
        while ranges and ranges[0][1] <= rcv_nxt:
            del ranges[0]
        if ranges and ranges[0][0] < rcv_nxt:
            ranges[0][0] = rcv_nxt
        return out

    def sack_blocks(self, limit: int = 4) -> list[tuple[int, int]]:
        """Up to ``limit`` blocks: the one holding the latest segment first, then highest first."""
        ranges = self.ranges
        if not ranges:
            return []
        i = bisect_right(ranges, self.latest, key=_start) - 1
        first = ranges[i] if 0 <= i < len(ranges) and ranges[i][0] <= self.latest < ranges[i][1] else None
        out = [(first[0], first[1])] if first is not None else []
        for r in reversed(ranges):
            if len(out) >= limit:
                break
            if r is not first:
                out.append((r[0], r[1]))
        return out


def _start(r: list[int]) -> int:
    return r[0]
