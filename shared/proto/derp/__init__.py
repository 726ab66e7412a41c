"""DERP (Designated Encrypted Relay for Packets), sans-IO: `frames` (the wire format and the
stream decoder), `client` (one client connection: HTTP upgrade, login, frames) and
`events` (what the client core reports).
Wire layout and flow are in each module's docstring; spec: docs/protocol.md "DERP",
ts:derp/derp.go, ts:derp/derp_client.go, ts:derp/derphttp/derphttp_client.go."""

from .client import MAX_EARLY_BYTES, DerpClientCore, Phase, client_info_json
from .events import (
    Closed,
    Connected,
    Dropped,
    Event,
    Health,
    KeepAlive,
    PeerGone,
    PeerPresent,
    Ping,
    Pong,
    Received,
    Restarting,
)
from .frames import (
    HEADER_LEN,
    KEY_LEN,
    MAGIC,
    MAX_FRAME_LEN,
    MAX_PACKET_SIZE,
    NONCE_LEN,
    PROTOCOL_VERSION,
    DerpProtocolError,
    FrameDecoder,
    FrameTooLarge,
    FrameType,
    encode_frame,
)

DISCO_MAGIC = "TS💬".encode()
"""The first 6 bytes of a disco message (ts:disco/disco.go); DERP carries disco and
WireGuard packets alike, and the receiver tells them apart by this prefix."""

__all__ = [
    "DISCO_MAGIC",
    "HEADER_LEN",
    "KEY_LEN",
    "MAGIC",
    "MAX_EARLY_BYTES",
    "MAX_FRAME_LEN",
    "MAX_PACKET_SIZE",
    "NONCE_LEN",
    "PROTOCOL_VERSION",
    "Closed",
    "Connected",
    "DerpClientCore",
    "DerpProtocolError",
    "Dropped",
    "Event",
    "FrameDecoder",
    "FrameTooLarge",
    "FrameType",
    "Health",
    "KeepAlive",
    "PeerGone",
    "PeerPresent",
    "Phase",
    "Ping",
    "Pong",
    "Received",
    "Restarting",
    "client_info_json",
    "encode_frame",
]
