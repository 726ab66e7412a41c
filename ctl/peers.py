"""``sunbeam-ctl peers`` and ``sunbeam-ctl ping``: each peer's path, handshake and traffic.

Two sources, joined by node key:

- the netmap (the control service's PUB socket, read once with `NetmapWatch`): name, id,
  addresses, online;
- every live wg worker's ctl socket (`PeersRequest` -> `PeersReply`, one `PeerStats` per
  peer the worker owns): path, UDP endpoint, DERP region, last handshake, rx/tx bytes.

The table, sorted by name (a peer no worker reported shows ``-`` / ``never``)::

    NAME    ADDRESSES                      ONLINE  PATH                   LAST HANDSHAKE  RX       TX     ROUTES
    peer-1  100.64.0.1, fd7a:115c:a1e0::1  yes     DERP(999)              12s ago         1.2 KiB  880 B  -
    peer-2  100.64.0.2                     no      direct 10.0.0.2:41641  never           0 B      0 B    192.168.1.0/24 (not accepted); exit node (in use)
    peer-3  100.64.0.4                     expired -                      never           0 B      0 B    -

A peer whose node key expired shows ``expired`` in the ONLINE column: the control service
publishes it without routes (services/control/expiry.py), so nothing is sent to it.

ROUTES (exitnode.py `format_routes`): the subnet routes the peer offers, ``accepted`` or
not (the context's ``accept_routes``), and ``exit node`` when it offers one, ``(in use)``
when it is the context's ``exit_node`` (both as the running proxy uses them, else the
config's, routing.py; one more line when the config file now says otherwise).

``--json``: a list of objects, one per peer, raw numbers: ``name``, ``id``, ``key``,
``addresses`` (without prefix length), ``online`` (true/false/null = unknown), ``expired``
(its node key expired: nothing is sent to it), ``key_expiry`` (RFC 3339 or null), ``path``
(``"direct"`` | ``"derp"`` | ``""``), ``endpoint``, ``derp_region``, ``worker`` (null: no
worker reported it), ``last_handshake`` (unix seconds, 0 = never), ``handshake_age``
(seconds, null = never), ``rx_bytes``, ``tx_bytes``; ``subnet_routes`` (the prefixes it
offers), ``offers_exit``, ``exit_node`` (it is the exit node we use), ``routes_in_use``
(the prefixes beyond its own addresses we route to it).

``ping PEER``: the proxy (REP ``proxy-ping``) sends the ICMP echoes and times the replies;
then the worker owning the peer says which path it arrives on; one line per echo::

    pong from peer-2 (100.64.0.2) via DERP(999) in 3.1 ms
    pong from peer-2 (100.64.0.2) via 10.0.0.2:41641 in 0.4 ms

Exit codes: 0 ok (``peers``: the VPN runs, even with no peers; ``ping``: any echo
answered); 1 not running, no netmap, a worker or the proxy did not answer, no reply.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import zmq

from ..shared.channels import PROXY_PING
from ..shared.config import Context
from ..shared.messages.codec import BadMessage
from ..shared.messages.ctl import PeersReply, PeersRequest, PeerStats
from ..shared.netmap import Netmap, Peer
from ..shared.netmap.routes import choose_exit_node
from .client import ask_each, discover
from .exitnode import format_routes, route_facts
from .lookup import close_matches, find_peer, unknown_peer
from .routing import routes_in_use
from .watch import read_netmap

__all__ = ["close_matches", "collect_stats", "find_peer", "format_ago", "format_bytes", "format_path", "format_table", "peer_rows",
           "peers_command", "ping_command", "via"]

NETMAP_TIMEOUT = 5.0
_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")
_HEADER = ("NAME", "ADDRESSES", "ONLINE", "PATH", "LAST HANDSHAKE", "RX", "TX", "ROUTES")


# -- human formatting -----------------------------------------------------------------------

def format_ago(then: float, now: float) -> str:
    """``"12s ago"``, ``"3m ago"``, ``"5h ago"``, ``"2d ago"``; ``"never"`` for 0."""
    if not then:
        return "never"
    age = max(0, int(now - then))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if age >= size:
            return f"{age // size}{unit} ago"
    return f"{age}s ago"


def format_bytes(n: int) -> str:
    """``"880 B"``, ``"1.2 KiB"``, ``"3.0 MiB"`` (binary units)."""
    if n < 1024:
        return f"{n} B"
    value = n / 1024
    for unit in _UNITS[:-1]:
        if round(value, 1) < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} {_UNITS[-1]}"


def via(path: str, endpoint: str, derp_region: int) -> str | None:
    """Where the peer's traffic comes from: ``"10.0.0.2:41641"``, ``"DERP(999)"``, or None."""
    if path == "direct":
        return endpoint
    if path == "derp":
        return f"DERP({derp_region})"
    return None


