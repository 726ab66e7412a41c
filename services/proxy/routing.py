"""Where a packet we originate goes: longest-prefix match over the peers' AllowedIPs.

Built from the netmap (``Peer.allowed_ips``, ``Peer.key``); the answer is the peer's
32-byte node key, and ``owner(key, wg_workers)`` (shared/sharding.py) names the WireGuard
worker whose ``wg-<k>-in`` socket takes it. The table is the WireGuard device's own
`AllowedIPs` (shared/proto/wireguard/allowedips.py) filled in netmap order, so a prefix
routed to two peers (which control should not send) goes where the device would send it:
to the peer listed last (last writer wins, as in WireGuard).

Our own source address for a destination: the first single-address prefix of our node
(``self_node.addresses``) in the destination's family, as tailscaled's
``mySelfIPMatchingFamily`` picks it (ts:wgengine/userspace.go).

Lookups are memoized per destination (a table is immutable: a new netmap makes a new
table), so the packets of a flow cost one dict lookup each, not an address parse.

Ownership: the proxy's loop thread; a new table replaces the old one on every netmap.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from sunbeam.shared.keys import KeyFormatError, from_text
from sunbeam.shared.netmap import Netmap
from sunbeam.shared.proto.wireguard.allowedips import AllowedIPs

__all__ = ["RouteTable", "self_address_for"]

CACHE_MAX = 4096  # destinations remembered per table; emptied when full


class RouteTable:
    def __init__(self, routes: Iterable[tuple[str, bytes]] = ()) -> None:
        by_key: dict[bytes, list[str]] = {}
        for prefix, key in routes:
            by_key.setdefault(key, []).append(prefix)
        self._table = AllowedIPs()
        for key, prefixes in by_key.items():
            self._table.set(key, prefixes)
        self.size = sum(len(t) for fam in (self._table.v4, self._table.v6) for t in fam.tables.values())
        self._cache: dict[str | bytes, bytes | None] = {}

    @classmethod
    def from_netmap(cls, netmap: Netmap) -> RouteTable:
        routes: list[tuple[str, bytes]] = []
        for peer in netmap.peers:
            try:
                key = from_text("nodekey:", peer.key)
            except KeyFormatError:  # the netmap builder validated it; stay safe anyway
                continue
            routes.extend((prefix, key) for prefix in peer.allowed_ips)
        return cls(routes)

    def lookup(self, dst: str | bytes) -> bytes | None:
        """The node key of the peer that ``dst`` (text or packed) routes to, or None."""
        try:
            return self._cache[dst]
        except KeyError:
            pass
        key = self._lookup(dst)
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()
        self._cache[dst] = key
        return key

    def _lookup(self, dst: str | bytes) -> bytes | None:
        key: bytes | None = self._table.lookup(dst)
        return key


def self_address_for(netmap: Netmap | None, dst: str) -> str | None:
    """Our address in ``dst``'s family, or None (no netmap, or no such address)."""
    if netmap is None or netmap.self_node is None:
        return None
    version = ipaddress.ip_address(dst).version
    for prefix in netmap.self_node.addresses:
        iface = ipaddress.ip_interface(prefix)
        if iface.version == version and iface.network.num_addresses == 1:
            return str(iface.ip)
    return None
