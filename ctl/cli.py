"""`sunbeam-ctl`: start, stop and ask the running sunbeam services over their ctl sockets.

    sunbeam-ctl [--config PATH] [--context NAME] connect [--foreground] [--timeout S] [--json]
                                                  start the pipeline (supervisord), wait
                                                  until connected (showing the login URL
                                                  when the node must log in), print the
                                                  addresses
    sunbeam-ctl ... login [--timeout S] [--json]  log in (auth key, else the URL an admin
                                                  registers); starts sunbeam if needed
    sunbeam-ctl ... logout                        log out at the server, then stop
    sunbeam-ctl ... status [--json]               VPN state and each service's health
    sunbeam-ctl ... peers [--json]                peers: addresses, online, path, handshake, bytes,
                                                  routes (subnets, exit node; used or not)
    sunbeam-ctl ... ip [PEER] [-4|-6] [--json]    our tailnet addresses, or a peer's (name or IP)
    sunbeam-ctl ... whois IP [--json]             the node that owns a tailnet IP (its user, tags),
                                                  or the peer that routes it
    sunbeam-ctl ... exit-node list [--json]       peers that offer an exit node; which one we use
    sunbeam-ctl ... netmap [--json]               the netmap the control service publishes
    sunbeam-ctl ... ping PEER [-c N]              ICMP echo to a peer (name or IP), with the path
    sunbeam-ctl ... stop | disconnect             stop every service and supervisord
    sunbeam-ctl supervisord-conf                  the path of the packaged supervisord.conf
    sunbeam-ctl --version

``--config`` / ``--context`` may also follow the subcommand. Without a config file the
commands that only look (status, peers, netmap, ping, ip, whois, exit-node, stop) look in the default context's
runtime directory, so they say "not running" rather than fail. Every ``--json`` prints
JSON, whatever the outcome. Output to a closed pipe is dropped without changing what the
command does (output.py).

Exit codes: 0 ok; 1 nothing running, refused or failed, or a service did not answer;
2 usage or config error.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..shared.runtime.rundir import RundirError
from . import daemon, heldsupervisord, output

if TYPE_CHECKING:
    from ..shared.config import Context

# Each command's module (account, status, peers, lookup, exitnode) is imported in `main` when
# that command runs, the config's (msgspec) once `connect` started supervisord's interpreter
# (heldsupervisord.py), and the version only for --version: importlib.metadata alone is ~15 ms.


def _version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("sunbeam")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


class _VersionAction(argparse._VersionAction):
    """argparse's ``action="version"``, reading the installed version only when asked."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        self.version = f"sunbeam {_version()}"
        super().__call__(parser, namespace, values, option_string)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, metavar="PATH",
                        help="config file (default: $SUNBEAM_CONFIG, else ~/.config/sunbeam/config.toml)")
    common.add_argument("--context", default=argparse.SUPPRESS, metavar="NAME",
                        help="context in the config file (default: $SUNBEAM_CONTEXT, else default_context)")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON (always JSON, also when not running)")
    ap = argparse.ArgumentParser(prog="sunbeam-ctl", description=__doc__.splitlines()[0], parents=[common])
    ap.add_argument("--version", action=_VersionAction)
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND",
                           help="what to do (`sunbeam-ctl COMMAND --help` for its options)")
    p_connect = sub.add_parser("connect", parents=[common], help="start sunbeam and wait until connected")
    p_connect.add_argument("--foreground", action="store_true", help="stay attached; Ctrl-C stops sunbeam")
    p_connect.add_argument("--timeout", type=float, default=daemon.CONNECT_TIMEOUT, metavar="SECONDS",
                           help=f"give up (and stop what was started) after SECONDS (default {daemon.CONNECT_TIMEOUT:g}); "
                           "not counted while a login URL waits for an admin")
    p_connect.add_argument("--json", action="store_true", help="JSON lines: the login URL (AuthURL), then the outcome")
    p_login = sub.add_parser("login", parents=[common, as_json],
                             help="log in: with the auth key, else print the URL an admin registers; wait until Running")
    p_login.add_argument("--timeout", type=float, default=daemon.CONNECT_TIMEOUT, metavar="SECONDS",
                         help="give up after SECONDS (not counted while a login URL waits for an admin)")
    sub.add_parser("logout", parents=[common], help="log this node out at the server, then stop sunbeam")
    sub.add_parser("status", parents=[common, as_json], help="show the VPN state and each service's health")
    sub.add_parser("netmap", parents=[common, as_json], help="show the netmap the control service publishes")
    sub.add_parser("peers", parents=[common, as_json], help="peers: addresses, online, path, handshake, bytes, routes")
    p_ip = sub.add_parser("ip", parents=[common, as_json], help="our tailnet addresses, or a peer's")
    p_ip.add_argument("peer", nargs="?", metavar="PEER",
                      help="a node's short name, MagicDNS name, OS hostname or IP (default: this node)")
    family = p_ip.add_mutually_exclusive_group()
    family.add_argument("-4", dest="family", action="store_const", const=4, help="only the IPv4 address")
    family.add_argument("-6", dest="family", action="store_const", const=6, help="only the IPv6 address")
    p_whois = sub.add_parser("whois", parents=[common, as_json],
                             help="the node (and its user) that owns a tailnet IP, or the peer that routes it")
    p_whois.add_argument("ip", metavar="IP", help="a tailnet IP (IP:port and [IPv6]:port are accepted too)")
    p_exit = sub.add_parser("exit-node", parents=[common], help="exit nodes: `exit-node list`")
    exit_sub = p_exit.add_subparsers(dest="exit_cmd", required=True, metavar="ACTION", help="list")
    exit_sub.add_parser("list", parents=[common, as_json],
                        help="the peers that offer an exit node, and which one the context uses")
    p_ping = sub.add_parser("ping", parents=[common], help="ICMP echo to a peer through the tunnel")
    p_ping.add_argument("peer", metavar="PEER", help="a peer's hostname, MagicDNS name or tailnet IP")
    p_ping.add_argument("-c", "--count", type=int, default=3, metavar="N", help="echoes to send (1-100, default 3)")
    for name in ("stop", "disconnect"):
        sub.add_parser(name, parents=[common], help="stop sunbeam")
    sub.add_parser("supervisord-conf", help="print the path of the supervisord.conf this installation runs")
    return ap


