"""`sunbeam-ctl`: talk to the running sunbeam services over their ctl sockets.

    sunbeam-ctl [--config PATH] [--context NAME] status [--json]   each service's health
    sunbeam-ctl [--config PATH] [--context NAME] stop              ask every service to stop

Exit codes: 0 ok; 1 nothing running / a service did not answer; 2 usage or config error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys

import msgspec

from ..config import ConfigError, load_config
from ..messages.ctl import Ack, ErrorReply, HealthRequest, ServiceHealth, StopRequest
from .client import CtlTimeout, discover, request


def _status(rundir, as_json: bool) -> int:
    found = discover(rundir)
    live = [f for f in found if f.live]
    rows, failed = [], []
    for f in live:
        try:
            reply = request(f.path, HealthRequest())
        except CtlTimeout:
            failed.append(f.service)
            continue
        if isinstance(reply, ServiceHealth):
            rows.append(reply)
    if as_json:
        print(json.dumps({"running": bool(rows), "services": [msgspec.to_builtins(r) for r in rows],
                          "not_answering": failed, "stale": [f.service for f in found if not f.live]}, indent=2))
    elif not rows:
        print("VPN: not running")
    else:
        print(f"services in {rundir}:")
        for r in rows:
            since = dt.datetime.fromtimestamp(r.started_at).strftime("%H:%M:%S")
            drops = sum(v for k, v in r.counters.items() if "drop" in k or "bad" in k)
            print(f"  {r.service:10} pid {r.pid:<8} {r.state:9} since {since}  drops {drops}")
        for name in failed:
            print(f"  {name:10} not answering")
    return 0 if rows and not failed else 1


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="sunbeam-ctl", description=__doc__.splitlines()[0])
    ap.add_argument("--config")
    ap.add_argument("--context")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p_status = sub.add_parser("status", help="show each service's health")
    p_status.add_argument("--json", action="store_true")
    sub.add_parser("stop", help="ask every service to stop")
    args = ap.parse_args(argv)
    try:
        ctx = load_config(args.config, context=args.context)
    except ConfigError as exc:
        print(f"sunbeam-ctl: config error: {exc}", file=sys.stderr)
        return 2
    if args.cmd == "status":
        return _status(ctx.runtime_dir, args.json)
    return _stop(ctx.runtime_dir)


if __name__ == "__main__":
    sys.exit(main())
