"""The ctl socket: ``sunbeam-ctl`` (REQ) <-> a service (REP).

One request frame, one reply frame, each a msgpack map tagged by ``"t"`` (the class name):
``{"t": "StopRequest", "reason": "sunbeam-ctl stop"}``. Map encoding (not array) so fields
added later with defaults stay compatible with older peers.

    request             reply
    -----------------   -----------------------------------------
    `StatusRequest`     `ServiceHealth` (later: a full status)
    `HealthRequest`     `ServiceHealth`
    `StopRequest`       `Ack`, then the service shuts down
    anything invalid    `ErrorReply`
"""

from __future__ import annotations

import msgspec

from .codec import Codec

__all__ = [
    "Ack",
    "CTL_REPLY_CODEC",
    "CTL_REQUEST_CODEC",
    "CtlReply",
    "CtlRequest",
    "ErrorReply",
    "HealthRequest",
    "ServiceHealth",
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


CtlRequest = StatusRequest | StopRequest | HealthRequest
CtlReply = Ack | ErrorReply | ServiceHealth

CTL_REQUEST_CODEC: Codec[CtlRequest] = Codec(CtlRequest)
CTL_REPLY_CODEC: Codec[CtlReply] = Codec(CtlReply)
