"""What `TcpStack.events()` reports, in the order it happened.

Every connection id handed out (by `connect` or a `ConnectionRequest`) ends with exactly
one `Closed`; after it the id is gone (calls with it are quiet no-ops). A `Reset` always
comes before its `Closed`.
"""

from __future__ import annotations

import msgspec

__all__ = ["Closed", "Connected", "ConnectionRequest", "Event", "PeerFinished", "Readable", "Reset", "Writable"]


class ConnectionRequest(msgspec.Struct, frozen=True):
    """A SYN arrived for a port we listen on; answer with `accept` or `refuse`."""

    conn_id: int
    src: tuple[str, int]
    """The peer's address and port."""
    dst: tuple[str, int]
    """Our address and port it connects to."""


class Connected(msgspec.Struct, frozen=True):
    """The three-way handshake completed (ESTABLISHED), either role."""

    conn_id: int


class Readable(msgspec.Struct, frozen=True):
    """New in-order data can be `read` (at most one per connection per `receive`/timer)."""

    conn_id: int


class Writable(msgspec.Struct, frozen=True):
    """Send-buffer space opened (at least a quarter of it) after `send` accepted less than offered."""

    conn_id: int


class PeerFinished(msgspec.Struct, frozen=True):
    """The peer's FIN: once the readable data is read, the stream from the peer is at EOF."""

    conn_id: int


class Reset(msgspec.Struct, frozen=True):
    """The connection failed; unread data is discarded. A `Closed` follows."""

    conn_id: int
    reason: str
    """``reset`` (peer's RST), ``refused`` (RST answering our SYN), ``timeout``
    (retransmissions or the handshake gave up), ``keepalive`` (no answer to probes); for a
    connect the far side turned away (`TcpStack.reject`): ``denied`` (its packet filter),
    ``refused``, ``host_unreachable``, ``net_unreachable``."""


class Closed(msgspec.Struct, frozen=True):
    """Fully closed (both FINs acknowledged, or reset, aborted or refused); the id is gone."""

    conn_id: int


Event = ConnectionRequest | Connected | Readable | Writable | PeerFinished | Reset | Closed
