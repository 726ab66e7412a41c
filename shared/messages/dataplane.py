"""Data-plane messages between the services, one union per PULL socket.

Every message carries a batch (``packets: list[bytes]``): one ZeroMQ message per batch,
never per packet, never multipart. Structs are ``array_like`` msgpack arrays
``[tag, field1, ...]``. Addresses are text: ``"1.2.3.4:41641"`` or ``"[fd00::1]:41641"``.

The messages of each data socket (which process binds and connects each: shared/channels.py)::

    wg-<k>-in   PULL at WireGuard worker k   `WG_IN_CODEC`
        ToPeer(peer_key, packets, segments)  proxy -> wg: IP packets to encrypt for a peer
                                             (an entry with a segment size: packets of
                                             that size back to back, a bulk run)
        UdpReceived(src, packets, segments)  udp   -> wg: WireGuard messages from src
                                             (an entry with a segment size: a GRO burst)
        DerpReceived(peer_key, region, packets)  derp -> wg: WireGuard messages via DERP
        PeerPath(peer_key, addr, until, port)  udp -> wg: the disco-trusted direct address
                                             of a peer until ``until`` ("" = DERP only);
                                             ``port``: udp's UDP port when the worker is to
                                             use its own socket for that path (0 = not)
    proxy-in    PULL at the proxy            `PROXY_IN_CODEC`
        FromPeer(peer_key, packets, segments)  wg -> proxy: decrypted IP packets (source
                                             address already checked against AllowedIPs;
                                             an entry with a segment size: a stretch of
                                             packets of that size back to back)
    udp-in      PULL at the udp service      `UDP_IN_CODEC`
        UdpSend(dsts, packets)               wg -> udp: send every packet to every dst
        DiscoReceived(peer_key, region, packets)  derp -> udp: disco messages via DERP
        PathWanted(peer_key)                 wg -> udp: data flows to this peer; find
                                             (or keep confirming) a direct path
        UdpForwarded(src, packets)           wg -> udp: datagrams a worker's direct socket
                                             received that are udp's (disco, mostly)
    derp-in     PULL at the derp service     `DERP_IN_CODEC`
        DerpSend(peer_key, region, packets)  wg/udp -> derp: send via ``region`` (the
                                             peer's home DERP region) to ``peer_key``

    udp-pub     PUB at the udp service       `UDP_PUB_CODEC`
        UdpStatus(port, endpoints)           udp -> control: our endpoints to advertise
    derp-pub    PUB at the derp service      `DERP_PUB_CODEC`
        DerpStatus(home_region, connected, state)  derp -> control: our home region

``peer_key`` is the remote node's 32-byte public key (its WireGuard static key).
Limits (a violation decodes as `BadMessage`): `MAX_PACKETS_PER_BATCH` packets per batch,
each at most `MAX_PACKET_BYTES`; at most 16 destinations per `UdpSend`.
"""

from __future__ import annotations

from itertools import groupby
from typing import Annotated

import msgspec

from .codec import Codec

__all__ = [
    "DERP_IN_CODEC",
    "DERP_PUB_CODEC",
    "DerpStatus",
    "DerpReceived",
    "DerpSend",
    "DiscoReceived",
    "FromPeer",
    "PathWanted",
    "PeerPath",
    "HEADERS_MAX",
    "JOIN_MIN_RUN",
    "KEY_BYTES",
    "MAX_PACKETS_PER_BATCH",
    "MAX_PACKET_BYTES",
    "PROXY_IN_CODEC",
    "ToPeer",
    "join_runs",
    "split_runs",
    "UDP_IN_CODEC",
    "UDP_PUB_CODEC",
    "UdpForwarded",
    "UdpReceived",
    "UdpSend",
    "UdpStatus",
    "WG_IN_CODEC",
]

MAX_PACKETS_PER_BATCH = 1024
MAX_PACKET_BYTES = 65535  # largest IPv4/UDP datagram; WireGuard messages are smaller
KEY_BYTES = 32

