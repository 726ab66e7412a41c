"""Where a packet we originate goes: longest-prefix match over the peers' AllowedIPs.

Built from the netmap (``Peer.allowed_ips`` as `routed_prefixes` keeps them: subnet routes
only with ``accept_routes``, a default route only for the chosen exit node, see
shared/netmap/routes.py; ``Peer.key``); the answer is the peer's
32-byte node key, and ``owner(key, wg_workers)`` (shared/sharding.py) names the WireGuard
worker whose ``wg-<k>-in`` socket takes it. The table is the WireGuard device's own
`AllowedIPs` (shared/proto/wireguard/allowedips.py) filled in netmap order, so a prefix
routed to two peers (which control should not send) goes where the device would send it:
to the peer listed last (last writer wins, as in WireGuard). A tailnet address (100.64.0.0/10,
fd7a:115c:a1e0::/48) is never sent along a default route: no node has it, so the exit
node should not get it either.

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
from sunbeam.shared.netmap.routes import (
    ExitChoice,
    choose_exit_node,
    in_tailnet,
    routed_prefixes,
    subnet_routes,
)
from sunbeam.shared.proto.wireguard.allowedips import AllowedIPs

__all__ = ["RouteTable", "self_address_for"]

CACHE_MAX = 4096  # destinations remembered per table; emptied when full


class RouteTable:
    def __init__(self, routes: Iterable[tuple[str, bytes]] = ()) -> None:
        by_key: dict[bytes, list[str]] = {}
        for prefix, key in routes:
            by_key.setdefault(key, []).append(prefix)
        self._table = AllowedIPs()
        self._tailnet_table = AllowedIPs()  # the same without default routes: for tailnet addresses
        for key, prefixes in by_key.items():
            self._table.set(key, prefixes)
            self._tailnet_table.set(key, [p for p in prefixes if not p.endswith("/0")])
        self.size = sum(len(t) for fam in (self._table.v4, self._table.v6) for t in fam.tables.values())
        self._cache: dict[str | bytes, bytes | None] = {}
        self.exit = ExitChoice(None, None)
        """The exit node in use (or why the configured one is not)."""
        self.unaccepted: tuple[tuple[str, str], ...] = ()
        """``(prefix, peer name)`` of subnet routes left out because accept_routes is off."""

    @classmethod
    def from_netmap(cls, netmap: Netmap, *, accept_routes: bool = False, exit_node: str | None = None) -> RouteTable:
        exit_choice = choose_exit_node(netmap, exit_node)
        routes: list[tuple[str, bytes]] = []
        unaccepted: list[tuple[str, str]] = []
        for peer in netmap.peers:
            try:
                key = from_text("nodekey:", peer.key)
            except KeyFormatError:  # the netmap builder validated it; stay safe anyway
                continue
            prefixes = routed_prefixes(peer, accept_routes=accept_routes, exit_node=exit_choice.peer)
            routes.extend((prefix, key) for prefix in prefixes)
            if not accept_routes:
                unaccepted.extend((prefix, peer.name.rstrip(".") or str(peer.id)) for prefix in subnet_routes(peer))
        table = cls(routes)
        table.exit = exit_choice
        table.unaccepted = tuple(unaccepted)
        return table

    def unaccepted_route(self, dst: str) -> str | None:
        """The peer whose subnet route (left out: accept_routes is off) covers ``dst``, if any."""
        addr = ipaddress.ip_address(dst)
        for prefix, name in self.unaccepted:
            if addr in ipaddress.ip_network(prefix, strict=False):
                return name
        return None

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
        table = self._tailnet_table if _in_tailnet(dst) else self._table
        key: bytes | None = table.lookup(dst)
        return key


def _in_tailnet(dst: str | bytes) -> bool:
    """``dst`` (text, or packed 4 / 16 bytes) is in 100.64.0.0/10 or fd7a:115c:a1e0::/48."""
    if isinstance(dst, bytes):
        if len(dst) == 4:
            return dst[0] == 100 and dst[1] & 0xC0 == 64
        return dst[:6] == _ULA_PREFIX
    try:
        return in_tailnet(dst)
    except ValueError:
        return False


_ULA_PREFIX = bytes.fromhex("fd7a115ca1e0")


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
