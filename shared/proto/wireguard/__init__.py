"""A sans-IO WireGuard implementation (bytes and ``now`` in, bytes out) for one worker.

Modules, one concern each (layouts and spec sections in their docstrings):
``messages`` (wire layouts, classification), ``noise`` (the IKpsk2 handshake),
``cookie`` (mac1/mac2, cookie replies), ``replay`` (anti-replay window), ``session``
(keypairs, rotation, index table), ``timers`` (per-peer deadlines), ``allowedips``
(cryptokey routing), ``send`` / ``receive`` (the two halves of the device),
``device`` (the public ``Device``).
"""

from .device import MAX_STAGED, Decapsulated, Device
from .messages import (
    MESSAGE_COOKIE_REPLY,
    MESSAGE_INITIATION,
    MESSAGE_RESPONSE,
    MESSAGE_TRANSPORT,
    message_type,
    receiver_index,
    split_segments,
    transport_run_index,
)
from .noise import public_key

__all__ = [
    "MAX_STAGED",
    "MESSAGE_COOKIE_REPLY",
    "MESSAGE_INITIATION",
    "MESSAGE_RESPONSE",
    "MESSAGE_TRANSPORT",
    "Decapsulated",
    "Device",
    "message_type",
    "public_key",
    "receiver_index",
    "split_segments",
    "transport_run_index",
]
