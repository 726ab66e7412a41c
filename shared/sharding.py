"""Which WireGuard worker owns a peer, and the worker number inside session indices.

- ``owner(node_key, workers)``: a stable hash of the peer's 32-byte node key (BLAKE2s,
  first 4 bytes big-endian) modulo the number of workers. Every service computes the same
  owner without shared state; changing ``wg_workers`` reshuffles peers (sessions restart).
- Local session indices (WireGuard's sender/receiver index, u32 on the wire,
  little-endian) carry the worker number in their top `WORKER_BITS` bits, so the udp
  service routes message types 2, 3 and 4 by the receiver index alone:
  ``worker_of_index(index) = index >> (32 - WORKER_BITS)``.
"""

from __future__ import annotations

from _blake2 import blake2s  # = hashlib.blake2s; hashlib would load OpenSSL's libcrypto (~0.5 MB)

WORKER_BITS = 8
MAX_WORKERS = 1 << WORKER_BITS  # config allows at most 64
INDEX_BITS = 32 - WORKER_BITS


def owner(node_key: bytes, workers: int) -> int:
    if workers < 1:
        raise ValueError("workers must be >= 1")
    digest = blake2s(node_key, digest_size=4).digest()
    return int.from_bytes(digest, "big") % workers


def make_index(worker: int, local: int) -> int:
    """A session index for ``worker``; ``local`` is the worker's own counter/random part."""
    if not 0 <= worker < MAX_WORKERS:
        raise ValueError(f"worker {worker} out of range")
    return (worker << INDEX_BITS) | (local & ((1 << INDEX_BITS) - 1))


def worker_of_index(index: int) -> int:
    return (index >> INDEX_BITS) & (MAX_WORKERS - 1)
