"""Deterministic pseudo-random blobs of any size, with a sha256 anyone can recompute.

Definition (so a test or another language can regenerate a blob bit for bit)::

    chunk(seed, k) = SHAKE-128( ascii(f"sunbeam-blob:{seed}:{k}") ) truncated to 65536 bytes
    blob(size, seed) = (chunk(seed, 0) || chunk(seed, 1) || ...)[:size]

SHAKE-128 runs in C at several hundred MB/s, so a 100 MB blob streams without a Python loop
per byte and without holding it in memory.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Iterator

CHUNK = 65536
MAX_BLOB = 8 << 30  # 8 GiB: a bound on what one request may ask the server to generate


def chunk(seed: str, index: int) -> bytes:
    return hashlib.shake_128(f"sunbeam-blob:{seed}:{index}".encode()).digest(CHUNK)


def iter_blob(size: int, seed: str = "0") -> Iterator[bytes]:
    if not 0 <= size <= MAX_BLOB:
        raise ValueError(f"blob size must be 0..{MAX_BLOB}, got {size}")
    index = 0
    remaining = size
    while remaining > 0:
        piece = chunk(seed, index)
        if remaining < CHUNK:
            piece = piece[:remaining]
        yield piece
        remaining -= len(piece)
        index += 1


@lru_cache(maxsize=64)
def blob_sha256(size: int, seed: str = "0") -> str:
    h = hashlib.sha256()
    for piece in iter_blob(size, seed):
        h.update(piece)
    return h.hexdigest()