Packet = Annotated[bytes, msgspec.Meta(max_length=MAX_PACKET_BYTES)]
Packets = Annotated[list[Packet], msgspec.Meta(max_length=MAX_PACKETS_PER_BATCH)]
PeerKey = Annotated[bytes, msgspec.Meta(min_length=KEY_BYTES, max_length=KEY_BYTES)]
Addr = Annotated[str, msgspec.Meta(max_length=64)]
Region = Annotated[int, msgspec.Meta(ge=0, le=1 << 31)]


class _Batch(msgspec.Struct, frozen=True, tag_field="t", tag=True, array_like=True, gc=False):
    pass


Segments = Annotated[list[Annotated[int, msgspec.Meta(ge=0, le=MAX_PACKET_BYTES)]],
                     msgspec.Meta(max_length=MAX_PACKETS_PER_BATCH)]
"""Empty, or one per entry of ``packets``: a nonzero ``segments[i]`` says ``packets[i]`` is
packets of that many bytes back to back, the last possibly shorter."""


def split_runs(packets: list[bytes], segments: list[int]) -> list[bytes | memoryview] | None:
    """The packets of a batch with ``segments`` (see `Segments`), a run's as views of its
    entry (no copy); None if ``segments`` does not match ``packets``."""
    if len(segments) != len(packets):
        return None
    out: list[bytes | memoryview] = []
    for entry, size in zip(packets, segments, strict=True):
        if size and size < len(entry):
            view = memoryview(entry)
            out += [view[i:i + size] for i in range(0, len(entry), size)]
        else:
            out.append(entry)
    return out


JOIN_MIN_RUN = 16
"""The fewest equal packets `join_runs` joins: the TCP engine's `bulk.BULK_MIN` (a test
keeps the two equal; the worker does not import the TCP engine)."""

HEADERS_MAX = 100
"""An IPv6 header and the longest TCP header: a packet no longer than this carries no TCP
data (an upload's ACKs), so a stretch of them is not joined (the engine would refuse it)."""


def join_runs(packets: list[bytes], min_run: int = JOIN_MIN_RUN) -> tuple[list[bytes], list[int]]:
    """``packets`` with each stretch of at least ``min_run`` of one length above
    `HEADERS_MAX` joined into entries of up to `MAX_PACKET_BYTES` (whole packets) with that
    length as their segment size, a shorter packet right after a stretch joined to its last
    entry (a sender's write that did not fill its last segment), the rest as they are
    (segment 0): (entries, segments); with no such stretch, (``packets``, [])."""
    parts: list[list[bytes]] = []
    segments: list[int] = []
    open_size = 0  # the last part is a run of this size that a shorter packet may end
    for size, group in groupby(packets, len):
        stretch = list(group)
        if open_size and size < open_size and len(parts[-1]) * open_size + size <= MAX_PACKET_BYTES:
            parts[-1].append(stretch.pop(0))
        open_size = 0
        if size > HEADERS_MAX and len(stretch) >= min_run:
            step = MAX_PACKET_BYTES // size
            for i in range(0, len(stretch), step):
                parts.append(stretch[i:i + step])
                segments.append(size)
            open_size = size
        else:
            parts += [[p] for p in stretch]
            segments += [0] * len(stretch)
    if not any(segments):
        return packets, []
    return [b"".join(part) if len(part) > 1 else part[0] for part in parts], segments


class ToPeer(_Batch, frozen=True):
    """IP packets for one peer, to be encrypted by the worker that owns it; ``segments``
    (see `Segments`): the TCP engine's bulk runs go as one entry per up to 64 kB."""

    peer_key: PeerKey
    packets: Packets
    segments: Segments = []


class FromPeer(_Batch, frozen=True):
    """IP packets decrypted from one peer; ``segments`` (see `Segments`): stretches of equal
    packets (a bulk transfer's) as entries of up to 64 kB (`join_runs`); ``relayed``: some
    of them came over DERP (the TCP engine then keeps its window small: a DERP client's
    queue drops bursts)."""

    peer_key: PeerKey
    packets: Packets
    segments: Segments = []
    relayed: bool = False


