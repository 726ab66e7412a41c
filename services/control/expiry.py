"""Peers whose node key expired: kept in the netmap, marked, and unreachable (no I/O here).

As tailscale's ``flagExpiredPeers`` (ipn/ipnlocal/expiry.go): a peer the server marks
``Expired``, or whose ``KeyExpiry`` has passed, stays in the published netmap so that
``sunbeam-ctl peers`` can show it as expired, but with ``expired=True`` and no
``allowed_ips``, ``endpoints`` or home DERP region: the proxy has no route to it and the
WireGuard workers no prefix, so nothing is sent to it. (Tailscale breaks the peer's key;
we empty what routes to it.) Headscale tells the peers when a node expires: ``headscale
nodes expire`` as a full node with ``Expired``, a passing expiry as a ``KeyExpiry`` patch;
both arrive here as changed peers.
"""

from __future__ import annotations

import datetime

import msgspec
from sunbeam.shared.netmap import Netmap, NetmapChange, Peer, SelfNode


def _unix(text: str) -> float | None:
    try:
        return datetime.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def key_expiry(node: Peer | SelfNode) -> float | None:
    """When the node's key expires (Unix seconds); None: never (or unreadable)."""
    return _unix(node.key_expiry) if node.key_expiry else None


def is_expired(node: Peer | SelfNode, now: float) -> bool:
    if node.expired:
        return True
    when = key_expiry(node)
    return when is not None and when <= now


def flag(peer: Peer, now: float) -> Peer:
    """``peer`` as published: unreachable and marked if its key expired."""
    if not is_expired(peer, now) or (peer.expired and not peer.allowed_ips and not peer.endpoints
                                     and not peer.home_derp):
        return peer
    return msgspec.structs.replace(peer, expired=True, allowed_ips=(), endpoints=(), home_derp=0)


def flag_netmap(netmap: Netmap, now: float) -> Netmap:
    peers = tuple(flag(p, now) for p in netmap.peers)
    return netmap if peers == netmap.peers else msgspec.structs.replace(netmap, peers=peers)


def flag_change(change: NetmapChange, now: float) -> NetmapChange:
    upserted = tuple(flag(p, now) for p in change.upserted)
    return change if upserted == change.upserted else msgspec.structs.replace(change, upserted=upserted)
