"""Events of a DERP client connection (`DerpClientCore.receive_data` returns them).

One class per server-to-client message kind, a closed set (like ts:derp/derp_client.go's
``ReceivedMessage``), plus `Dropped` (a known frame too short to parse) and `Closed` (the
connection is over). Keys are raw 32-byte node public keys.
"""

from __future__ import annotations

import msgspec

__all__ = [
    "Closed", "Connected", "Dropped", "Event", "Health", "KeepAlive", "PeerGone", "PeerPresent", "Ping", "Pong",
    "Received", "Restarting",
]


class Connected(msgspec.Struct, frozen=True):
    """ServerInfo arrived and opened: the server accepted us."""

    server_key: bytes
    version: int
    """The server's protocol version (2 today)."""
    rate_bytes_per_second: int = 0
    """The server's advertised token bucket (0 = unspecified); we do not throttle to it."""
    rate_burst: int = 0


class Received(msgspec.Struct, frozen=True):
    """A packet relayed to us; ``src_key`` is the sender's node key."""

    src_key: bytes
    packet: bytes


class PeerGone(msgspec.Struct, frozen=True):
    """``key`` is no longer reachable through this server (``reason``: 0 disconnected,
    1 not here)."""

    key: bytes
    reason: int


class PeerPresent(msgspec.Struct, frozen=True):
    key: bytes
    addr: str | None = None
    """``"ip:port"`` / ``"[ip]:port"`` of the peer's connection, if the server said."""
    flags: int = 0


class Ping(msgspec.Struct, frozen=True):
    """The server pinged us; the core has already queued the Pong."""

    data: bytes


class Pong(msgspec.Struct, frozen=True):
    """The answer to one of our `DerpClientCore.ping` calls."""

    data: bytes


class KeepAlive(msgspec.Struct, frozen=True):
    pass


class Health(msgspec.Struct, frozen=True):
    """The server's view of our connection; ``problem`` "" = healthy again."""

    problem: str


class Restarting(msgspec.Struct, frozen=True):
    """The server is restarting: reconnect after ``reconnect_in`` s, keep trying for
    ``try_for`` s (advisory)."""

    reconnect_in: float
    try_for: float


class Dropped(msgspec.Struct, frozen=True):
    """A known frame we could not parse; it was skipped (count it)."""

    frame_type: int
    reason: str


class Closed(msgspec.Struct, frozen=True):
    """The connection is over (server EOF or a protocol violation); reconnect."""

    reason: str


Event = Connected | Received | PeerGone | PeerPresent | Ping | Pong | KeepAlive | Health | Restarting | Dropped | Closed
