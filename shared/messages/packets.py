"""Data-plane messages: batches of packets between processes (PUSH/PULL sockets).

One ZeroMQ message carries many packets, so per-message costs (a syscall, a wakeup, a
msgpack header) are paid once per batch. Structs are ``array_like``: on the wire a batch
is the msgpack array ``[tag, field1, field2, ...]``, e.g. ``["WireBatch", <32 bytes>,
[<pkt>, <pkt>]]``.

Sockets and their union (one union per socket):

    proxy  -> wg worker k   `IPBatch`     IP packets to encrypt for peers of worker k
    wg     -> proxy         `IPBatch`     decrypted IP packets for the local stack
    wg     -> udp / derp    `WireBatch`   WireGuard messages to send to one peer
    udp / derp -> wg        `WireBatch`   WireGuard messages received from one peer

Limits (a decode violating them is a `BadMessage`): at most `MAX_PACKETS_PER_BATCH`
packets, each at most `MAX_PACKET_BYTES` bytes; a peer key is exactly 32 bytes.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from .codec import Codec

__all__ = [
    "IPBatch",
    "IP_CODEC",
    "MAX_PACKETS_PER_BATCH",
    "MAX_PACKET_BYTES",
    "PACKET_CODEC",
    "PacketMessage",
    "WireBatch",
    "WIRE_CODEC",
]

MAX_PACKETS_PER_BATCH = 1024
MAX_PACKET_BYTES = 65535  # largest IPv4/UDP datagram; WireGuard messages are smaller
KEY_BYTES = 32

Packet = Annotated[bytes, msgspec.Meta(max_length=MAX_PACKET_BYTES)]
Packets = Annotated[list[Packet], msgspec.Meta(max_length=MAX_PACKETS_PER_BATCH)]
PeerKey = Annotated[bytes, msgspec.Meta(min_length=KEY_BYTES, max_length=KEY_BYTES)]


class IPBatch(msgspec.Struct, frozen=True, tag_field="t", tag=True, array_like=True, gc=False):
    """IP packets between the proxy's TCP/IP stack and a WireGuard worker."""

    packets: Packets
    """Whole IPv4/IPv6 packets, in the order they were produced."""


class WireBatch(msgspec.Struct, frozen=True, tag_field="t", tag=True, array_like=True, gc=False):
    """WireGuard protocol messages exchanged with one remote peer."""

    peer_key: PeerKey
    """The remote peer's 32-byte public key (the WireGuard key, which is also its
    Tailscale node key): the peer a batch is sent to, or was received from."""
    packets: Packets
    """WireGuard messages (types 1-4), each one UDP payload or DERP packet."""


PacketMessage = IPBatch | WireBatch

IP_CODEC: Codec[IPBatch] = Codec(IPBatch)
WIRE_CODEC: Codec[WireBatch] = Codec(WireBatch)
PACKET_CODEC: Codec[PacketMessage] = Codec(PacketMessage)
