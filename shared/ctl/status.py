"""``sunbeam-ctl status`` and ``sunbeam-ctl netmap``: the VPN state, each service's health,
and the netmap the control service publishes."""

from __future__ import annotations

import datetime as dt
import json

import msgspec

from ..messages.ctl import ServiceHealth, StatusReply, StatusRequest
from ..messages.netmap import ControlStatus
from .client import ask_each, discover
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


def status_command(rundir, as_json: bool) -> int:
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


def netmap_command(rundir, as_json: bool, timeout: float = 5.0) -> int:
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
