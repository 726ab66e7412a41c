"""The ctl socket: ``sunbeam-ctl`` (REQ) <-> a service (REP).

One request frame, one reply frame, each a msgpack map tagged by ``"t"`` (the class name):
``{"t": "StopRequest", "reason": "sunbeam-ctl stop"}``. Map encoding (not array) so fields
added later with defaults stay compatible with older peers.

    request             reply
    -----------------   -----------------------------------------
    `StatusRequest`     `StatusReply` (health, plus the control state from the control
                        service) 
    `HealthRequest`     `ServiceHealth`
    `StopRequest`       `Ack`, then the service shuts down
    anything invalid    `ErrorReply`
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


class StatusReply(_CtlMessage, frozen=True):
    """A service's answer to `StatusRequest`."""

    health: ServiceHealth
    control: ControlStatus | None = None
    """The control session's state (only the control service sets it)."""


CtlRequest = StatusRequest | StopRequest | HealthRequest
CtlReply = Ack | ErrorReply | ServiceHealth | StatusReply

CTL_REQUEST_CODEC: Codec[CtlRequest] = Codec(CtlRequest)
CTL_REPLY_CODEC: Codec[CtlReply] = Codec(CtlReply)
