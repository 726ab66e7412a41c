"""The ctl socket: ``sunbeam-ctl`` (REQ) <-> a service (REP).

One request frame, one reply frame, each a msgpack map tagged by ``"t"`` (the class name):
``{"t": "StopRequest", "reason": "sunbeam-ctl stop"}``. Map encoding (not array) so fields
added later with defaults stay compatible with older peers.

    request             reply
    -----------------   -----------------------------------------
    `StatusRequest`     `StatusReply` (health, plus the control state from the control
                        service, the routing settings in use from the proxy)
    `HealthRequest`     `ServiceHealth`
    `PeersRequest`      `PeersReply` (a wg worker: one `PeerStats` per peer it owns;
                        every other service: no peers)
    `StopRequest`       `Ack`, then the service shuts down
    anything invalid    `ErrorReply`

`PeerStats` is a plain (untagged) map inside `PeersReply`::

    {"key": "nodekey:<hex>", "worker": 1, "path": "derp", "endpoint": "", "derp_region": 999,
     "last_handshake": 1718000000.5, "rx_bytes": 1234, "tx_bytes": 5678}
"""

from __future__ import annotations

import msgspec

from .codec import Codec
from .netmap import ControlStatus

__all__ = [
    "Ack",
    "CTL_REPLY_CODEC",
    "CTL_REQUEST_CODEC",
    "CtlReply",
    "CtlRequest",
    "ErrorReply",
    "HealthRequest",
    "PeerStats",
    "PeersReply",
    "PeersRequest",
    "RoutingSettings",
    "ServiceHealth",
    "StatusReply",
    "StatusRequest",
    "StopRequest",
]


class _CtlMessage(msgspec.Struct, frozen=True, tag_field="t", tag=True):
    pass


class StatusRequest(_CtlMessage, frozen=True):
    """Ask for the service's state."""


class HealthRequest(_CtlMessage, frozen=True):
    """Ask for the service's liveness and counters."""


class StopRequest(_CtlMessage, frozen=True):
    """Ask the service to shut down."""

    reason: str
    """Why, for the service's exit log line (e.g. ``"sunbeam-ctl stop"``)."""


class PeersRequest(_CtlMessage, frozen=True):
    """Ask for the per-peer state of the peers the service owns (the wg workers)."""


class PeerStats(msgspec.Struct, frozen=True):
    """One peer as the wg worker that owns it sees it."""

    key: str
    """``"nodekey:<64 hex>"``."""
    worker: int = 0
    """The owning worker's number."""
    path: str = ""
    """How the peer's traffic reaches us: ``"direct"`` (an authenticated UDP receipt within
    the worker's freshness window), ``"derp"``, or ``""`` (nothing authenticated received yet)."""
    endpoint: str = ""
    """The UDP ``"ip:port"`` the peer last reached us from, when ``path`` is ``"direct"``; else ``""``."""
    derp_region: int = 0
    """When ``path`` is ``"derp"``: the region the peer's messages came through (else its home
    region); 0 otherwise."""
    last_handshake: float = 0.0
    """Unix time (seconds) of the last completed handshake; 0 = never."""
    rx_bytes: int = 0
    """WireGuard bytes received from the peer (handshake and transport messages)."""
    tx_bytes: int = 0
    """WireGuard transport bytes sent to the peer."""


class PeersReply(_CtlMessage, frozen=True):
    """A service's answer to `PeersRequest`."""

    service: str
    peers: list[PeerStats] = msgspec.field(default_factory=list)


class Ack(_CtlMessage, frozen=True):
    """The request was accepted (for `StopRequest`: shutdown has been set)."""


class ErrorReply(_CtlMessage, frozen=True):
    """The request was not understood or could not be served."""

    message: str
    """Human-readable reason, printed by ``sunbeam-ctl``."""


class ServiceHealth(_CtlMessage, frozen=True):
    """One service process's liveness."""

    service: str
    """Service name, e.g. ``"control"`` or ``"wg-2"``."""
    pid: int
    state: str
    """Short lower-case word, e.g. ``"starting"``, ``"running"``, ``"stopping"``."""
    started_at: float
    """Unix time (seconds) the process started."""
    counters: dict[str, int]
    """The service's `Counters` snapshot (drops, bad messages, ...)."""


class RoutingSettings(msgspec.Struct, frozen=True):
    """The routing settings the proxy uses: the context's as it read them when it started
    (a later edit of the config file takes effect at the next start)."""

    accept_routes: bool = False
    """Peers' subnet routes are used."""
    exit_node: str | None = None
    """The ``exit_node`` setting (a peer's name or tailnet IP); None: none."""


class StatusReply(_CtlMessage, frozen=True):
    """A service's answer to `StatusRequest`."""

    health: ServiceHealth
    control: ControlStatus | None = None
    """The control session's state (only the control service sets it)."""
    routing: RoutingSettings | None = None
    """The routing settings in use (only the proxy sets it)."""


CtlRequest = StatusRequest | StopRequest | HealthRequest | PeersRequest
CtlReply = Ack | ErrorReply | ServiceHealth | StatusReply | PeersReply

CTL_REQUEST_CODEC: Codec[CtlRequest] = Codec(CtlRequest)
CTL_REPLY_CODEC: Codec[CtlReply] = Codec(CtlReply)
