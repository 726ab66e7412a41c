"""A subnet router and exit node for the reference network: a real tailscaled in its own
namespace, with a LAN and an "internet" behind it that nothing else can reach.

Needs a network made with ``up(..., hosts=True)`` (Headscale on 0.0.0.0, DERP at 10.77.0.1).
``attach(info)`` adds::

    A <name>                 GW <name>-gw                       LAN <name>-lan
    +------------------+     +----------------------------+     +-------------------------+
    | sbg0 10.77.1.1/24|=====| sbg1 10.77.1.2/24          |     |                         |
    | (no route to the |     |   default via 10.77.1.1    |     |                         |
    |  LAN or 203.0.113|     | sbl0 192.168.77.1/24       |=====| sbl1 192.168.77.2/24    |
    |  .0/24: only the |     |   203.0.113.0/24 via .77.2 |     |   default via .77.1     |
    |  dead end)       |     | tailscaled "gateway":      |     | lo 203.0.113.10/32      |
    |                  |     |   --advertise-routes=      |     |    203.0.113.53/32      |
    |                  |     |     192.168.77.0/24        |     | testservice on 0.0.0.0  |
    |                  |     |   --advertise-exit-node    |     |   :18080 http :19080 echo|
    |                  |     |   (userspace networking)   |     | dnsserver 203.0.113.53  |
    +------------------+     +----------------------------+     +-------------------------+

- ``192.168.77.2`` is a host on the gateway's LAN (the subnet route);
- ``203.0.113.10`` stands for a server on the internet, reachable only through the exit
  node (it is not in the advertised subnet); ``www.internet.test`` names it at the DNS
  server 203.0.113.53 (Headscale's global nameserver, dnsserver.py), also only behind it.

GW does not forward packets (ip_forward stays 0): tailscaled's netstack terminates the
tailnet's TCP and dials the destination itself, as a userspace subnet router does. A has
no route toward the LAN or 203.0.113.0/24, so a connection from A can only get there
through the tunnel. The routes are approved in Headscale by ``approve`` (``headscale nodes
approve-routes``); ``approve(info, [])`` withdraws the approval.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from . import netns, topology
from .install import install
from .tailscale import Peer

A_GW_ADDR, GW_ADDR = "10.77.1.1", "10.77.1.2"
LAN_GW_ADDR, LAN_HOST = "192.168.77.1", "192.168.77.2"
SUBNET = "192.168.77.0/24"
INTERNET_NET = "203.0.113.0/24"
INTERNET_HOST, INTERNET_DNS = "203.0.113.10", "203.0.113.53"
INTERNET_NAME = "www.internet.test"
EXIT_ROUTES = ("0.0.0.0/0", "::/0")
HTTP_PORT, ECHO_PORT = 18080, 19080
NAME = "gateway"
A_IF, GW_UP_IF, GW_LAN_IF, LAN_IF = "sbg0", "sbg1", "sbl0", "sbl1"


def names(name: str) -> tuple[str, str]:
    """(GW, LAN): the namespace names of network ``name``'s gateway and its LAN."""
    return f"{name}-gw", f"{name}-lan"


def _ip(*args: str) -> None:
    res = subprocess.run(["ip", *args], capture_output=True, text=True)
    if res.returncode != 0:
        raise topology.TopologyError(f"`ip {' '.join(args)}` failed: {res.stderr.strip()}")


def _new_ns(ns: str) -> None:
    if netns.exists(ns):
        raise topology.TopologyError(f"network namespace {ns!r} already exists")
    _ip("netns", "add", ns)
    _ip("-n", ns, "link", "set", "lo", "up")


