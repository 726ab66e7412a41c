"""The network map and the MapResponse delta logic, sans-IO.

`NetmapBuilder` is owned by the control service (the only writer of the netmap): it
applies each streamed `MapResponse` exactly as tailscaled does
(ts:control/controlclient/map.go ``updateStateFromResponse`` /
``updatePeersStateFromResponse``, ``upgradeNode``) and returns a `NetmapChange` holding
only what changed. The control service publishes changes as ``NetmapDelta`` messages
(`sunbeam.shared.messages.netmap`); subscribers rebuild the same `Netmap` with
`apply_change`.

Delta semantics, in the order they are applied:

- ``KeepAlive: true``: nothing else in the response is looked at.
- ``Node``: our node; nil = unchanged.
- ``Peers`` non-empty: the complete peer list; every other peer field of that response
  is ignored. (An empty ``Peers`` is no-op, as upstream: it cannot clear the list.)
- otherwise ``PeersRemoved`` (unknown IDs ignored), ``PeersChanged`` (upsert, whole
  node), ``PeerSeenChange`` (true: LastSeen = now; false: LastSeen cleared; not "peer
  gone" as the tailcfg comment says), ``OnlineChange``, then ``PeersChangedPatch``
  (only the fields present; unknown IDs ignored).
- ``UserProfiles``: merged by ID. ``DERPMap``: nil = unchanged; nil ``Regions`` keeps
  the previous regions; null regions are dropped. ``DNSConfig``/``Domain``: nil/"" =
  unchanged.
- Packet filter: ``PacketFilter`` non-nil sets the named filter ``"base"`` (``[]`` =
  deny all); then ``PacketFilters`` sets each key (null deletes it; the key ``"*"`` with
  null first clears every filter, ``"base"`` included). The netmap's filter is the
  concatenation of the named filters in key order; None until control sent one
  (consumers treat None as deny-all too).

Node fields are normalised like ``upgradeNode``: ``HomeDERP`` falls back to the legacy
``"DERP": "127.3.3.40:<region>"``; nil ``AllowedIPs`` = ``Addresses``; deprecated
``Capabilities`` are merged into the capability map. A node whose key, disco key,
addresses or endpoints are malformed is a counted drop with a reason: it is left out of
(or removed from) the netmap, never a crash. An all-zero disco key counts as absent
(``disco_key`` None): tailscaled's magicsock will not talk to such a peer.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Callable
from typing import Any

import msgspec

from ..proto.tailcfg import (
    DERPMap,
    DNSConfig,
    FilterRule,
    MapResponse,
    Node,
    UserProfile,
)

__all__ = [
    "MalformedNode",
    "Netmap",
    "NetmapBuilder",
    "NetmapChange",
    "Peer",
    "SelfNode",
    "apply_change",
    "peer_from_node",
    "self_from_node",
]

DERP_MAGIC_IP = "127.3.3.40"
_ZERO_HEX = "0" * 64
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_PORT = re.compile(r"[0-9]{1,5}")


class _NodeFields(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    stable_id: str = ""
    name: str = ""
    """MagicDNS FQDN, trailing dot."""
    hostname: str | None = None
    """``Hostinfo.Hostname``."""
    user: int = 0
    key: str
    """``"nodekey:<64 lowercase hex>"``: the WireGuard public key."""
    disco_key: str | None = None
    """``"discokey:<64 lowercase hex>"``; None when absent or zero."""
    addresses: tuple[str, ...] = ()
    """The node's own tailnet prefixes, e.g. ``("100.64.0.2/32", "fd7a:115c:a1e0::2/128")``."""
    allowed_ips: tuple[str, ...] = ()
    """Prefixes routed to the node (Addresses plus subnet/exit routes)."""
    endpoints: tuple[str, ...] = ()
    """UDP endpoints, ``"1.2.3.4:41641"`` / ``"[fd00::1]:41641"``."""
    home_derp: int = 0
    """Home DERP region ID; 0 = none known."""
    key_expiry: str | None = None
    """RFC 3339; None = never expires."""
    expired: bool = False
    cap: int = 0
    """The node's capability version (0 = unknown)."""
    tags: tuple[str, ...] = ()
    primary_routes: tuple[str, ...] = ()
    cap_map: dict[str, tuple[str, ...]] = msgspec.field(default_factory=dict)
    """Capability -> its arguments, each as JSON text (tailcfg's RawMessage)."""


