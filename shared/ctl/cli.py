"""`sunbeam-ctl`: talk to the running sunbeam services over their ctl sockets.

    sunbeam-ctl [--config PATH] [--context NAME] status [--json]   VPN state and each service's health
    sunbeam-ctl [--config PATH] [--context NAME] netmap [--json]   the netmap the control service publishes
    sunbeam-ctl [--config PATH] [--context NAME] ping PEER [-c N]  ICMP echo to a peer (name or IP)
    sunbeam-ctl [--config PATH] [--context NAME] stop              ask every service to stop

Exit codes: 0 ok; 1 nothing running / a service did not answer; 2 usage or config error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys

import msgspec
import zmq

from ..config import ConfigError, load_config
from ..messages.ctl import Ack, ErrorReply, ServiceHealth, StatusReply, StatusRequest, StopRequest
from ..messages.netmap import ControlStatus
from .client import CtlTimeout, discover, request
from .watch import NetmapWatch


def _vpn_lines(control: ControlStatus | None) -> tuple[list[str], bool]:
    """The user-facing summary and whether it is healthy."""
    if control is None:
        return ["VPN: not connected (control service not running)"], False
    addrs = ", ".join(a.split("/")[0] for a in control.addresses) or "none yet"
    if control.state == "Running":
        return [
            "VPN: running", f"addresses: {addrs}", f"peers: {control.peers}",
            f"derp home: region {control.home_derp}" if control.home_derp else "derp home: none yet",
        ], True
    if control.state == "Error":
        return [f"VPN: error: {control.reason}"], False
    reason = f" ({control.reason})" if control.reason else ""
    return [f"VPN: {control.state.lower()}{reason}", f"addresses: {addrs}"], False


def _status(rundir, as_json: bool) -> int:
    found = discover(rundir)
    live = [f for f in found if f.live]
    rows, failed = [], []
    control: ControlStatus | None = None
    for f in live:
        try:
            reply = request(f.path, StatusRequest())
        except CtlTimeout:
            failed.append(f.service)
            continue
        if isinstance(reply, StatusReply):
            rows.append(reply.health)
            control = reply.control or control
        elif isinstance(reply, ServiceHealth):
            rows.append(reply)
    lines, healthy = _vpn_lines(control)
    if as_json:
        print(json.dumps({"running": bool(rows), "control": msgspec.to_builtins(control) if control else None,
                          "services": [msgspec.to_builtins(r) for r in rows],
                          "not_answering": failed, "stale": [f.service for f in found if not f.live]}, indent=2))
    elif not rows:
        print("VPN: not running")
    else:
        print("\n".join(lines))
        print("services:")
        for r in rows:
            since = dt.datetime.fromtimestamp(r.started_at).strftime("%H:%M:%S")
            drops = sum(v for k, v in r.counters.items() if "drop" in k or "bad" in k or "malformed" in k)
            print(f"  {r.service:10} pid {r.pid:<8} {r.state:9} since {since}  drops {drops}")
        for name in failed:
            print(f"  {name:10} not answering")
    return 0 if rows and healthy and not failed else 1


def _netmap(rundir, as_json: bool, timeout: float = 5.0) -> int:
    watch = NetmapWatch(rundir)
    try:
        netmap = watch.wait_for(lambda nm: True, timeout)
    except TimeoutError:
        print("VPN: no netmap (control service not running or not registered yet)")
        return 1
    finally:
        watch.close()
    if as_json:
        print(json.dumps(msgspec.to_builtins(netmap), indent=2))
        return 0
    me = netmap.self_node
    if me:
        print(f"self: {me.name or me.hostname} id {me.id} {', '.join(me.addresses)}")
    for p in netmap.peers:
        state = {True: "online", False: "offline", None: "?"}[p.online]
        print(f"  {p.hostname or p.name:20} id {p.id:<5} {', '.join(a.split('/')[0] for a in p.addresses):40} "
              f"derp {p.home_derp:<5} {state}")
    return 0


def _stop(rundir) -> int:
    live = [f for f in discover(rundir) if f.live]
    if not live:
        print("VPN: not running")
        return 1
    print("Asking services to stop...")
    ok = True
    for f in live:
        try:
            reply = request(f.path, StopRequest(reason="sunbeam-ctl stop"))
        except CtlTimeout:
            print(f"  {f.service}: no answer")
            ok = False
            continue
        if isinstance(reply, ErrorReply):
            print(f"  {f.service}: {reply.message}")
            ok = False
        elif isinstance(reply, Ack):
            print(f"  {f.service}: acknowledged")
    return 0 if ok else 1


def _find_peer(rundir, target: str) -> tuple[str, str] | None:
    """(name, IPv4-or-first address) of the peer called ``target`` (hostname, MagicDNS name or IP)."""
    watch = NetmapWatch(rundir)
    try:
        netmap = watch.wait_for(lambda nm: True, 5.0)
    except TimeoutError:
        return None
    finally:
        watch.close()
    want = target.lower().rstrip(".")
    for p in netmap.peers:
        ips = [a.split("/")[0] for a in p.addresses]
        names = {(p.hostname or "").lower(), p.name.lower().rstrip("."), p.name.lower().split(".")[0]}
        if want in names or target in ips:
            return (p.hostname or p.name), (target if target in ips else ips[0])
    return None


def _ping(rundir, target: str, count: int) -> int:
    from ..messages.codec import BadMessage
    from ..runtime.rundir import endpoint

    found = _find_peer(rundir, target)
    if found is None:
        print(f"sunbeam-ctl: no peer called {target!r} in the netmap (or the VPN is not running)")
        return 1
    name, ip = found
    # the proxy owns the IP layer: it sends the echoes and matches the replies
    from sunbeam.services.proxy.ping import PING_REPLY_CODEC, PING_REQUEST_CODEC, PingPeer

    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, int((count * 2.0 + 5) * 1000))
    sock.connect(endpoint(rundir, "proxy-ping"))
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
    for rtt in result.rtts:
        print(f"pong from {name} ({ip}) in {rtt * 1000:.1f} ms" if rtt is not None else f"no reply from {name} ({ip})")
    return 0 if any(r is not None for r in result.rtts) else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="sunbeam-ctl", description=__doc__.splitlines()[0])
    ap.add_argument("--config")
    ap.add_argument("--context")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p_status = sub.add_parser("status", help="show each service's health")
    p_status.add_argument("--json", action="store_true")
    p_netmap = sub.add_parser("netmap", help="show the netmap the control service publishes")
    p_netmap.add_argument("--json", action="store_true")
    p_ping = sub.add_parser("ping", help="ICMP echo to a peer through the tunnel")
    p_ping.add_argument("peer")
    p_ping.add_argument("-c", "--count", type=int, default=3)
    sub.add_parser("stop", help="ask every service to stop")
    args = ap.parse_args(argv)
    try:
        # only the runtime dir is needed here: no auth key required to ask for status
        ctx = load_config(args.config, context=args.context, need_auth=False)
    except ConfigError as exc:
        print(f"sunbeam-ctl: config error: {exc}", file=sys.stderr)
        return 2
    if args.cmd == "status":
        return _status(ctx.runtime_dir, args.json)
    if args.cmd == "netmap":
        return _netmap(ctx.runtime_dir, args.json)
    if args.cmd == "ping":
        return _ping(ctx.runtime_dir, args.peer, max(1, min(args.count, 100)))
    return _stop(ctx.runtime_dir)


if __name__ == "__main__":
    sys.exit(main())
