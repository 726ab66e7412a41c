"""The sender's SACK scoreboard (RFC 2018, loss recovery after RFC 6675), sans-IO.

What the peer told us it holds above SND.UNA, as merged [start, end) blocks of extended
sequence numbers. From it the sender derives (RFC 6675 section 4):

- ``lost_boundary``: IsLost(S) holds for every unSACKed S below it, i.e. more than
  (DupThresh - 1) * SMSS bytes, or DupThresh separate blocks, were SACKed above S;
- ``next_hole``: NextSeg rule 1, the first lost, unSACKed range above HighRxt;
- ``hole_bytes``: used for the pipe, ``pipe = (SND.MAX - SND.UNA) - SACKed - lost
  bytes not yet retransmitted`` (the RFC's SetPipe for a sender that retransmits holes in
  order, never beyond the lost boundary).

Blocks below SND.UNA (D-SACK, RFC 2883) or above SND.MAX are ignored, and so is a new
block that would make more than `MAX_BLOCKS` (a peer SACKing single bytes would otherwise
make every ACK slow). Receivers may renege (RFC 2018 section 8), so the scoreboard is
advice: it is cleared on a retransmission timeout and data is freed only by the
cumulative ACK.
"""

from __future__ import annotations

from bisect import bisect_right

__all__ = ["Scoreboard"]

DUPTHRESH = 3
MAX_BLOCKS = 512


def _start(b: list[int]) -> int:
    return b[0]


class Scoreboard:
    """SACKed blocks above SND.UNA of one connection; owned by its `Connection`."""

    __slots__ = ("blocks", "sacked")

    def __init__(self) -> None:
        self.blocks: list[list[int]] = []
        self.sacked = 0

    def __bool__(self) -> bool:
        return bool(self.blocks)

    def clear(self) -> None:
        self.blocks.clear()
        self.sacked = 0

    def high(self) -> int:
        """The highest SACKed sequence number + 1 (0 when empty)."""
        return self.blocks[-1][1] if self.blocks else 0

    def add(self, start: int, end: int, una: int, snd_max: int) -> bool:
        """Record one SACK block; returns whether it told us something new."""
        start = max(start, una)
        end = min(end, snd_max)
        if end <= start:
            return False
        blocks = self.blocks
        i = bisect_right(blocks, start, key=_start)
        if i > 0 and blocks[i - 1][1] >= end:
            return False  # already known
        if len(blocks) >= MAX_BLOCKS:
            return False
        if i > 0 and blocks[i - 1][1] >= start:
            i -= 1
            start = blocks[i][0]
            self.sacked -= blocks[i][1] - start
            end = max(end, blocks[i][1])
            del blocks[i]
        while i < len(blocks) and blocks[i][0] <= end:
            end = max(end, blocks[i][1])
            self.sacked -= blocks[i][1] - blocks[i][0]
            del blocks[i]
        blocks.insert(i, [start, end])
        self.sacked += end - start
        return True

    def ack(self, una: int) -> None:
        """The cumulative ACK moved to ``una``: forget what lies below it."""
        blocks = self.blocks
        while blocks and blocks[0][1] <= una:
            self.sacked -= blocks[0][1] - blocks[0][0]
            del blocks[0]
        if blocks and blocks[0][0] < una:
            self.sacked -= una - blocks[0][0]
            blocks[0][0] = una

    def lost_boundary(self, mss: int) -> int:
        """Every unSACKed byte below the returned sequence number counts as lost (0: none)."""
        acc = 0
        limit = (DUPTHRESH - 1) * mss
        for k, (s, e) in enumerate(reversed(self.blocks)):
            acc += e - s
            if acc > limit or k + 1 >= DUPTHRESH:
                return s
        return 0

    def next_hole(self, frm: int, limit: int) -> tuple[int, int] | None:
        """The first unSACKed range [s, e) with frm <= s < limit (e <= limit)."""
        if frm >= limit:
            return None
        blocks = self.blocks
        i = bisect_right(blocks, frm, key=_start)
        if i > 0 and blocks[i - 1][1] > frm:
            frm = blocks[i - 1][1]
        if frm >= limit:
            return None
        end = blocks[i][0] if i < len(blocks) else limit
        return (frm, min(end, limit))

    def hole_bytes(self, frm: int, limit: int) -> int:
        """UnSACKed bytes in [frm, limit)."""
        if frm >= limit:
            return 0
        covered = 0
        for s, e in self.blocks:
            if e <= frm:
                continue
            if s >= limit:
                break
            covered += min(e, limit) - max(s, frm)
        return (limit - frm) - covered