class UdpReceived(_Batch, frozen=True):
    """WireGuard messages received on the UDP socket from one source address.

    ``segments`` (empty, or one per entry of ``packets``): a nonzero ``segments[i]`` says
    ``packets[i]`` is datagrams of that many bytes back to back, the last possibly shorter,
    as UDP GRO returned them (split by the receiver, not here: one entry per burst)."""

    src: Addr
    packets: Packets
    segments: Segments = []


class DerpReceived(_Batch, frozen=True):
    """WireGuard messages relayed by DERP from ``peer_key``."""

    peer_key: PeerKey
    region: Region
    packets: Packets


class DiscoReceived(_Batch, frozen=True):
    """Disco messages relayed by DERP from ``peer_key``."""

    peer_key: PeerKey
    region: Region
    packets: Packets


class UdpSend(_Batch, frozen=True):
    """Datagrams to send from our UDP socket, each to every address in ``dsts``."""

    dsts: Annotated[list[Addr], msgspec.Meta(max_length=16)]
    packets: Packets


class DerpSend(_Batch, frozen=True):
    """Packets to relay through DERP region ``region`` to ``peer_key``."""

    peer_key: PeerKey
    region: Region
    packets: Packets


class PeerPath(_Batch, frozen=True):
    """The direct UDP address disco trusts for ``peer_key`` until ``until`` (CLOCK_MONOTONIC
    seconds, ``time.monotonic()``: one clock for every process on this machine, and no step
    when the wall clock is set); ``addr=""``: none, DERP only."""

    peer_key: PeerKey
    addr: Addr
    until: float
    port: Annotated[int, msgspec.Meta(ge=0, le=0xFFFF)] = 0
    """The udp service's port, when the worker is to send and receive this path's datagrams
    on its own socket bound to it and connected to ``addr`` (0: through the udp service)."""


class PathWanted(_Batch, frozen=True):
    """Data is flowing to ``peer_key``: probe (or keep confirming) a direct path."""

    peer_key: PeerKey


class UdpForwarded(_Batch, frozen=True):
    """Datagrams from ``src`` that a worker's direct (connected) socket received but that are
    the udp service's to handle, as if they had arrived on its own socket: disco from the
    peer, and anything that is not that peer's WireGuard for this worker."""

    src: Addr
    packets: Packets


WgInput = ToPeer | UdpReceived | DerpReceived | PeerPath
UdpInput = UdpSend | DiscoReceived | PathWanted | UdpForwarded

WG_IN_CODEC: Codec[WgInput] = Codec(WgInput)
PROXY_IN_CODEC: Codec[FromPeer] = Codec(FromPeer)
UDP_IN_CODEC: Codec[UdpInput] = Codec(UdpInput)
DERP_IN_CODEC: Codec[DerpSend] = Codec(DerpSend)


class DerpStatus(msgspec.Struct, frozen=True, kw_only=True, tag_field="t", tag=True):
    """Published by the derp service on ``derp-pub`` (PUB; re-sent on every change and every
    few seconds). The control service reports ``home_region`` as NetInfo.PreferredDERP."""

    home_region: int
    """0 until a home region is connected."""
    connected: tuple[int, ...] = ()
    """Regions with an established connection."""
    state: str = "starting"
    """``starting``, ``connected`` (home connected) or ``disconnected`` (retrying)."""


DERP_PUB_CODEC: Codec[DerpStatus] = Codec(DerpStatus)


class UdpStatus(msgspec.Struct, frozen=True, kw_only=True, tag_field="t", tag=True):
    """Published by the udp service on ``udp-pub`` (PUB; on every change and every few
    seconds). The control service advertises ``endpoints`` in its MapRequests."""

    port: int
    endpoints: tuple[Addr, ...] = ()
    """Our UDP endpoints: local interface addresses with our port, then STUN-mapped ones."""


UDP_PUB_CODEC: Codec[UdpStatus] = Codec(UdpStatus)
