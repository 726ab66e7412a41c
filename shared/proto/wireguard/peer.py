"""`Peer`: one remote WireGuard peer's state (handshake, keypairs, timers, staged packets,
counters), owned by the `Device` of the worker that owns the peer.

Its own module so that device.py, send.py, receive.py and session.py all import it from
here, not from each other.
"""

from __future__ import annotations

import collections

from .cookie import CookieGenerator
from .noise import Handshake, StaticIdentity
from .session import Keypairs
from .timers import PeerTimers

__all__ = ["Peer"]


class Peer:
    """One remote peer's state. Owned by the Device."""

    __slots__ = (
        "cookie",
        "handshake",
        "key",
        "keypairs",
        "last_handshake",
        "rx_bytes",
        "rx_packets",
        "staged",
        "timers",
        "tx_bytes",
        "tx_packets",
    )

    def __init__(self, identity: StaticIdentity, key: bytes, max_staged: int) -> None:
        self.key = key
        self.handshake = Handshake(identity, key)
        self.cookie = CookieGenerator(key)
        self.keypairs = Keypairs()
        self.timers = PeerTimers()
        self.staged: collections.deque[bytes] = collections.deque(maxlen=max_staged)
        self.rx_bytes = self.tx_bytes = self.rx_packets = self.tx_packets = 0
        self.last_handshake: float | None = None
