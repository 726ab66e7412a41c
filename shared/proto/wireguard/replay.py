"""The anti-replay window of one receiving key (RFC 6479; wireguard-go ``replay/replay.go``).

A ring of ``RING_BLOCKS`` 64-bit blocks; bit ``c % 64`` of block ``(c // 64) % RING_BLOCKS``
records whether counter ``c`` was seen. The window covers the ``WINDOW`` counters below the
highest one accepted; anything older is refused, as is anything seen twice (so the copies
that "send on every path" produces are dropped here). Moving forward clears only the
blocks passed over, so an in-order stream costs O(1) per packet.

Check only after the packet authenticated: a forged counter must not move the window.
Owned by its Keypair.
"""

from __future__ import annotations

REJECT_AFTER_MESSAGES = (1 << 64) - (1 << 13) - 1
_BLOCK_BITS_LOG = 6
_BLOCK_BITS = 1 << _BLOCK_BITS_LOG
RING_BLOCKS = 1 << 7
WINDOW = (RING_BLOCKS - 1) * _BLOCK_BITS  # 8128 counters
_BLOCK_MASK = RING_BLOCKS - 1
_BIT_MASK = _BLOCK_BITS - 1


class ReplayWindow:
    __slots__ = ("last", "ring")

    def __init__(self) -> None:
        self.last = 0
        self.ring = [0] * RING_BLOCKS

    def check(self, counter: int) -> bool:
        """Accept ``counter`` (and remember it), or refuse a replayed / too old one."""
        last = self.last
        block = counter >> _BLOCK_BITS_LOG
        if last < counter < REJECT_AFTER_MESSAGES and block == last >> _BLOCK_BITS_LOG:
            # an in-order stream's usual case: ahead of ``last`` in its block, whose bits
            # above ``last`` are all clear (a counter is only recorded when it moves ``last``
            # or lies below it)
            self.ring[block & _BLOCK_MASK] |= 1 << (counter & _BIT_MASK)
            self.last = counter
            return True
        if counter >= REJECT_AFTER_MESSAGES:
            return False
        ring = self.ring
        if counter > last:
            current = last >> _BLOCK_BITS_LOG
            diff = block - current
            if diff:
                diff = min(diff, RING_BLOCKS)
                for i in range(current + 1, current + diff + 1):
                    ring[i & _BLOCK_MASK] = 0
            self.last = counter
        elif last - counter > WINDOW:
            return False
        block &= _BLOCK_MASK
        bit = 1 << (counter & _BIT_MASK)
        old = ring[block]
        if old & bit:
            return False
        ring[block] = old | bit
        return True
