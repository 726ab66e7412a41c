"""``sunbeam-ctl ip`` and ``sunbeam-ctl whois``: tailnet names <-> addresses, from the netmap.

Both read the netmap once, as ``peers`` does (`fetch_netmap`: the control service's PUB
socket through `watch.read_netmap`). A node is named as the proxy names it
(shared/netmap/names.py `NameTable`: an IP, the MagicDNS FQDN, its first label with or
without a search domain, the OS hostname; case-insensitive, trailing dot ignored), our own
node included. ``ping`` shares `find_peer` / `close_matches` / `unknown_peer` (peers only).

``ip [PEER] [-4|-6]``: the addresses of our node (no PEER) or of the node PEER names, one
per line, IPv4 first (like ``tailscale ip``)::

    100.64.0.3
    fd7a:115c:a1e0::3

``whois IP`` (also ``IP:port``, ``[IPv6]:port``): the node that owns the tailnet address,
its user from the netmap's ``user_profiles``; an address no node owns but a peer's subnet
route covers, or that a peer's exit node would carry (outside the tailnet's ranges), is
shown as *routed by* that peer, with whether we use that route (``accept_routes``, the
configured ``exit_node``: those the running proxy uses, else the config's, routing.py;
one more line when the config file now says otherwise).

``--json``: always one object. ``ip``: ``name`` (MagicDNS name, no trailing dot),
``hostname``, ``self``, ``addresses``, ``error`` (null when fine). ``whois``: ``ip``,
``node`` (name, hostname, id, stable_id, addresses, user {id, login_name, display_name},
tags, online, self, expired; or null), ``routed_by`` (name, hostname, id, ip, kind
"subnet"|"exit", prefix, accepted: we use this route, in_use: it carries this address),
``error``.

Exit codes: 0 found; 1 not running, no netmap, nothing has that name or address;
2 (``whois``) the argument is no IP address.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..shared.netmap import Netmap, Peer, SelfNode
from ..shared.netmap.names import NameTable
from ..shared.netmap.routes import (
    choose_exit_node,
    in_tailnet,
    offers_exit,
    subnet_routes,
)
from .client import discover
from .routing import routes_in_use
from .watch import read_netmap

if TYPE_CHECKING:
    from ..shared.config import Context

__all__ = ["close_matches", "fetch_netmap", "find_node", "find_peer", "ip_command", "node_ips", "owner_of",
           "parse_ip_arg", "unknown_peer", "whois", "whois_command"]

NETMAP_TIMEOUT = 5.0
NOT_RUNNING = "VPN: not running"
NO_NETMAP = "no netmap yet (the control service is not running or not registered yet)"
# tailscale's address ranges: an exit node does not carry them (ts:net/tsaddr)

Node = Peer | SelfNode
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def fetch_netmap(rundir: Path) -> Netmap | str:
    """The running sunbeam's netmap, or why there is none (`NOT_RUNNING`, `NO_NETMAP`)."""
    if not any(f.live for f in discover(Path(rundir))):
        return NOT_RUNNING
    netmap = read_netmap(Path(rundir), NETMAP_TIMEOUT)
    return NO_NETMAP if netmap is None else netmap


# -- names (pure) --------------------------------------------------------------------------------

def _names(peer: Peer) -> set[str]:
    """What a peer answers to: hostname, MagicDNS FQDN and its first label (lower case)."""
    fqdn = peer.name.lower().rstrip(".")
    return {n for n in ((peer.hostname or "").lower(), fqdn, fqdn.split(".")[0]) if n}


def close_matches(netmap: Netmap, target: str, limit: int = 3) -> list[str]:
    """Peer names and addresses that look like ``target`` (a typo, a prefix, another case)."""
    want = target.lower().rstrip(".")
    shown: dict[str, str] = {}  # candidate -> how to show it: the name it matched, shortest form
    for p in netmap.peers:
        fqdn = p.name.lower().rstrip(".")
        label = fqdn.split(".")[0]
        host = p.hostname or ""
        if host:
            shown.setdefault(host.lower(), host)
        if label:
            shown.setdefault(label, host if host.lower() == label else label)
            shown.setdefault(fqdn, shown[label])
        for a in p.addresses:
            ip = a.split("/")[0]
            shown.setdefault(ip, ip)
    prefixed = sorted(c for c in shown if len(want) >= 2 and c.startswith(want))
    fuzzy = difflib.get_close_matches(want, list(shown), n=limit, cutoff=0.75)
    out: list[str] = []
    for c in [*prefixed, *fuzzy]:
        if shown[c] not in out:
            out.append(shown[c])
    return out[:limit]


def unknown_peer(netmap: Netmap, target: str) -> str:
    """``"no peer called 'x'; did you mean a or b?"`` (else the peers there are)."""
    similar = close_matches(netmap, target)
    hint = f"; did you mean {' or '.join(similar)}?" if similar else (
        f"; peers: {', '.join(sorted(p.hostname or p.name for p in netmap.peers)[:8])}" if netmap.peers
        else "; the netmap has no peers")
    return f"no peer called {target!r}{hint}"


