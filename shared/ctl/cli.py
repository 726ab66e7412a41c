"""`sunbeam-ctl`: start, stop and ask the running sunbeam services over their ctl sockets.

    sunbeam-ctl [--config PATH] [--context NAME] connect [--foreground] [--timeout S]
                                                  start the pipeline (supervisord), wait
                                                  until connected, print the addresses
    sunbeam-ctl ... status [--json]               VPN state and each service's health
    sunbeam-ctl ... peers [--json]                peers: addresses, online, path, handshake, bytes
    sunbeam-ctl ... netmap [--json]               the netmap the control service publishes
    sunbeam-ctl ... ping PEER [-c N]              ICMP echo to a peer (name or IP), with the path
    sunbeam-ctl ... stop | disconnect             stop every service and supervisord

``--config`` / ``--context`` may also follow the subcommand.
Exit codes: 0 ok; 1 nothing running, refused or failed, or a service did not answer;
2 usage or config error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys

import msgspec

from ..config import ConfigError, load_config
from ..messages.ctl import ServiceHealth, StatusReply, StatusRequest
from ..messages.netmap import ControlStatus
from ..runtime.rundir import RundirError
from . import daemon
from .client import ask_each, discover
from .peers import peers_command, ping_command
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
    rows = []
    control: ControlStatus | None = None
    replies, failed = ask_each(live, StatusRequest())
    for _f, reply in replies:
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


def main(argv: list[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help="config file")
    common.add_argument("--context", default=argparse.SUPPRESS, help="context name")
    ap = argparse.ArgumentParser(prog="sunbeam-ctl", description=__doc__.splitlines()[0], parents=[common])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p_connect = sub.add_parser("connect", parents=[common], help="start sunbeam and wait until connected")
    p_connect.add_argument("--foreground", action="store_true", help="stay attached; Ctrl-C stops sunbeam")
    p_connect.add_argument("--timeout", type=float, default=daemon.CONNECT_TIMEOUT, help="seconds to wait")
    p_status = sub.add_parser("status", parents=[common], help="show the VPN state and each service's health")
    p_status.add_argument("--json", action="store_true")
    p_netmap = sub.add_parser("netmap", parents=[common], help="show the netmap the control service publishes")
    p_netmap.add_argument("--json", action="store_true")
    p_peers = sub.add_parser("peers", parents=[common], help="peers: addresses, online, path, handshake, bytes")
    p_peers.add_argument("--json", action="store_true")
    p_ping = sub.add_parser("ping", parents=[common], help="ICMP echo to a peer through the tunnel")
    p_ping.add_argument("peer")
    p_ping.add_argument("-c", "--count", type=int, default=3)
    for name in ("stop", "disconnect"):
        sub.add_parser(name, parents=[common], help="stop sunbeam")
    args = ap.parse_args(argv)
    config, context = getattr(args, "config", None), getattr(args, "context", None)
    try:
        # the daemon's services need the auth key; asking them things needs only the runtime dir
        ctx = load_config(config, context=context, need_auth=args.cmd == "connect")
    except ConfigError as exc:
        print(f"sunbeam-ctl: config error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.cmd == "connect":
            return daemon.connect(ctx, config=config, foreground=args.foreground, timeout=args.timeout)
        if args.cmd == "status":
            return _status(ctx.runtime_dir, args.json)
        if args.cmd == "netmap":
            return _netmap(ctx.runtime_dir, args.json)
        if args.cmd == "peers":
            return peers_command(ctx.runtime_dir, args.json)
        if args.cmd == "ping":
            return ping_command(ctx.runtime_dir, args.peer, max(1, min(args.count, 100)))
        return daemon.stop(ctx.runtime_dir)
    except RundirError as exc:
        print(f"sunbeam-ctl: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
