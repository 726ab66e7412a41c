"""Input generation for `harness.fuzz`: AFL-style havoc over seed messages, pure Python.

Each input starts from a seed (now and then a splice of two seeds, or two seeds back to
back), then 1, 2, 4 or 8 edits: bit flips, byte sets, small arithmetic, interesting
integers (1/2/4/8 bytes, either byte order) anywhere or at the seed's declared length
fields (0, the true value +-1, doubled, what is left of the input, the type's maximum,
a huge claim), random and repeated-byte insertions (up to 4 KiB), block duplicate /
delete / swap, truncation, overwrites from another seed, dictionary tokens. 3% of inputs
are plain random bytes and 2% the seeds themselves. Deterministic for a given
``random.Random``; every input is at most ``max_len`` bytes.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Field", "Mutator", "Seed"]

Field = tuple[int, int, str]
"""A length (or count) field in a seed: (offset, size in bytes, "big" | "little")."""


@dataclass(frozen=True)
class Seed:
    data: bytes
    fields: tuple[Field, ...] = ()


# --- mutation ------------------------------------------------------------------------

_INTERESTING_8 = (0, 1, 2, 0x7F, 0x80, 0xFE, 0xFF, 0x10, 0x20, 0x40)
_INTERESTING = (0, 1, 2, 3, 4, 7, 8, 16, 17, 18, 20, 31, 32, 33, 40, 48, 64, 96, 100, 127, 128, 255, 256,
                512, 1000, 1024, 1280, 1500, 4077, 4093, 4096, 4097, 0x7FFF, 0x8000, 0xFFFF, 0x10000,
                65535 + 1024, 65535 + 1025, 1 << 20, 4 << 20, (4 << 20) + 1, 10 << 20, (10 << 20) + 1,
                16 << 20, (16 << 20) + 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 1 << 32, 1 << 62, (1 << 63) - 1,
                1 << 63, (1 << 64) - 1)


class Mutator:
    """Draws inputs from seeds. Deterministic for a given ``rng``."""

    def __init__(self, seeds: Sequence[bytes | Seed], rng: random.Random, *, max_len: int,
                 tokens: Sequence[bytes] = ()) -> None:
        self.seeds = [s if isinstance(s, Seed) else Seed(bytes(s)) for s in seeds] or [Seed(b"")]
        self.rng = rng
        self.max_len = max_len
        self.tokens = list(tokens)
        self._ops = [self._flip_bit, self._set_byte, self._set_interesting_byte, self._arith_byte,
                     self._interesting_int, self._interesting_int, self._field_int, self._field_int,
                     self._insert_random, self._insert_repeat, self._duplicate_block, self._delete_block,
                     self._delete_block, self._truncate, self._overwrite_from_seed, self._swap_blocks]
        if self.tokens:
            self._ops += [self._insert_token, self._insert_token, self._overwrite_token]

    def next(self) -> bytes:
        rng = self.rng
        roll = rng.random()
        if roll < 0.02:
            return self.seeds[rng.randrange(len(self.seeds))].data[: self.max_len]
        if roll < 0.05:
            return rng.randbytes(rng.choice((rng.randrange(8), rng.randrange(64), rng.randrange(self.max_len + 1))))
        seed = self.seeds[rng.randrange(len(self.seeds))]
        buf = bytearray(seed.data)
        fields = seed.fields
        if roll < 0.15:  # splice: head of this seed, tail of another
            other = self.seeds[rng.randrange(len(self.seeds))].data
            buf = buf[: rng.randint(0, len(buf))] + other[rng.randint(0, len(other)):]
        elif roll < 0.22:  # concatenation: streams of several messages
            buf += self.seeds[rng.randrange(len(self.seeds))].data
        for _ in range(1 << rng.randrange(4)):
            self._ops[rng.randrange(len(self._ops))](buf, fields)
        if len(buf) > self.max_len:
            del buf[self.max_len:]
        return bytes(buf)

    # Each op edits buf in place.

    def _pos(self, buf: bytearray) -> int:
        return self.rng.randrange(len(buf)) if buf else 0

    def _flip_bit(self, buf, _f):
        if buf:
            buf[self._pos(buf)] ^= 1 << self.rng.randrange(8)

    def _set_byte(self, buf, _f):
        if buf:
            buf[self._pos(buf)] = self.rng.randrange(256)

    def _set_interesting_byte(self, buf, _f):
        if buf:
            buf[self._pos(buf)] = self.rng.choice(_INTERESTING_8)

    def _arith_byte(self, buf, _f):
        if buf:
            i = self._pos(buf)
            buf[i] = (buf[i] + self.rng.randint(-16, 16)) & 0xFF

    def _write_int(self, buf: bytearray, offset: int, size: int, order: str, value: int) -> None:
        if offset + size > len(buf):
            return
        buf[offset:offset + size] = (value % (1 << (8 * size))).to_bytes(size, order)

    def _interesting_int(self, buf, _f):
        rng = self.rng
        size = rng.choice((1, 2, 2, 4, 4, 8))
        if len(buf) < size:
            return
        value = rng.choice(_INTERESTING)
        if rng.random() < 0.3:
            value = -value - 1 if rng.random() < 0.5 else value + rng.randint(-2, 2)
        self._write_int(buf, rng.randrange(len(buf) - size + 1), size, rng.choice(("big", "little")), value)

    def _field_int(self, buf, fields):
        """An interesting value in a declared length field: 0, off by one from the truth,
        the type's maximum, or a huge claim."""
        rng = self.rng
        if not fields:
            return self._interesting_int(buf, fields)
        offset, size, order = rng.choice(fields)
        if offset + size > len(buf):
            return
        current = int.from_bytes(buf[offset:offset + size], order)
        rest = len(buf) - offset - size
        value = rng.choice((0, 1, current - 1, current + 1, current * 2, rest, rest + 1, rest - 1,
                            (1 << (8 * size)) - 1, 1 << (8 * size - 1), rng.choice(_INTERESTING),
                            rng.randrange(1 << (8 * size))))
        self._write_int(buf, offset, size, order, value)

    def _insert_random(self, buf, _f):
        i = self.rng.randint(0, len(buf))
        buf[i:i] = self.rng.randbytes(self.rng.randint(1, 16))

    def _insert_repeat(self, buf, _f):
        rng = self.rng
        i = rng.randint(0, len(buf))
        n = rng.choice((rng.randint(1, 32), rng.randint(1, 4096)))
        byte = rng.choice((0, 0xFF, 0x41, 0x20, rng.randrange(256), buf[i - 1] if i else 0))
        buf[i:i] = bytes([byte]) * n

    def _block(self, buf: bytearray) -> tuple[int, int]:
        rng = self.rng
        start = rng.randrange(len(buf))
        n = rng.choice((1, 2, 4, rng.randint(1, 32), rng.randint(1, len(buf) - start)))
        return start, min(start + n, len(buf))

    def _duplicate_block(self, buf, _f):
        if buf:
            a, b = self._block(buf)
            i = self.rng.randint(0, len(buf))
            buf[i:i] = buf[a:b]

    def _delete_block(self, buf, _f):
        if buf:
            a, b = self._block(buf)
            del buf[a:b]

    def _truncate(self, buf, _f):
        if buf:
            del buf[self.rng.randrange(len(buf)):]

    def _overwrite_from_seed(self, buf, _f):
        other = self.seeds[self.rng.randrange(len(self.seeds))].data
        if buf and other:
            a, b = self._block(bytearray(other))
            i = self._pos(buf)
            buf[i:i + (b - a)] = other[a:b]

    def _swap_blocks(self, buf, _f):
        if len(buf) >= 4:
            rng = self.rng
            a, b, c, d = sorted(rng.sample(range(len(buf) + 1), 4))
            buf[a:d] = buf[c:d] + buf[b:c] + buf[a:b]

    def _insert_token(self, buf, _f):
        i = self.rng.randint(0, len(buf))
        buf[i:i] = self.rng.choice(self.tokens)

    def _overwrite_token(self, buf, _f):
        if buf:
            token = self.rng.choice(self.tokens)
            i = self._pos(buf)
            buf[i:i + len(token)] = token