def _spawn(ns: str, argv: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(netns.exec_prefix(ns) + argv, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def _links(a: str, gw: str, lan: str) -> None:
    _ip("-n", a, "link", "add", A_IF, "type", "veth", "peer", "name", GW_UP_IF, "netns", gw)
    _ip("-n", a, "addr", "add", f"{A_GW_ADDR}/24", "dev", A_IF)
    _ip("-n", a, "link", "set", A_IF, "up")
    _ip("-n", gw, "addr", "add", f"{GW_ADDR}/24", "dev", GW_UP_IF)
    _ip("-n", gw, "link", "set", GW_UP_IF, "up")
    _ip("-n", gw, "route", "add", "default", "via", A_GW_ADDR, "dev", GW_UP_IF)
    _ip("-n", gw, "link", "add", GW_LAN_IF, "type", "veth", "peer", "name", LAN_IF, "netns", lan)
    _ip("-n", gw, "addr", "add", f"{LAN_GW_ADDR}/24", "dev", GW_LAN_IF)
    _ip("-n", gw, "link", "set", GW_LAN_IF, "up")
    _ip("-n", gw, "route", "add", INTERNET_NET, "via", LAN_HOST, "dev", GW_LAN_IF)
    _ip("-n", lan, "addr", "add", f"{LAN_HOST}/24", "dev", LAN_IF)
    _ip("-n", lan, "link", "set", LAN_IF, "up")
    _ip("-n", lan, "route", "add", "default", "via", LAN_GW_ADDR, "dev", LAN_IF)
    for addr in (INTERNET_HOST, INTERNET_DNS):
        _ip("-n", lan, "addr", "add", f"{addr}/32", "dev", "lo")


def headscale(info: dict, *args: str) -> list | dict:
    res = subprocess.run(info["headscale_cli"] + list(args) + ["-o", "json"], capture_output=True, text=True,
                         timeout=60)
    if res.returncode != 0:
        raise RuntimeError(f"headscale {' '.join(args)} failed: {res.stderr.strip() or res.stdout.strip()}")
    return json.loads(res.stdout) if res.stdout.strip() else {}


def node_id(info: dict) -> int:
    """The gateway's node ID at Headscale."""
    for node in headscale(info, "nodes", "list"):  # type: ignore[union-attr]
        if node.get("given_name") == NAME or node.get("name") == NAME:
            return int(node["id"])
    raise RuntimeError("the gateway is not registered at Headscale")


def approve(info: dict, routes: list[str] | tuple[str, ...]) -> None:
    """Approve exactly ``routes`` for the gateway (an empty list withdraws every approval)."""
    headscale(info, "nodes", "approve-routes", "--identifier", str(node_id(info)), "--routes", ",".join(routes))


def attach(info: dict, *, approve_routes: tuple[str, ...] = (SUBNET, *EXIT_ROUTES), log=print) -> dict:
    """Add the gateway, its LAN and their servers; join the gateway and approve ``approve_routes``.
    Returns its description (also ``info["gateway"]``); `detach` removes it all."""
    if not info.get("hosts"):
        raise topology.TopologyError(f"network {info.get('name')!r} was not made with up(..., hosts=True)")
    a = info["netns"]
    gw, lan = names(info["name"])
    bins = install(log=lambda m: log(f"install: {m}"))
    workdir = Path(info["workdir"])
    peer = Peer(0, workdir, bins["tailscaled"], bins["tailscale"], gw, False, None, label=NAME)
    desc = {"netns": gw, "lan_netns": lan, "exec_prefix": netns.exec_prefix(gw), "name": NAME,
            "socket": str(peer.socket), "tailscale_cli": peer.cli, "subnet": SUBNET, "lan_host": LAN_HOST,
            "internet_host": INTERNET_HOST, "internet_name": INTERNET_NAME, "dns": INTERNET_DNS,
            "http_port": HTTP_PORT, "echo_port": ECHO_PORT, "pids": {}}
    info["gateway"] = desc
    try:
        _new_ns(gw)
        _new_ns(lan)
        _links(a, gw, lan)
        service = [sys.executable, "-m", "sunbeam.refnet.testservice", "--name", "lan-host", "--bind", "0.0.0.0",
                   "--port", str(HTTP_PORT), "--echo-port", str(ECHO_PORT)]
        desc["pids"]["testservice"] = _spawn(lan, service, workdir / "lan-testservice.log").pid
        dns = [sys.executable, "-m", "sunbeam.refnet.dnsserver", "--bind", INTERNET_DNS,
               "--record", f"{INTERNET_NAME}={INTERNET_HOST}", "--record", f"lan-host.internet.test={LAN_HOST}"]
        desc["pids"]["dnsserver"] = _spawn(lan, dns, workdir / "lan-dnsserver.log").pid
        daemon = peer.start_daemon()
        desc["pids"]["tailscaled"] = daemon.pid
        peer.wait_socket(daemon)
        up = peer.up_command(topology.A_CONTROL_URL, info["auth_keys"]["reusable"])
        up += [f"--advertise-routes={SUBNET}", "--advertise-exit-node"]
        res = subprocess.run(up, capture_output=True, text=True, timeout=90)
        if res.returncode != 0:
            raise RuntimeError(f"`tailscale up` on the gateway failed: {res.stdout}{res.stderr}\n{peer.log_tail()}")
        desc["ips"] = peer.ips()
        if approve_routes:
            approve(info, approve_routes)
        _wait_listening(lan, HTTP_PORT)
    except BaseException:
        detach(info)
        raise
    return desc


def _wait_listening(ns: str, port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        res = subprocess.run(netns.exec_prefix(ns) + ["ss", "-Hltn", f"sport = :{port}"], capture_output=True,
                             text=True)
        if res.stdout.strip():
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} in {ns} after {timeout}s")


def detach(info: dict) -> list[str]:
    """Remove the gateway and its LAN (every process in them, the namespaces, A's veth end).
    Safe to call twice; also what ``network.down`` calls."""
    done = cleanup(info["name"])
    if subprocess.run(["ip", "-n", info["netns"], "link", "show", A_IF], capture_output=True).returncode == 0:
        subprocess.run(["ip", "-n", info["netns"], "link", "del", A_IF], capture_output=True)
    info.pop("gateway", None)
    return done


def cleanup(name: str) -> list[str]:
    done = []
    for ns in names(name):
        if netns.exists(ns):
            netns.delete(ns)
            done.append(f"deleted netns {ns}")
    return done