class Peer(_NodeFields, frozen=True, kw_only=True):
    """Another node of the tailnet."""

    online: bool | None = None
    """Connected to control; None = unknown."""
    last_seen: str | None = None
    """RFC 3339, set by control for offline peers."""


class SelfNode(_NodeFields, frozen=True, kw_only=True):
    """Our own node, as control sees it (``MapResponse.Node``)."""

    machine_authorized: bool = False


class Netmap(msgspec.Struct, frozen=True, kw_only=True):
    """The network map at one point of the stream (immutable; the builder makes new ones)."""

    self_node: SelfNode | None = None
    peers: tuple[Peer, ...] = ()
    """Sorted by ``id``."""
    derp_map: DERPMap | None = None
    dns: DNSConfig | None = None
    packet_filter: tuple[FilterRule, ...] | None = None
    """None = none received yet; ``()`` = deny all."""
    user_profiles: tuple[UserProfile, ...] = ()
    """Sorted by ``id``."""
    domain: str | None = None

    def peer(self, node_id: int) -> Peer | None:
        return next((p for p in self.peers if p.id == node_id), None)


class NetmapChange(msgspec.Struct, frozen=True, kw_only=True):
    """What one MapResponse changed; None / empty fields are unchanged."""

    upserted: tuple[Peer, ...] = ()
    """New or changed peers (whole values), sorted by id."""
    removed: tuple[int, ...] = ()
    self_node: SelfNode | None = None
    derp_map: DERPMap | None = None
    packet_filter: tuple[FilterRule, ...] | None = None
    dns: DNSConfig | None = None
    user_profiles: tuple[UserProfile, ...] = ()
    domain: str | None = None


def apply_change(netmap: Netmap, change: NetmapChange) -> Netmap:
    """The netmap after ``change`` (the subscriber side of `NetmapBuilder.apply`)."""
    peers = {p.id: p for p in netmap.peers}
    for node_id in change.removed:
        peers.pop(node_id, None)
    peers.update((p.id, p) for p in change.upserted)
    profiles = {u.id: u for u in netmap.user_profiles}
    profiles.update((u.id, u) for u in change.user_profiles)
    keep = lambda new, old: old if new is None else new  # noqa: E731
    return Netmap(
        self_node=keep(change.self_node, netmap.self_node),
        peers=tuple(peers[i] for i in sorted(peers)),
        derp_map=keep(change.derp_map, netmap.derp_map),
        dns=keep(change.dns, netmap.dns),
        packet_filter=keep(change.packet_filter, netmap.packet_filter),
        user_profiles=tuple(profiles[i] for i in sorted(profiles)),
        domain=keep(change.domain, netmap.domain),
    )


# --- validation of node fields ------------------------------------------------------