def _context(args: argparse.Namespace) -> Context | Path | int:
    """The context; for commands that only look, without a config file, the default
    context's runtime directory; or an exit code after a config error."""
    from ..shared.config import ConfigError, ConfigNotFound, load_config
    from ..shared.config.load import default_runtime_dir

    config, context = getattr(args, "config", None), getattr(args, "context", None)
    try:
        # the auth key is optional: without one, connect and login log in interactively
        return load_config(config, context=context, need_auth=False)
    except ConfigNotFound as exc:
        if args.cmd in ("connect", "login"):
            print(f"sunbeam-ctl: config error: {exc}", file=sys.stderr)
            return 2
        explicit = os.environ.get("SUNBEAM_RUNTIME_DIR", "").strip()
        name = context or os.environ.get("SUNBEAM_CONTEXT", "").strip() or "default"
        return Path(explicit) if explicit else default_runtime_dir(name)
    except ConfigError as exc:
        print(f"sunbeam-ctl: config error: {exc}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    output.install()
    # whatever the command, the process ends soon after: at exit, skip the cyclic collection
    # over every object of it (sockets are closed and output flushed all the same): ~20 ms
    # per command. (Once: main may run many times in one process, as in the tests.)
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)
    args = _parser().parse_args(argv)
    if args.cmd == "supervisord-conf":
        print(daemon.supervisord_conf())
        return 0
    if args.cmd in ("connect", "login"):
        heldsupervisord.prestart()  # supervisord's interpreter starts while we read the config
    try:
        return _run(args)
    finally:
        heldsupervisord.cancel()  # not started: refused, failed, or already running


def _run(args: argparse.Namespace) -> int:
    from ..shared.config import Context

    found = _context(args)
    if isinstance(found, int):
        return found
    ctx = found if isinstance(found, Context) else None
    rundir = found.runtime_dir if isinstance(found, Context) else found
    try:
        config = getattr(args, "config", None)
        if args.cmd == "connect" and (args.foreground or not args.json):
            assert ctx is not None
            return daemon.connect(ctx, config=config, foreground=args.foreground, timeout=args.timeout)
        if args.cmd in ("connect", "login"):  # connect --json: login's JSON lines
            from .account import login

            assert ctx is not None
            return login(ctx, config=config, as_json=args.json, timeout=args.timeout)
        if args.cmd == "logout":
            from .account import logout

            return logout(rundir)
        if args.cmd == "status":
            from .status import status_command

            return status_command(rundir, args.json, ctx=ctx)
        if args.cmd == "netmap":
            from .status import netmap_command

            return netmap_command(rundir, args.json)
        if args.cmd == "peers":
            from .peers import peers_command

            return peers_command(rundir, args.json, ctx)
        if args.cmd == "ip":
            from .lookup import ip_command

            return ip_command(rundir, args.peer, args.family, args.json)
        if args.cmd == "whois":
            from .lookup import whois_command

            return whois_command(rundir, args.ip, args.json, ctx)
        if args.cmd == "exit-node":
            from .exitnode import exit_node_list_command

            return exit_node_list_command(rundir, args.json, ctx)
        if args.cmd == "ping":
            from .peers import ping_command

            return ping_command(rundir, args.peer, max(1, min(args.count, 100)))
        return daemon.stop(rundir)
    except RundirError as exc:
        print(f"sunbeam-ctl: {exc}", file=sys.stderr)
        return 1
    except PermissionError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"sunbeam-ctl: permission denied{where}: the runtime directory {rundir} belongs to another user "
              "or is not readable; set runtime_dir in the context or XDG_RUNTIME_DIR to a directory of yours",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
