"""A sans-IO WireGuard implementation (bytes and ``now`` in, bytes out) for one worker.

Modules, one concern each (layouts and spec sections in their docstrings):
``messages`` (wire layouts, classification), ``noise`` (the IKpsk2 handshake),
``cookie`` (mac1/mac2, cookie replies), ``replay`` (anti-replay window), ``session``
(keypairs, rotation, index table), ``timers`` (per-peer deadlines), ``allowedips``
(cryptokey routing), ``send`` / ``receive`` (the two halves of the device),
``device`` (the public ``Device``).
"""

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from .device import MAX_STAGED, Decapsulated, Device
    from .noise import public_key

# The device and the handshake load cryptography (and PyNaCl for cookies); the udp service
# only needs the wire layouts above, so those names load on first use (PEP 562).
_LAZY = {"MAX_STAGED": ".device", "Decapsulated": ".device", "Device": ".device", "public_key": ".noise"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value

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