class MalformedNode(ValueError):
    """A node from control has an unusable field; ``reason`` is the counter name."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def _key(text: str, prefix: str, reason: str) -> str | None:
    """``prefix:<64 hex>`` lowercased; None for the zero key."""
    hexpart = text[len(prefix) :]
    if not text.startswith(prefix) or not _HEX64.fullmatch(hexpart):
        raise MalformedNode(reason, repr(text[:80]))
    hexpart = hexpart.lower()
    return None if hexpart == _ZERO_HEX else prefix + hexpart


def _node_key(text: str) -> str:
    key = _key(text, "nodekey:", "bad_key")
    if key is None:
        raise MalformedNode("zero_key", "all-zero node key")
    return key


def _prefixes(items: list[str] | None) -> tuple[str, ...]:
    out = []
    for s in items or ():
        try:
            if "/" not in s or "%" in s:
                raise ValueError(s)
            out.append(str(ipaddress.ip_interface(s)))
        except ValueError:
            raise MalformedNode("bad_address", repr(s[:80])) from None
    return tuple(out)


def _endpoints(items: list[str] | None) -> tuple[str, ...]:
    out = []
    for s in items or ():
        host, _, port = s.rpartition(":")
        try:
            v6 = host.startswith("[") and host.endswith("]")
            ip = ipaddress.ip_address(host[1:-1] if v6 else host)
            if ip.version != (6 if v6 else 4) or not _PORT.fullmatch(port) or int(port) > 65535:
                raise ValueError(s)
        except ValueError:
            raise MalformedNode("bad_endpoint", repr(s[:80])) from None
        out.append(f"[{ip}]:{port}" if v6 else f"{ip}:{port}")
    return tuple(out)


def _time(text: str | None) -> str | None:
    """RFC 3339 text, None for absent or Go's zero time."""
    return None if not text or text.startswith("0001-01-01T00:00:00") else text


def _cap_map(caps: dict[str, list[Any] | None] | None, legacy: list[str] | None = None):
    out = {k: tuple(msgspec.json.encode(a).decode() for a in v or ()) for k, v in (caps or {}).items()}
    for name in legacy or ():
        out.setdefault(name, ())
    return out


def _disco_key(text: str) -> str | None:
    return _key(text, "discokey:", "bad_disco_key")


# PeerChange field -> Peer field, converter; None (or 0 for ints) = unchanged.
_PATCH: tuple[tuple[str, str, Callable[[Any], Any]], ...] = (
    ("derp_region", "home_derp", int), ("cap", "cap", int), ("endpoints", "endpoints", _endpoints),
    ("key", "key", _node_key), ("disco_key", "disco_key", _disco_key), ("online", "online", bool),
    ("last_seen", "last_seen", _time), ("key_expiry", "key_expiry", _time),
    ("cap_map", "cap_map", _cap_map),
)  # fmt: skip


def _home_derp(n: Node) -> int:
    if n.home_derp:
        return n.home_derp
    host, _, port = (n.legacy_derp or "").rpartition(":")  # upstream ignores a bad one
    return int(port) if host == DERP_MAGIC_IP and _PORT.fullmatch(port) else 0


def _node_fields(n: Node) -> dict[str, Any]:
    addresses = _prefixes(n.addresses)
    return dict(
        id=n.id, stable_id=n.stable_id, name=n.name, user=n.user,
        hostname=n.hostinfo.hostname if n.hostinfo else None,
        key=_node_key(n.key), disco_key=_disco_key(n.disco_key) if n.disco_key else None,
        addresses=addresses,
        allowed_ips=addresses if n.allowed_ips is None else _prefixes(n.allowed_ips),
        endpoints=_endpoints(n.endpoints), home_derp=_home_derp(n),
        key_expiry=_time(n.key_expiry), expired=n.expired, cap=n.cap, tags=tuple(n.tags or ()),
        primary_routes=_prefixes(n.primary_routes), cap_map=_cap_map(n.cap_map, n.capabilities),
    )  # fmt: skip


def peer_from_node(n: Node) -> Peer:
    """A validated `Peer`; raises `MalformedNode`."""
    return Peer(**_node_fields(n), online=n.online, last_seen=_time(n.last_seen))


def self_from_node(n: Node) -> SelfNode:
    """A validated `SelfNode`; raises `MalformedNode`."""
    return SelfNode(**_node_fields(n), machine_authorized=n.machine_authorized)


def _rfc3339(unix: float) -> str:
    return datetime.datetime.fromtimestamp(unix, datetime.UTC).isoformat().replace("+00:00", "Z")


# --- the builder ---------------------------------------------------------------------


