"""Typed messages between sunbeam processes: one closed union of frozen msgspec Structs
per socket, and the `Codec` that encodes them (see each module for its socket)."""

from .codec import BadMessage, Codec
from .ctl import (
    CTL_REPLY_CODEC,
    CTL_REQUEST_CODEC,
    Ack,
    CtlReply,
    CtlRequest,
    ErrorReply,
    HealthRequest,
    ServiceHealth,
    StatusRequest,
    StopRequest,
)
from .dataplane import MAX_PACKET_BYTES, MAX_PACKETS_PER_BATCH

__all__ = [
    "Ack",
    "BadMessage",
    "CTL_REPLY_CODEC",
    "CTL_REQUEST_CODEC",
    "Codec",
    "CtlReply",
    "CtlRequest",
    "ErrorReply",
    "HealthRequest",
    "MAX_PACKETS_PER_BATCH",
    "MAX_PACKET_BYTES",
    "ServiceHealth",
    "StatusRequest",
    "StopRequest",
]