def find_peer(netmap: Netmap, target: str) -> tuple[Peer, str] | None:
    """The peer called ``target`` (hostname, MagicDNS name or one of its IPs) and the IP to
    ping: ``target`` itself when it is an IP, else the peer's first address."""
    want = target.lower().rstrip(".")
    for p in netmap.peers:
        ips = [a.split("/")[0] for a in p.addresses]
        if ips and (want in _names(p) or target in ips):
            return p, (target if target in ips else ips[0])
    return None


def _nodes(netmap: Netmap) -> list[Node]:
    return ([netmap.self_node] if netmap.self_node else []) + list(netmap.peers)


def node_ips(node: Node) -> list[str]:
    """The node's own addresses without prefix length, IPv4 first (else in its order)."""
    ips = [ipaddress.ip_interface(a).ip for a in node.addresses]
    return [str(ip) for ip in sorted(ips, key=lambda ip: ip.version)]


def owner_of(netmap: Netmap, ip: str | Address) -> Node | None:
    """The node (ours first, then the peers by id) that has ``ip`` among its Addresses."""
    addr = ipaddress.ip_address(ip)
    return next((n for n in _nodes(netmap) if any(ipaddress.ip_interface(a).ip == addr for a in n.addresses)), None)


def find_node(netmap: Netmap, target: str) -> Node | None:
    """The node ``target`` names (the proxy's name rules), or None."""
    addrs = NameTable.from_netmap(netmap).lookup(target)
    return owner_of(netmap, addrs[0]) if addrs else None


def _name(node: Node) -> str:
    return node.name.rstrip(".") or node.hostname or str(node.id)


# -- ip ---------------------------------------------------------------------------------------------

def _fail(doc: dict[str, Any], why: str, as_json: bool) -> int:
    doc["error"] = why
    if as_json:
        print(json.dumps(doc, indent=2))
    print(f"sunbeam-ctl: {why}", file=sys.stderr)
    return 1


def ip_command(rundir: Path, peer: str | None, family: int | None, as_json: bool) -> int:
    """``sunbeam-ctl ip [PEER] [-4|-6] [--json]``; returns the exit code."""
    doc: dict[str, Any] = {"name": None, "hostname": None, "self": peer is None, "addresses": [], "error": None}
    netmap = fetch_netmap(rundir)
    if isinstance(netmap, str):
        return _fail(doc, netmap, as_json)
    node = netmap.self_node if peer is None else find_node(netmap, peer)
    if node is None:
        return _fail(doc, NO_NETMAP if peer is None else unknown_peer(netmap, peer), as_json)
    ips = [ip for ip in node_ips(node) if family is None or ipaddress.ip_address(ip).version == family]
    doc.update(name=_name(node), hostname=node.hostname, self=isinstance(node, SelfNode), addresses=ips)
    if not ips:
        return _fail(doc, f"{_name(node)} has no {f'IPv{family} ' if family else ''}address", as_json)
    print(json.dumps(doc, indent=2) if as_json else "\n".join(ips))
    return 0


# -- whois --------------------------------------------------------------------------------------------

def parse_ip_arg(text: str) -> Address | None:
    """``IP``, ``[IPv6]``, ``IPv4:port`` or ``[IPv6]:port`` -> the address; None if none."""
    host = text.strip()
    if host.startswith("["):
        host, _, rest = host[1:].partition("]")
        if rest and not (rest[0] == ":" and rest[1:].isdigit()):
            return None
    elif host.count(":") == 1:
        host, _, port = host.partition(":")
        if not port.isdigit():
            return None
    try:
        return ipaddress.ip_address(host) if "%" not in host else None
    except ValueError:
        return None


def _user(netmap: Netmap, user_id: int) -> dict[str, Any] | None:
    profile = next((u for u in netmap.user_profiles if u.id == user_id), None)
    if profile is None:
        return None
    return {"id": profile.id, "login_name": profile.login_name, "display_name": profile.display_name}


def _routes_to(netmap: Netmap, addr: Address, accept_routes: bool, exit_peer: Peer | None) -> list[dict[str, Any]]:
    """The peers whose subnet routes cover ``addr`` (longest prefix first), then the exit
    nodes that would carry it (not for the tailnet's own ranges). ``accepted``: we use that
    route (accept_routes; the configured exit node); ``in_use``: it is the one that carries
    ``addr`` (the first accepted: the longest prefix wins)."""
    subnets: list[tuple[int, dict[str, Any]]] = []
    exits: list[dict[str, Any]] = []
    tailnet_addr = in_tailnet(addr)
    for p in netmap.peers:
        ips = node_ips(p)
        base = {"name": _name(p), "hostname": p.hostname, "id": p.id, "ip": ips[0] if ips else None}
        for prefix in subnet_routes(p):
            net = ipaddress.ip_network(prefix, strict=False)
            if addr.version == net.version and addr in net:
                subnets.append((net.prefixlen, {**base, "kind": "subnet", "prefix": prefix, "accepted": accept_routes}))
        if offers_exit(p) and not tailnet_addr:
            default = "0.0.0.0/0" if addr.version == 4 else "::/0"
            if default in p.allowed_ips:
                chosen = exit_peer is not None and exit_peer.id == p.id
                exits.append({**base, "kind": "exit", "prefix": default, "accepted": chosen})
    routes = [entry for _, entry in sorted(subnets, key=lambda s: -s[0])] + exits
    carrier = next((r for r in routes if r["accepted"]), None)
    return [{**r, "in_use": r is carrier} for r in routes]