class NetmapBuilder:
    """Applies streamed MapResponses to the netmap. Owned by the control service.

    ``counters`` counts responses, keep-alives, and every drop by reason: ``drop_<reason>``
    for a malformed peer (removed), ``self_<reason>`` for a malformed own node (the old one
    is kept), ``*_unknown_peer`` for deltas naming IDs not in the map. ``drops`` lists the
    ``(node_id, reason)`` drops of the last `apply` call, for the service's log lines.
    """

    def __init__(self) -> None:
        self.counters: dict[str, int] = {}
        self.drops: list[tuple[int, str]] = []
        self.control_time: str | None = None
        """Control's clock (RFC 3339) from the last response that carried it."""
        self._self: SelfNode | None = None
        self._peers: dict[int, Peer] = {}
        self._derp: DERPMap | None = None
        self._dns: DNSConfig | None = None
        self._filters: dict[str, tuple[FilterRule, ...]] | None = None  # None: never sent
        self._profiles: dict[int, UserProfile] = {}
        self._domain: str | None = None
        self._before: dict[int, Peer | None] = {}  # peers touched by the current apply
        self._snapshot: Netmap | None = Netmap()

    def snapshot(self) -> Netmap:
        """The current netmap (cached until the next change)."""
        if self._snapshot is None:
            self._snapshot = Netmap(
                self_node=self._self, peers=tuple(self._peers[i] for i in sorted(self._peers)),
                derp_map=self._derp, dns=self._dns, packet_filter=self._packet_filter(),
                user_profiles=tuple(self._profiles[i] for i in sorted(self._profiles)),
                domain=self._domain,
            )  # fmt: skip
        return self._snapshot

    def _count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def _drop(self, node_id: int, reason: str) -> None:
        self._count(f"drop_{reason}")
        self.drops.append((node_id, reason))
        self._set(node_id, None)  # its real state is unknown: leave it out

    def _set(self, node_id: int, peer: Peer | None) -> None:
        self._before.setdefault(node_id, self._peers.get(node_id))
        if peer is None:
            self._peers.pop(node_id, None)
        else:
            self._peers[node_id] = peer

    def _upsert(self, n: Node) -> None:
        try:
            self._set(n.id, peer_from_node(n))
        except MalformedNode as exc:
            self._drop(n.id, exc.reason)

    def _packet_filter(self) -> tuple[FilterRule, ...] | None:
        if self._filters is None:
            return None
        # CapGrant (app capabilities) is not network access and may hold arbitrary JSON.
        rules = (r for key in sorted(self._filters) for r in self._filters[key])
        return tuple(msgspec.structs.replace(r, cap_grant=None) if r.cap_grant else r for r in rules)

    def apply(self, resp: MapResponse, *, now: float | None = None) -> NetmapChange | None:
        """Apply one response; return what changed, or None if nothing did.

        ``now`` (Unix seconds) is the LastSeen that ``PeerSeenChange: true`` sets;
        without it the response's ControlTime is used, and without that LastSeen stays.
        """
        self.drops = []
        self._count("responses")
        if resp.control_time:
            self.control_time = resp.control_time
        if resp.keep_alive:
            self._count("keepalives")
            return None
        old_self, old_derp, old_dns, old_domain = self._self, self._derp, self._dns, self._domain
        filters_sent = resp.packet_filter is not None or resp.packet_filters is not None
        old_filter = self._packet_filter() if filters_sent else None
        self._before = {}

        if resp.node is not None:
            try:
                self._self = self_from_node(resp.node)
            except MalformedNode as exc:
                self._count(f"self_{exc.reason}")
                self.drops.append((resp.node.id, f"self_{exc.reason}"))
        if resp.peers:
            self._apply_full(resp.peers)
        else:
            self._apply_peer_deltas(resp, now)

        profiles = [u for u in resp.user_profiles or () if self._profiles.get(u.id) != u]
        self._profiles.update((u.id, u) for u in profiles)
        if resp.derp_map is not None:
            self._derp = self._merge_derp(resp.derp_map)
        self._apply_filters(resp)
        if resp.dns_config is not None:
            self._dns = resp.dns_config
        if resp.domain:
            self._domain = resp.domain

        before, self._before = self._before, {}
        new_filter = self._packet_filter() if filters_sent else None
        peers = self._peers
        change = NetmapChange(
            upserted=tuple(peers[i] for i in sorted(before) if i in peers and peers[i] != before[i]),
            removed=tuple(i for i in sorted(before) if before[i] and i not in peers),
            self_node=self._self if self._self != old_self else None,
            derp_map=self._derp if self._derp != old_derp else None,
            packet_filter=new_filter if new_filter != old_filter else None,
            dns=self._dns if self._dns != old_dns else None,
            user_profiles=tuple(sorted(profiles, key=lambda u: u.id)),
            domain=self._domain if self._domain != old_domain else None,
        )
        if change == NetmapChange():
            self._count("no_change")
            return None
        self._snapshot = None
        return change

    def _apply_full(self, nodes: list[Node]) -> None:
        keep = {n.id for n in nodes}
        for node_id in [i for i in self._peers if i not in keep]:
            self._set(node_id, None)
        for n in nodes:
            self._upsert(n)

    def _apply_peer_deltas(self, resp: MapResponse, now: float | None) -> None:
        for node_id in resp.peers_removed or ():
            if node_id in self._peers:
                self._set(node_id, None)
            else:
                self._count("remove_unknown_peer")
        for n in resp.peers_changed or ():
            self._upsert(n)
        seen_now = _rfc3339(now) if now is not None else resp.control_time
        for node_id, seen in (resp.peer_seen_change or {}).items():
            if (p := self._peers.get(node_id)) is None:
                self._count("seen_unknown_peer")
            elif not seen or seen_now:
                self._set(node_id, msgspec.structs.replace(p, last_seen=seen_now if seen else None))
        for node_id, online in (resp.online_change or {}).items():
            if (p := self._peers.get(node_id)) is None:
                self._count("online_unknown_peer")
            else:
                self._set(node_id, msgspec.structs.replace(p, online=online))
        for pc in resp.peers_changed_patch or ():
            if (p := self._peers.get(pc.node_id)) is None:
                self._count("patch_unknown_peer")
                continue
            try:
                fields = {
                    dst: conv(v)
                    for src, dst, conv in _PATCH
                    if (v := getattr(pc, src)) is not None and not (type(v) is int and v == 0)
                }
            except MalformedNode as exc:
                self._drop(pc.node_id, exc.reason)
                continue
            self._set(pc.node_id, msgspec.structs.replace(p, **fields))

    def _merge_derp(self, new: DERPMap) -> DERPMap:
        old = self._derp
        regions = new.regions
        omit = new.omit_default_regions
        if regions is None and old is not None:
            regions, omit = old.regions, old.omit_default_regions
        nulls = sum(r is None for r in (regions or {}).values())
        if nulls:
            self._count("derp_null_region", nulls)
            regions = {k: r for k, r in regions.items() if r is not None}  # type: ignore[union-attr]
        home = new.home_params  # its only field is RegionScore: nil keeps the old one
        if old is not None and (home is None or home.region_score is None):
            home = old.home_params or home
        return DERPMap(home_params=home, regions=regions or {}, omit_default_regions=omit)

    def _apply_filters(self, resp: MapResponse) -> None:
        if resp.packet_filter is not None:
            self._filters = {**(self._filters or {}), "base": tuple(resp.packet_filter)}
        if (named := resp.packet_filters) is not None:
            filters = {} if "*" in named and named["*"] is None else dict(self._filters or {})
            for key, rules in named.items():
                if key == "*":  # only ever means "clear all" (with null)
                    continue
                if rules is None:
                    filters.pop(key, None)
                else:
                    filters[key] = tuple(rules)
            self._filters = filters