def format_path(path: str, endpoint: str, derp_region: int) -> str:
    """The PATH column: ``"direct 10.0.0.2:41641"``, ``"DERP(999)"``, or ``"-"``."""
    where = via(path, endpoint, derp_region)
    if where is None:
        return "-"
    return f"direct {where}" if path == "direct" else where


# -- the join (pure) --------------------------------------------------------------------------

def peer_rows(netmap: Netmap, stats: list[PeerStats], now: float, *, accept_routes: bool = False,
              exit_peer: Peer | None = None) -> list[dict[str, Any]]:
    """One dict per netmap peer, sorted by name: the netmap's facts joined with the
    worker's `PeerStats` of the same key (stats for keys not in the netmap are left out),
    and its routes (`route_facts`: offered, and used with ``accept_routes`` / ``exit_peer``)."""
    by_key = {s.key: s for s in stats}
    rows: list[dict[str, Any]] = []
    for p in netmap.peers:
        s = by_key.get(p.key)
        hs = s.last_handshake if s else 0.0
        rows.append({
            "name": p.hostname or p.name, "id": p.id, "key": p.key,
            "addresses": [a.split("/")[0] for a in p.addresses], "online": p.online,
            "expired": p.expired, "key_expiry": p.key_expiry,
            "path": s.path if s else "", "endpoint": s.endpoint if s else "",
            "derp_region": s.derp_region if s else 0, "worker": s.worker if s else None,
            "last_handshake": hs, "handshake_age": max(0.0, now - hs) if hs else None,
            "rx_bytes": s.rx_bytes if s else 0, "tx_bytes": s.tx_bytes if s else 0,
            **route_facts(p, accept_routes=accept_routes, exit_peer=exit_peer),
        })
    rows.sort(key=lambda r: (r["name"].lower(), r["id"]))
    return rows


