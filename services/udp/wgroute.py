"""Which WireGuard worker gets an inbound datagram, decided from its first bytes (sans-IO).

WireGuard messages (wireguard-go device/noise-protocol.go; whitepaper section 5.4).
The first 4 bytes are the message type as a little-endian u32 (type byte + 3 zero
reserved bytes); indices are little-endian u32::

    1 initiation    148 B  type | sender idx @4      | ephemeral, static, timestamp, macs
    2 response       92 B  type | sender idx @4      | receiver idx @8 | ephemeral, empty, macs
    3 cookie reply   64 B  type | receiver idx @4    | nonce 24 | cookie 32
    4 transport   >= 32 B  type | receiver idx @4    | counter u64 LE @8 | data + tag 16

Routing (no shared state, see ARCHITECTURE.md "Scaling WireGuard across cores"):

- types 2, 3, 4: the receiver index is one of *our* session indices, which carries the
  owning worker in its top bits (`sunbeam.shared.sharding.worker_of_index`); a worker
  number >= ``workers`` cannot be ours: dropped (``bad_index``);
- type 1: the initiator is not known yet; worker ``crc32(src) % workers`` decrypts the
  initiator's static key and forwards the message to the owner;
- a wrong size for its type (``bad_length``) or any other first word (``not_wireguard``)
  is dropped. Disco packets are recognised (by their magic) before this is asked.
"""

from __future__ import annotations

import zlib

from sunbeam.shared.sharding import worker_of_index

__all__ = ["route"]

INITIATION, RESPONSE, COOKIE_REPLY, TRANSPORT = 1, 2, 3, 4
INITIATION_SIZE = 148
RESPONSE_SIZE = 92
COOKIE_REPLY_SIZE = 64
TRANSPORT_MIN_SIZE = 32


def route(pkt: bytes, src: str, workers: int) -> int | str:
    """The worker number for ``pkt`` from ``src``, or the drop reason (a str)."""
    if len(pkt) < 4:
        return "not_wireguard"
    kind = int.from_bytes(pkt[:4], "little")
    if kind == TRANSPORT:
        if len(pkt) < TRANSPORT_MIN_SIZE:
            return "bad_length"
        at = 4
    elif kind == RESPONSE:
        if len(pkt) != RESPONSE_SIZE:
            return "bad_length"
        at = 8
    elif kind == COOKIE_REPLY:
        if len(pkt) != COOKIE_REPLY_SIZE:
            return "bad_length"
        at = 4
    elif kind == INITIATION:
        if len(pkt) != INITIATION_SIZE:
            return "bad_length"
        return zlib.crc32(src.encode()) % workers
    else:
        return "not_wireguard"
    worker = worker_of_index(int.from_bytes(pkt[at:at + 4], "little"))
    return worker if worker < workers else "bad_index"
