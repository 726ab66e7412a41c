"""`sunbeam-refnet`: the real reference network (Headscale + tailscaled peers) in a private netns.

    sunbeam-refnet install                      build the pinned Go binaries into the cache
    sunbeam-refnet up [--peers N] [--json] [--derp-only] [--tls] [--name NAME]
    sunbeam-refnet show [--json] [--name NAME]  describe a running network
    sunbeam-refnet down [--name NAME]           remove every process, the namespace, temp files
    sunbeam-refnet demo [--keep]                up, join sunbeam to it, show traffic both ways, down

DERP-only mode: ``--derp-only`` or ``TS_DEBUG_ALWAYS_USE_DERP=1`` in the environment.
``--tls``: Headscale serves HTTPS (and DERP over TLS) with a certificate from a throwaway CA
made at ``up``; the CA's path is printed (a sunbeam context's ``ca_file``).
Needs root (network namespaces). Nothing started here talks outside loopback and the namespace.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys

from . import network
from .install import InstallError, install


def _log(msg: str) -> None:
    print(f"==> {msg}", file=sys.stderr, flush=True)


def describe(info: dict) -> str:
    lines = [
        f"reference network {info['name']!r}  (netns {info['netns']}{', DERP-only' if info.get('derp_only') else ''}"
        f"{', TLS' if info.get('tls') else ''})",
        f"  control URL     {info['control_url']}",
        *([f"  CA (trust it)   {info['ca_file']}"] if info.get("ca_file") else []),
        f"  run inside      {shlex.join(info['exec_prefix'])} <command>",
        f"  auth key        {info['auth_keys']['reusable']}",
        f"  ephemeral key   {info['auth_keys']['ephemeral']}",
        f"  headscale CLI   {shlex.join(info['headscale_cli'])} <args>",
        f"  {'peer':8} {'tailnet IPs':42} {'SOCKS5':16} {'HTTP proxy':16} service",
    ]
    for p in info["peers"]:
        lines.append(f"  {p['name']:8} {', '.join(p['ips']):42} {p['socks5']:16} {p['http_proxy']:16} "
                     f":{p['service_port']} (echo :{p['echo_port']})")
    return "\n".join(lines)


def fetch_via_socks(info: dict, via: dict, target: dict, path: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """curl, inside the namespace, through ``via``'s SOCKS5 proxy to ``target``'s test service."""
    url = f"http://{target['ips'][0]}:{target['service_port']}{path}"
    return subprocess.run(info["exec_prefix"] + ["curl", "-sS", "--fail", "--max-time", str(timeout),
                                                 "--socks5-hostname", via["socks5"], url],
                          capture_output=True, timeout=timeout + 10)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="sunbeam-refnet", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("install", help="build the pinned Headscale/tailscaled binaries")
    p_up = sub.add_parser("up", help="start the reference network")
    p_up.add_argument("--peers", type=int, default=2)
    p_up.add_argument("--derp-only", action="store_true", default=None)
    p_up.add_argument("--tls", action="store_true", help="HTTPS control and DERP over TLS, with a throwaway CA")
    p_up.add_argument("--json", action="store_true")
    p_show = sub.add_parser("show", help="describe the running reference network")
    p_show.add_argument("--json", action="store_true")
    sub.add_parser("down", help="stop and remove the reference network")
    p_demo = sub.add_parser("demo", help="bring it up, show it working, tear it down")
    p_demo.add_argument("--keep", action="store_true", help="leave it running afterwards")
    p_demo.add_argument("--supervisord-conf", help="a supervisord.conf other than the package's")
    for p in (p_up, p_show, sub.choices["down"]):
        p.add_argument("--name", default=network.DEFAULT_NAME)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "install":
            for name, path in install(log=_log).items():
                print(f"{name}: {path}")
            return 0
        if args.cmd == "up":
            info = network.up(args.peers, name=args.name, derp_only=args.derp_only, tls=args.tls, log=_log)
            print(json.dumps(info, indent=2) if args.json else describe(info))
            return 0
        if args.cmd == "show":
            info = network.load_state(args.name)
            if not info or not info.get("peers"):
                print(f"reference network {args.name!r} is not running", file=sys.stderr)
                return 1
            print(json.dumps(info, indent=2) if args.json else describe(info))
            return 0
        if args.cmd == "down":
            for line in network.down(args.name):
                _log(line)
            return 0
        if args.cmd == "demo":
            from .demo import run

            return run(args.keep, args.supervisord_conf)
    except (InstallError, RuntimeError, ValueError, OSError) as exc:
        print(f"sunbeam-refnet: error: {exc}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