def whois(netmap: Netmap, addr: Address, *, accept_routes: bool = False,
          exit_peer: Peer | None = None) -> dict[str, Any]:
    """The ``whois --json`` object for ``addr`` (``error`` set when nothing has or routes it)."""
    doc: dict[str, Any] = {"ip": str(addr), "node": None, "routed_by": [], "error": None}
    node = owner_of(netmap, addr)
    if node is not None:
        doc["node"] = {
            "name": _name(node), "hostname": node.hostname, "id": node.id, "stable_id": node.stable_id,
            "addresses": node_ips(node), "user": _user(netmap, node.user), "tags": list(node.tags),
            "online": node.online if isinstance(node, Peer) else None, "self": isinstance(node, SelfNode),
            "expired": node.expired,
        }
        return doc
    doc["routed_by"] = _routes_to(netmap, addr, accept_routes, exit_peer)
    if not doc["routed_by"]:
        doc["error"] = f"no node has {addr} and no peer routes it"
    return doc


def _who(user: dict[str, Any] | None) -> str:
    """``"alice@example.com (Alice), user id 1"``; the display name only when it differs."""
    if user is None:
        return "-"
    login, display = user["login_name"], user["display_name"]
    name = (login or "-") + (f" ({display})" if display and display != login else "")
    return f"{name}, user id {user['id']}"


def format_whois(doc: dict[str, Any]) -> str:
    """The text form of a `whois` object that found something."""
    node = doc["node"]
    if node is None:
        lines = [f"{doc['ip']}: no node has this address; routed by (not owned by):"]
        for r in doc["routed_by"]:
            what = "subnet route" if r["kind"] == "subnet" else "exit node"
            why = "accept_routes is off" if r["kind"] == "subnet" else "not the configured exit_node"
            if r["accepted"] and not r["in_use"]:
                why = "a more specific route wins"
            use = "in use" if r["in_use"] else f"not used: {why}"
            lines.append(f"  {r['name']} ({r['ip'] or '-'}): {what} {r['prefix']} ({use})")
        return "\n".join(lines)
    online = "this node" if node["self"] else {True: "yes", False: "no", None: "-"}[node["online"]]
    stable = node["stable_id"] if node["stable_id"] not in ("", str(node["id"])) else None
    rows = [
        ("node", node["name"] + (" (this node)" if node["self"] else "")),
        ("hostname", node["hostname"] or "-"),
        ("node id", f"{node['id']}" + (f" (stable id {stable})" if stable else "")),
        ("addresses", ", ".join(node["addresses"]) or "-"),
        ("user", _who(node["user"])),
        ("tags", ", ".join(node["tags"]) or "-"),
        ("online", "expired" if node["expired"] else online),
    ]
    return "\n".join(f"{k + ':':<11}{v}" for k, v in rows)


def whois_command(rundir: Path, target: str, as_json: bool, ctx: Context | None = None) -> int:
    """``sunbeam-ctl whois IP [--json]``; returns the exit code. The routes in use: the
    running proxy's settings, else ``ctx``'s (None: no config: none)."""
    addr = parse_ip_arg(target)
    doc: dict[str, Any] = {"ip": None, "node": None, "routed_by": [], "error": None}
    if addr is None:
        if as_json:
            print(json.dumps({**doc, "error": f"not an IP address: {target!r}"}, indent=2))
        print(f"sunbeam-ctl whois: not an IP address: {target!r} (give an IP, IP:port or [IPv6]:port)",
              file=sys.stderr)
        return 2
    doc["ip"] = str(addr)
    netmap = fetch_netmap(rundir)
    if isinstance(netmap, str):
        return _fail(doc, netmap, as_json)
    used = routes_in_use(rundir, ctx)
    doc = whois(netmap, addr, accept_routes=used.accept_routes,
                exit_peer=choose_exit_node(netmap, used.exit_node).peer)
    if doc["error"]:
        return _fail(doc, doc["error"], as_json)
    print(json.dumps(doc, indent=2) if as_json else format_whois(doc))
    if not as_json and used.note and doc["node"] is None:  # (only routed addresses depend on them)
        print(used.note)
    return 0