def format_table(rows: list[dict[str, Any]], now: float) -> str:
    """The aligned text table of `peer_rows` (no trailing newline)."""
    cells = [_HEADER]
    for r in rows:
        cells.append((
            r["name"], ", ".join(r["addresses"]) or "-",
            "expired" if r.get("expired") else {True: "yes", False: "no", None: "?"}[r["online"]],
            format_path(r["path"], r["endpoint"], r["derp_region"]), format_ago(r["last_handshake"], now),
            format_bytes(r["rx_bytes"]), format_bytes(r["tx_bytes"]), format_routes(r),
        ))
    widths = [max(len(row[i]) for row in cells) for i in range(len(_HEADER))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


# -- I/O ----------------------------------------------------------------------------------------

def _read_netmap(rundir: Path) -> Netmap | None:
    return read_netmap(rundir, NETMAP_TIMEOUT)


def collect_stats(rundir: Path) -> tuple[list[PeerStats], list[str]]:
    """Every live wg worker's `PeerStats`, and the workers that did not answer."""
    stats: list[PeerStats] = []
    workers = [f for f in discover(Path(rundir)) if f.live and f.service.startswith("wg-")]
    replies, failed = ask_each(workers, PeersRequest())
    for f, reply in replies:
        if isinstance(reply, PeersReply):
            stats.extend(reply.peers)
        else:  # an ErrorReply: a worker that does not know PeersRequest
            failed.append(f.service)
    return stats, failed


def _not_running(why: str, as_json: bool) -> int:
    """Say why there is nothing to show (``--json``: an empty list, the reason on stderr)."""
    if as_json:
        print("[]")
        print(f"sunbeam-ctl: {why}", file=sys.stderr)
    else:
        print(why)
    return 1


def peers_command(rundir: Path, as_json: bool, ctx: Context | None = None) -> int:
    """``sunbeam-ctl peers [--json]``; returns the exit code. Which routes we use: the
    running proxy's settings, else ``ctx``'s (None: no config: none)."""
    if not any(f.live for f in discover(Path(rundir))):
        return _not_running("VPN: not running", as_json)
    netmap = _read_netmap(rundir)
    if netmap is None:
        return _not_running("VPN: not running (no netmap: the control service is not running or not registered yet)",
                            as_json)
    stats, failed = collect_stats(rundir)
    now = time.time()
    used = routes_in_use(rundir, ctx)
    exit_peer = choose_exit_node(netmap, used.exit_node).peer
    rows = peer_rows(netmap, stats, now, accept_routes=used.accept_routes, exit_peer=exit_peer)
    if as_json:
        print(json.dumps(rows, indent=2))
    elif rows:
        print(format_table(rows, now))
        if used.note:
            print(used.note)
    else:
        print("no peers")
    for service in failed:
        print(f"sunbeam-ctl: {service} did not answer; the peers it owns show no path", file=sys.stderr)
    return 1 if failed else 0


def _peer_path(rundir: Path, key: str) -> str | None:
    """``via`` of the peer ``key``, from the wg worker that lists it (None: nobody does)."""
    stats, _ = collect_stats(rundir)
    for s in stats:
        if s.key == key:
            return via(s.path, s.endpoint, s.derp_region)
    return None


def ping_command(rundir: Path, target: str, count: int) -> int:
    """``sunbeam-ctl ping PEER [-c COUNT]``; returns the exit code."""
    # the proxy owns the IP layer: it sends the echoes and matches the replies
    from ..shared.messages.ping import (
        PING_REPLY_CODEC,
        PING_REQUEST_CODEC,
        PingPeer,
    )

    if not any(f.live for f in discover(Path(rundir))):
        print("sunbeam-ctl: VPN: not running")
        return 1
    netmap = _read_netmap(rundir)
    if netmap is None:
        print("sunbeam-ctl: no netmap yet (the control service is not running or not registered yet)")
        return 1
    found = find_peer(netmap, target)
    if found is None:
        print(f"sunbeam-ctl: {unknown_peer(netmap, target)}")
        return 1
    peer, ip = found
    name = peer.hostname or peer.name
    sock: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, int((count * 2.0 + 5) * 1000))
    sock.connect(PROXY_PING.endpoint(rundir))
    try:
        sock.send(PING_REQUEST_CODEC.encode(PingPeer(dst_ip=ip, count=count, timeout=2.0)))
        result = PING_REPLY_CODEC.decode(sock.recv())
    except (zmq.Again, BadMessage):
        print("sunbeam-ctl: the proxy service did not answer")
        return 1
    finally:
        sock.close()
    if result.error:
        print(f"sunbeam-ctl: ping {name}: {result.error}")
        return 1
    where = _peer_path(rundir, peer.key) if any(r is not None for r in result.rtts) else None
    path = f" via {where}" if where else ""
    for rtt in result.rtts:
        print(f"pong from {name} ({ip}){path} in {rtt * 1000:.1f} ms" if rtt is not None
              else f"no reply from {name} ({ip})")
    return 0 if any(r is not None for r in result.rtts) else 1
