"""Internet-checksum word sums of a whole batch of packets at once (numpy), sans-IO.

``word_sums(packets)[i]`` is packet i read as big-endian 16-bit words (odd length: padded
with a zero byte), summed modulo 0xffff -- a value in 0..0xfffe congruent to the
one's-complement sum RFC 1071 checks. A receiver adds the pseudo-header sum and compares
with 0 (mod 0xffff); see `sunbeam.shared.proto.tcp.stack`.

How (one pass in C per group of equal-length packets, instead of a Python big-integer
conversion per packet, ~0.2 instead of ~1.7 us for 1280 bytes):

- the group is joined into one buffer, each packet padded with zeros to a multiple of 4
  bytes (zeros change no sum; the first pad byte is RFC 1071's odd-length padding), and
  viewed as rows of little-endian u32 words, summed per row into u64 (no overflow below
  2**32 words);
- a u32 word ``lo + hi * 2**16`` is congruent to ``lo + hi`` modulo 0xffff, so a row's
  sum is its little-endian 16-bit word sum; and a 16-bit word read big-endian is its
  little-endian reading times 2**8 (mod 0xffff: multiplying by 2**8 rotates 16 bits by a
  byte), so the big-endian sum is ``le_sum * 256 % 0xffff``.

Groups smaller than `MIN_GROUP` (numpy's fixed cost per call is a few microseconds) and
the odd lengths of a batch use the big-integer way (`fold16`).

numpy (~8 MB per process) is not imported here, nor when the proxy starts: an idle or
lightly used proxy never loads it. Until something calls `load_numpy`, the sums take the
big-integer way and the first group that could have used numpy marks it wanted
(`numpy_wanted`); the proxy's shell then imports it on a thread of its own
(services/proxy/tcpengine.py), so the import (~0.1 s here) never stalls its loop. Before,
the first bulk group imported it in line: the first ACK of a session's first download
left ~0.11-0.14 s late (seen on the emulated link, 20 ms each way), and the sender waited.
`bulk` asks the same way (`numpy_if_loaded`).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any

__all__ = ["MIN_GROUP", "fold16", "joined_rows", "load_numpy", "loaded_numpy", "numpy_if_loaded", "numpy_wanted",
           "row_sums", "word_sum", "word_sums"]

MIN_GROUP = 4

_M5120 = (1 << 5120) - 1
_M2560 = (1 << 2560) - 1
_M1280 = (1 << 1280) - 1
_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")
_np: ModuleType | None = None
_wanted = False


def fold16(x: int) -> int:
    """``x % 0xffff`` for a big non-negative integer: halving folds at multiples of 16 bits
    first (shifts and masks are linear; the division is not), tuned for 1-1.5 KB."""
    n = x.bit_length()
    if n > 5120:
        x = (x >> 5120) + (x & _M5120)
    if n > 2560:
        x = (x >> 2560) + (x & _M2560)
    if n > 1280:
        x = (x >> 1280) + (x & _M1280)
    return x % 0xFFFF


def word_sum(data: bytes | bytearray | memoryview) -> int:
    """One packet's word sum modulo 0xffff (see the module docstring)."""
    x = int.from_bytes(data, "big")
    if len(data) & 1:
        x <<= 8
    return fold16(x)


def word_sums(packets: Sequence[bytes]) -> list[int]:
    """``[word_sum(p) for p in packets]``, vectorised per group of equal-length packets."""
    count = len(packets)
    if count < MIN_GROUP or numpy_if_loaded() is None:
        return [word_sum(p) for p in packets]
    first = len(packets[0])
    if all(len(p) == first for p in packets):  # a bulk transfer: full-size segments
        return _group_sums(packets, first)
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(packets):
        groups.setdefault(len(p), []).append(i)
    out = [0] * count
    for length, idx in groups.items():
        if len(idx) < MIN_GROUP:
            for i in idx:
                out[i] = word_sum(packets[i])
        else:
            for i, s in zip(idx, _group_sums([packets[i] for i in idx], length), strict=True):
                out[i] = s
    return out


def numpy_if_loaded() -> ModuleType | None:
    """numpy once `load_numpy` has run; else None, and numpy is marked wanted."""
    global _wanted
    if _np is None:
        _wanted = True
    return _np


def numpy_wanted() -> bool:
    """Whether a batch would have used numpy that is not loaded yet."""
    return _wanted and _np is None


def load_numpy() -> ModuleType:
    """Import numpy (blocking: the proxy calls it on a thread of its own, tests and
    benchmarks directly) and use it from now on."""
    global _np
    if _np is None:
        import numpy

        _np = numpy
    return _np


def loaded_numpy() -> ModuleType:
    """numpy, for code that runs only once `numpy_if_loaded` said it is loaded."""
    if _np is None:
        raise RuntimeError("numpy is not loaded")
    return _np


def joined_rows(packets: Sequence[bytes], length: int) -> tuple[bytes, int]:
    """``packets`` (each ``length`` bytes) joined, each zero-padded to a multiple of 4 bytes,
    and that padded row width."""
    pad = _PAD[length & 3]
    return (b"".join(packets) if not pad else pad.join(packets) + pad), length + len(pad)


def row_sums(words: Any) -> Any:
    """The word sums (mod 0xffff, as `word_sum`) of the rows of ``words``, a 2-D numpy
    array of little-endian u32 words (see the module docstring), as a numpy array."""
    np = loaded_numpy()
    return words.sum(axis=1, dtype=np.uint64) % 0xFFFF * 256 % 0xFFFF


def _group_sums(packets: Sequence[bytes], length: int) -> list[int]:
    np = loaded_numpy()
    buf, width = joined_rows(packets, length)
    sums: list[int] = row_sums(np.frombuffer(buf, dtype="<u4").reshape(len(packets), width >> 2)).tolist()
    return sums
