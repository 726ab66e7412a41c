"""WireGuard's four message types: wire layouts and cheap classification.

Spec: the WireGuard whitepaper, section 5.4 (wireguard-go ``device/noise-protocol.go``).
Every integer is little-endian; ``type`` is one byte followed by three reserved zero bytes,
so the first four bytes read as a u32 equal to the type::

    1 handshake initiation, exactly 148 bytes
        0    type = 1, 0, 0, 0
        4    sender index                 u32   (the initiator's local index)
        8    unencrypted ephemeral        32    (X25519 public key)
        40   encrypted static             32 + 16 tag
        88   encrypted timestamp          12 (TAI64N) + 16 tag
        116  mac1                         16
        132  mac2                         16
    2 handshake response, exactly 92 bytes
        0    type = 2, 0, 0, 0
        4    sender index                 u32   (the responder's local index)
        8    receiver index               u32   (the initiator's index from message 1)
        12   unencrypted ephemeral        32
        44   encrypted nothing            0 + 16 tag
        60   mac1                         16
        76   mac2                         16
    3 cookie reply, exactly 64 bytes
        0    type = 3, 0, 0, 0
        4    receiver index               u32   (sender index of the message it answers)
        8    nonce                        24    (XChaCha20-Poly1305)
        32   encrypted cookie             16 + 16 tag
    4 transport data, at least 32 bytes (32 = keepalive: empty payload)
        0    type = 4, 0, 0, 0
        4    receiver index               u32
        8    counter                      u64   (also the AEAD nonce: 4 zero bytes || u64 LE)
        16   encrypted packet             len (zero-padded to a multiple of 16) + 16 tag

``receiver_index`` is what the udp service routes on (its top bits are the worker number,
see ``sunbeam.shared.sharding``).
"""

from __future__ import annotations

import struct

MESSAGE_INITIATION = 1
MESSAGE_RESPONSE = 2
MESSAGE_COOKIE_REPLY = 3
MESSAGE_TRANSPORT = 4

INITIATION_LEN = 148
RESPONSE_LEN = 92
COOKIE_REPLY_LEN = 64
TRANSPORT_HEADER_LEN = 16
TAG_LEN = 16
KEEPALIVE_LEN = TRANSPORT_HEADER_LEN + TAG_LEN  # the smallest transport message
PADDING_MULTIPLE = 16

_U32 = struct.Struct("<I")
_EXACT_LEN = {MESSAGE_INITIATION: INITIATION_LEN, MESSAGE_RESPONSE: RESPONSE_LEN,
              MESSAGE_COOKIE_REPLY: COOKIE_REPLY_LEN}


def message_type(data: bytes) -> int | None:
    """The message type, or None if ``data`` is not a plausible WireGuard message
    (unknown type, non-zero reserved bytes, or the wrong length for its type)."""
    n = len(data)
    if n < 4 or data[1] or data[2] or data[3]:
        return None
    t = data[0]
    if t == MESSAGE_TRANSPORT:
        return t if n >= KEEPALIVE_LEN else None
    return t if _EXACT_LEN.get(t) == n else None


def receiver_index(data: bytes) -> int | None:
    """The receiver index of a response, cookie reply or transport message; else None."""
    t = message_type(data)
    if t == MESSAGE_TRANSPORT or t == MESSAGE_COOKIE_REPLY:
        return _U32.unpack_from(data, 4)[0]
    if t == MESSAGE_RESPONSE:
        return _U32.unpack_from(data, 8)[0]
    return None


def split_segments(blob: bytes, size: int) -> list[bytes]:
    """The ``size``-byte messages back to back in ``blob`` (0 or >= len: ``blob`` alone)."""
    if size <= 0 or size >= len(blob):
        return [blob]
    return [blob[i:i + size] for i in range(0, len(blob), size)]


def transport_run_index(blob: bytes, size: int) -> int | None:
    """For ``size``-byte messages back to back in ``blob`` (the last may be shorter; a UDP
    GRO burst): their receiver index if every one is a transport message for the same
    receiver, else None. Costs a few C-level strided slices, not a loop per message."""
    n = len(blob)
    if size < KEEPALIVE_LEN or n < KEEPALIVE_LEN:
        return None
    count = -(-n // size)
    if n - (count - 1) * size < KEEPALIVE_LEN:
        return None
    head = blob[:8]
    for i in range(8):
        if blob[i::size] != head[i:i + 1] * count:
            return None
    if head[:4] != _TRANSPORT_TYPE:
        return None
    return _U32.unpack_from(head, 4)[0]


_TRANSPORT_TYPE = bytes([MESSAGE_TRANSPORT, 0, 0, 0])
