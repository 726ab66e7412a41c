"""Which of a peer's AllowedIPs we route to it: subnet routes and the exit node (sans-IO).

Control sends each peer's ``AllowedIPs``: its own addresses, plus the routes it
advertises that the admin approved and that are primary for it (subnet routes such as
``192.168.1.0/24``, and ``0.0.0.0/0`` + ``::/0`` for an exit node). A client uses them as
tailscaled's wgcfg does (ts:wgengine/wgcfg/nmcfg/nmcfg.go ``WGCfg``):

- a default route (prefix length 0) only for the peer chosen as exit node;
- a *subnet* route -- any prefix that is not one of the peer's own single-address
  ``Addresses`` -- only with ``accept_routes`` (tailscale ``--accept-routes``);
- the peer's own addresses always.

Both the WireGuard workers (the device's AllowedIPs: what is encrypted to whom, and which
source addresses a peer may send from) and the proxy (where a connection goes) build their
tables from `routed_prefixes`, so they always agree.

The exit node is named in the config (``exit_node``) by a peer's tailnet IP, MagicDNS FQDN,
first label of it, or OS host name (case-insensitive, trailing dot ignored), tried in that
order: the first kind that names any peer decides (so a peer cannot take the name over by
choosing that OS hostname), and two peers named alike is a problem, not a guess. It is used
only while that peer offers a default route; otherwise `ExitChoice.problem` says why, and
nothing outside the tailnet is routed anywhere (tailscale does the same: traffic does not
silently leave through the local network).

A default route never carries the tailnet's own ranges (`TAILNET`): a tailnet address no
node has is nobody's, not the exit node's (`in_tailnet`).
"""

from __future__ import annotations

import ipaddress
from typing import NamedTuple

from . import Netmap, Peer

__all__ = [
    "TAILNET",
    "ExitChoice",
    "choose_exit_node",
    "in_tailnet",
    "offers_exit",
    "routed_prefixes",
    "subnet_routes",
]

DEFAULT_ROUTES = ("0.0.0.0/0", "::/0")
TAILNET = (ipaddress.ip_network("100.64.0.0/10"), ipaddress.ip_network("fd7a:115c:a1e0::/48"))
"""The CGNAT range and Tailscale's ULA prefix: where tailnet addresses live."""


def in_tailnet(ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    return any(addr in net for net in TAILNET)


def _is_default(prefix: str) -> bool:
    return prefix.endswith("/0")


def _own(peer: Peer) -> set[str]:
    return {a for a in peer.addresses if ipaddress.ip_interface(a).network.num_addresses == 1}


def subnet_routes(peer: Peer) -> tuple[str, ...]:
    """The subnet routes among ``peer``'s AllowedIPs (neither its own address nor a default route)."""
    own = _own(peer)
    return tuple(p for p in peer.allowed_ips if p not in own and not _is_default(p))


def offers_exit(peer: Peer) -> bool:
    """Whether ``peer`` is an approved exit node (a default route in its AllowedIPs)."""
    return any(_is_default(p) for p in peer.allowed_ips)


class ExitChoice(NamedTuple):
    peer: Peer | None
    """The exit node in use, or None."""
    problem: str | None
    """Why there is none although one is configured (None when fine or not configured)."""


def _norm(name: str) -> str:
    return name.lower().rstrip(".")


def _named(peers: tuple[Peer, ...], wanted: str) -> list[Peer]:
    """The peers ``wanted`` names, by the first kind of name that names any."""
    try:
        ip = ipaddress.ip_address(wanted)
    except ValueError:
        name = _norm(wanted)
        tiers = (lambda p: _norm(p.name) == name, lambda p: _norm(p.name).split(".", 1)[0] == name,
                 lambda p: _norm(p.hostname or "") == name)
        for tier in tiers:
            if found := [p for p in peers if tier(p)]:
                return found
        return []
    return [p for p in peers if any(ipaddress.ip_interface(a).ip == ip for a in p.addresses)]


def choose_exit_node(netmap: Netmap | None, wanted: str | None) -> ExitChoice:
    """The peer ``wanted`` (the config's ``exit_node``) names, if it offers an exit."""
    if not wanted:
        return ExitChoice(None, None)
    found = _named(netmap.peers if netmap is not None else (), wanted)
    if not found:
        return ExitChoice(None, f"exit node {wanted!r} is not a peer of this tailnet")
    if len(found) > 1:
        names = ", ".join(_norm(p.name) or str(p.id) for p in found)
        return ExitChoice(None, f"exit node {wanted!r} is ambiguous ({names}): name it by MagicDNS name or IP")
    peer = found[0]
    if not offers_exit(peer):
        why = "its key expired" if peer.expired else "it offers no exit route (or it is not approved)"
        return ExitChoice(None, f"exit node {wanted!r} ({_norm(peer.name) or peer.hostname}) is not usable: {why}")
    return ExitChoice(peer, None)


def routed_prefixes(peer: Peer, *, accept_routes: bool, exit_node: Peer | None) -> tuple[str, ...]:
    """The prefixes routed to ``peer``, in its AllowedIPs order (see the module docstring)."""
    own = _own(peer)
    is_exit = exit_node is not None and exit_node.id == peer.id
    out = []
    for prefix in peer.allowed_ips:
        if _is_default(prefix):
            if is_exit:
                out.append(prefix)
        elif prefix in own or accept_routes:
            out.append(prefix)
    return tuple(out)
