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
import sys

from ..config import ConfigError, load_config
from ..runtime.rundir import RundirError
from . import daemon
from .peers import peers_command, ping_command
from .status import netmap_command, status_command


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
            return status_command(ctx.runtime_dir, args.json)
        if args.cmd == "netmap":
            return netmap_command(ctx.runtime_dir, args.json)
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
