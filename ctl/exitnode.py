"""``sunbeam-ctl exit-node list``, and the routes column of ``sunbeam-ctl peers``.

A peer offers an exit node when its AllowedIPs hold a default route (approved by the
admin; shared/netmap/routes.py `offers_exit`); it offers subnet routes when they hold
other prefixes than its own addresses (`subnet_routes`). Whether we use them is the
context's business: subnet routes with ``accept_routes``, one exit node named by
``exit_node`` (`choose_exit_node`, which also says why a configured one is not usable), as
the running proxy read them when it started (routing.py; the config the CLI loads only
when the proxy does not answer). When the config file now says otherwise, one more line
says so.

``exit-node list`` (like ``tailscale exit-node list``), sorted by name::

    IP          NAME     ONLINE  IN USE
    100.64.0.3  gateway  yes     yes

then one line: the exit node in use, why the configured one is not usable (its
``problem``), or that none is configured. No peer offering one: ``no exit nodes: no peer
offers one``. ``--json``: one object: ``exit_nodes`` (name, hostname, magicdns_name, id,
ip, addresses, online, expired, in_use), ``configured`` (the context's ``exit_node`` in the
config file now, null when none or no config), ``running_exit_node`` (only when the running
proxy answered: the ``exit_node`` it uses, null for none), ``in_use`` (the MagicDNS name or
null), ``problem``, ``error`` (null, or why nothing could be listed).

Exit codes: 0 listed (also when none is offered, or the configured one is not usable);
1 not running or no netmap.
"""

from __future__ import annotations

import ipaddress
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..shared.netmap import Netmap, Peer
from ..shared.netmap.routes import ExitChoice, choose_exit_node, offers_exit, routed_prefixes, subnet_routes
from .lookup import fetch_netmap, node_ips
from .routing import routes_in_use

if TYPE_CHECKING:
    from ..shared.config import Context

__all__ = ["exit_node_list_command", "exit_rows", "format_exit_table", "format_routes", "route_facts"]

_HEADER = ("IP", "NAME", "ONLINE", "IN USE")


def route_facts(peer: Peer, *, accept_routes: bool, exit_peer: Peer | None) -> dict[str, Any]:
    """What ``peers`` adds per peer: ``subnet_routes`` it offers, whether it ``offers_exit``,
    whether it is the ``exit_node`` we use, and ``routes_in_use``: the prefixes beyond its own
    addresses that we route to it."""
    own = {str(ipaddress.ip_interface(a)) for a in peer.addresses}
    used = routed_prefixes(peer, accept_routes=accept_routes, exit_node=exit_peer)
    return {
        "subnet_routes": list(subnet_routes(peer)), "offers_exit": offers_exit(peer),
        "exit_node": exit_peer is not None and exit_peer.id == peer.id,
        "routes_in_use": [p for p in used if p not in own],
    }


def format_routes(row: dict[str, Any]) -> str:
    """The ROUTES cell: ``"192.168.1.0/24 (accepted)"``, ``"... (not accepted)"``,
    ``"exit node (in use)"``, ``"exit node"``, joined by ``"; "``; ``"-"`` for none."""
    parts = []
    if row.get("subnet_routes"):
        used = any(p in row.get("routes_in_use", ()) for p in row["subnet_routes"])
        parts.append(f"{', '.join(row['subnet_routes'])} ({'accepted' if used else 'not accepted'})")
    if row.get("offers_exit"):
        parts.append("exit node (in use)" if row.get("exit_node") else "exit node")
    return "; ".join(parts) or "-"


def _short(peer: Peer) -> str:
    return peer.hostname or peer.name.rstrip(".") or str(peer.id)


def exit_rows(netmap: Netmap, choice: ExitChoice) -> list[dict[str, Any]]:
    """One dict per peer that offers an exit node, sorted by name."""
    rows: list[dict[str, Any]] = []
    for p in netmap.peers:
        if not offers_exit(p):
            continue
        ips = node_ips(p)
        rows.append({
            "name": _short(p), "hostname": p.hostname, "magicdns_name": p.name.rstrip("."), "id": p.id,
            "ip": ips[0] if ips else None, "addresses": ips, "online": p.online, "expired": p.expired,
            "in_use": choice.peer is not None and choice.peer.id == p.id,
        })
    rows.sort(key=lambda r: (r["name"].lower(), r["id"]))
    return rows


def format_exit_table(rows: list[dict[str, Any]]) -> str:
    """The aligned table of `exit_rows` (no trailing newline)."""
    cells = [_HEADER]
    for r in rows:
        online = "expired" if r["expired"] else {True: "yes", False: "no", None: "?"}[r["online"]]
        cells.append((r["ip"] or "-", r["name"], online, "yes" if r["in_use"] else "-"))
    widths = [max(len(row[i]) for row in cells) for i in range(len(_HEADER))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


def _verdict(configured: str | None, choice: ExitChoice) -> str:
    if choice.problem:
        return choice.problem
    if choice.peer is not None:
        ips = node_ips(choice.peer)
        return f"in use: {_short(choice.peer)} ({ips[0] if ips else '-'}), exit_node = {configured!r}"
    return "no exit node in use (exit_node is not set in the context)"


def exit_node_list_command(rundir: Path, as_json: bool, ctx: Context | None = None) -> int:
    """``sunbeam-ctl exit-node list [--json]``; returns the exit code. The exit node in use:
    the running proxy's ``exit_node``, else ``ctx``'s (None: no config: none)."""
    doc: dict[str, Any] = {"exit_nodes": [], "configured": (ctx.exit_node if ctx else None) or None,
                           "in_use": None, "problem": None, "error": None}
    netmap = fetch_netmap(rundir)
    if isinstance(netmap, str):
        doc["error"] = netmap
        if as_json:
            print(json.dumps(doc, indent=2))
        print(f"sunbeam-ctl: {netmap}", file=sys.stderr)
        return 1
    used = routes_in_use(rundir, ctx)
    exit_node = used.exit_node
    choice = choose_exit_node(netmap, exit_node)
    rows = exit_rows(netmap, choice)
    if used.running is not None:
        doc["running_exit_node"] = used.running.exit_node or None
    doc.update(exit_nodes=rows, problem=choice.problem,
               in_use=choice.peer.name.rstrip(".") or _short(choice.peer) if choice.peer else None)
    if as_json:
        print(json.dumps(doc, indent=2))
        return 0
    print(format_exit_table(rows) if rows else "no exit nodes: no peer offers one")
    print(_verdict(exit_node, choice))
    if used.note:
        print(used.note)
    return 0
