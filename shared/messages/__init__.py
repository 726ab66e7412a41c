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
from .packets import (
    IP_CODEC,
    MAX_PACKET_BYTES,
    MAX_PACKETS_PER_BATCH,
    PACKET_CODEC,
    WIRE_CODEC,
    IPBatch,
    PacketMessage,
    WireBatch,
)

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
    "IPBatch",
    "IP_CODEC",
    "MAX_PACKETS_PER_BATCH",
    "MAX_PACKET_BYTES",
    "PACKET_CODEC",
    "PacketMessage",
    "ServiceHealth",
    "StatusRequest",
    "StopRequest",
    "WIRE_CODEC",
    "WireBatch",
]
