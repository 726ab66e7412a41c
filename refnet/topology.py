"""A second host for the reference network: namespace B behind a veth (``split``) or a NAT (``nat``).

A network made with ``network.up(..., hosts=True)`` has, in its namespace A, the veth pair
sbh0/sbh1 (made by `prepare` before Headscale starts; sbh1 waits there, down, until a host
is attached) and Headscale on 0.0.0.0 with server_url http://10.77.0.1:8080, so the DERP map
(region 999) says HostName/IPv4 10.77.0.1, DERPPort 8080, STUNPort 3478::

  split                                            nat
  A  <name>                B  <name>-b             A  <name>           R  <name>-r           B  <name>-b
  +-------------------+    +----------------+      +--------------+    +----------------+    +--------------+
  | sbh0 10.77.0.1/24 |====| sbh1           |      | sbh0         |====| sbh1 10.77.0.3 |    |              |
  |      10.77.0.11/24|    |   10.77.0.2/24 |      |  10.77.0.1   |    |  masquerade out|    |              |
  | sb0  192.0.2.1    |    | default via    |      |  10.77.0.11  |    | sbr0 10.88.0.1 |====| sbb0         |
  |   (dead end)      |    |   10.77.0.1    |      |              |    |  ip_forward=1  |    |  10.88.0.2/24|
  | headscale, DERP,  |    |                |      |              |    |                |    | default via  |
  | STUN, tailscaled  |    |                |      |              |    |                |    |   10.88.0.1  |
  +-------------------+    +----------------+      +--------------+    +----------------+    +--------------+

Addresses:
  10.77.0.1:8080   Headscale control + embedded DERP (/derp): the DERP map's host
  10.77.0.1:3478   Headscale's STUN (udp)
  10.77.0.11:8080  the same Headscale under a second address: the control URL given to B, so
                   `block_derp` can cut DERP (10.77.0.1:8080) while control stays up
  10.77.0.2        B (split); A sees B's packets from here
  10.77.0.3        R's outside address (nat); A sees B's packets from here (masqueraded, the
                   source port kept when free): STUN from B maps to 10.77.0.3:<port>
  10.88.0.0/24     behind the NAT; A has no route there (only 10.77.0.0/24 on-link and the
                   dead-end default), so B is reachable only through a mapping R holds

R behaves like a home router: it forwards and masquerades toward A, and drops unsolicited
packets from A (new UDP to R itself, anything new to be forwarded inward), so a stray packet
from A never occupies a mapping: endpoint-independent mapping (one outside port per inside
socket, whatever the destination), address-and-port-dependent filtering (conntrack lets in
only replies from where B sent), so a direct path needs both sides to send.
No namespace here has a link to the host's network: A's only other link is the dead end,
A does not forward, and R forwards only between A and B.

Emulated link (``attach(info, kind, link=...)``, a `linkemu.LinkProfile`, a pair (to B, to
A) or its text form such as "20ms/0.5%"): namespace E ``<name>-e`` sits on the wire between A
and the namespace that holds sbh1 (B in split, R in nat), and a linkemu.py process in E
forwards every frame, each direction with its own delay, jitter, loss, reordering and rate::

  A  sbh0 ===== sbh1  E  (linkemu: to_b ->, <- to_a)  sbe0 ===== sbh1  B (split) / R (nat)

sbh1 (sbh0's peer) waits in E instead; B's (R's) end of the new pair E-sbe0 is also named
sbh1, so addresses, routes, the NAT and the block_* tables are exactly those without a link.
E's ends carry no address (IPv6 off, a netdev-ingress table drops every frame once the
emulator has its copy): E is invisible at the IP layer. TCP segmentation offload is off on
sbh0 and B's (R's) sbh1 while the link exists, so frames are wire-sized (linkemu.py cuts UDP
GSO super-frames itself). ``host["link"]`` says netns, profiles, pid and the counters file
(``<workdir>/linkemu-<name>.json``, `link_stats`). `detach` stops the emulator, returns sbh1
to A, deletes E and restores sbh0's offload; ``network.down`` deletes E like B and R.

`block_derp` and `block_udp` each own one nft table in B (``netdev sunbeam_block_derp``,
``netdev sunbeam_block_udp``) hooked at egress and ingress of B's uplink (sbh1 / sbb0): on =
(re)create it, off = delete it; both idempotent. Egress drops come after the socket layer,
so a sender in B gets no EPERM: its packets just vanish, as on a broken path.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import linkemu, netns
from .linkemu import LinkProfile

A_ADDR = "10.77.0.1"  # Headscale's server_url host: control, DERP, STUN
A_CONTROL_ADDR = "10.77.0.11"  # second address on sbh0: control for B
B_SPLIT_ADDR = "10.77.0.2"
R_OUTER_ADDR = "10.77.0.3"
R_INNER_ADDR = "10.88.0.1"
B_NAT_ADDR = "10.88.0.2"
PORT = 8080
STUN_PORT = 3478
A_CONTROL_URL = f"http://{A_ADDR}:{PORT}"  # for the tailscaled peers (and sunbeam) in A
B_CONTROL_URL = f"http://{A_CONTROL_ADDR}:{PORT}"  # for whatever runs in B
A_IF, LINK_IF = "sbh0", "sbh1"  # the veth pair made in A; LINK_IF moves into B or R
R_IF, B_NAT_IF = "sbr0", "sbb0"  # the R-B veth pair (nat)
KINDS = ("split", "nat")
EMU_IF = "sbe0"  # E's end of the E-B (E-R) pair; the other end is named LINK_IF
LINK_TABLE = "sunbeam_linkemu"
DERP_TABLE = "sunbeam_block_derp"
UDP_TABLE = "sunbeam_block_udp"

_ROUTER_NFT = f"""\
table ip sunbeam_nat {{
  chain postrouting {{ type nat hook postrouting priority srcnat; policy accept;
    oifname "{LINK_IF}" masquerade
  }}
}}
table inet sunbeam_router {{
  chain input {{ type filter hook input priority filter; policy accept;
    iifname "{LINK_IF}" meta l4proto udp ct state new drop
  }}
  chain forward {{ type filter hook forward priority filter; policy accept;
    iifname "{LINK_IF}" ct state new drop
  }}
}}
"""


class TopologyError(RuntimeError):
    pass


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(["ip", *args], check=False, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise TopologyError(f"`ip {' '.join(args)}` failed: {res.stderr.strip()}")
    return res


def _run_in(ns: str, *cmd: str, stdin: str | None = None) -> None:
    res = subprocess.run(netns.exec_prefix(ns) + list(cmd), check=False, input=stdin, capture_output=True, text=True)
    if res.returncode != 0:
        raise TopologyError(f"`{' '.join(cmd)}` in {ns} failed: {res.stderr.strip()}\n{stdin or ''}")


def _has_link(ns: str, ifname: str) -> bool:
    return netns.exists(ns) and _ip("-n", ns, "link", "show", "dev", ifname, check=False).returncode == 0


def host_names(name: str) -> tuple[str, str]:
    """(B, R): the namespace names of network ``name``'s second host and router."""
    return f"{name}-b", f"{name}-r"


def link_name(name: str) -> str:
    """The namespace of network ``name``'s emulated link (E)."""
    return f"{name}-e"


Link = LinkProfile | tuple[LinkProfile, LinkProfile] | str


def _link_profiles(link: Link) -> tuple[LinkProfile, LinkProfile]:
    """(to B, to A)."""
    if isinstance(link, str):
        return linkemu.parse_link(link)
    if isinstance(link, LinkProfile):
        return link, link
    return link


def prepare(ns: str) -> None:
    """In namespace A: the veth pair sbh0 (10.77.0.1/24 + 10.77.0.11/24, up) / sbh1 (parked, down).
    Called by ``network.up(hosts=True)`` before Headscale starts; recreates the pair if gone."""
    if _has_link(ns, A_IF):
        return
    _ip("-n", ns, "link", "add", A_IF, "type", "veth", "peer", "name", LINK_IF)
    _ip("-n", ns, "addr", "add", f"{A_ADDR}/24", "dev", A_IF)
    _ip("-n", ns, "addr", "add", f"{A_CONTROL_ADDR}/24", "dev", A_IF)
    _ip("-n", ns, "link", "set", A_IF, "up")


def _new_ns(ns: str) -> None:
    if netns.exists(ns):
        raise TopologyError(f"network namespace {ns!r} already exists")
    _ip("netns", "add", ns)
    _ip("-n", ns, "link", "set", "lo", "up")


def _save(info: dict) -> None:
    """Write info["host"] into the state file, keeping what others (add_peer...) wrote there."""
    from . import network

    name = info["name"]
    state = network.load_state(name) or dict(info)
    if info.get("host"):
        state["host"] = info["host"]
    else:
        state.pop("host", None)
    network.state_file(name).write_text(json.dumps(state, indent=2))


def attach(info: dict, kind: str, link: Link | None = None, *, seed: int = 1) -> dict:
    """Add host B (``kind`` "split" or "nat") to the running network ``info`` (made with
    ``hosts=True``). Returns the host's description, also kept as ``info["host"]`` and in the
    state file; it carries "auth_keys" so it can stand in for a network description where
    only "exec_prefix", "control_url" and "auth_keys" are read (tests' SunbeamNode).
    ``link``: the A<->B wire goes through the link emulator in namespace E (see above;
    ``seed`` seeds its loss/reorder draws); ``host["link"]`` describes it, else None."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if not info.get("hosts"):
        raise TopologyError(f"network {info.get('name')!r} was not made with up(..., hosts=True)")
    if info.get("host"):
        raise TopologyError(f"network {info['name']!r} already has a host attached; detach it first")
    a = info["netns"]
    b, r = host_names(info["name"])
    nat = kind == "nat"
    host = {
        "kind": kind, "name": info["name"], "netns": b, "exec_prefix": netns.exec_prefix(b),
        "addr": R_OUTER_ADDR if nat else B_SPLIT_ADDR,  # B as A sees it
        "local_addr": B_NAT_ADDR if nat else B_SPLIT_ADDR,  # B's own address
        "control_url": B_CONTROL_URL, "a_control_url": A_CONTROL_URL,
        "derp_host": A_ADDR, "derp_url": f"http://{A_ADDR}:{PORT}/derp", "stun": f"{A_ADDR}:{STUN_PORT}",
        "a_addrs": [A_ADDR, A_CONTROL_ADDR],
        "router_netns": r if nat else None, "router_exec_prefix": netns.exec_prefix(r) if nat else None,
        "uplink": B_NAT_IF if nat else LINK_IF,  # B's one link: where the block_* tables hook
        "auth_keys": info.get("auth_keys"), "derp_only": info.get("derp_only", False),
        "link": None,
    }
    profiles = _link_profiles(link) if link is not None else None
    if profiles:
        host["link"] = {"netns": link_name(info["name"]), "to_b": str(profiles[0]), "to_a": str(profiles[1]),
                        "stats": str(Path(info["workdir"]) / f"linkemu-{info['name']}.json"), "pid": None,
                        "seed": seed}
    info["host"] = host
    _save(info)  # before anything exists, so network.down() finds whatever gets made
    try:
        prepare(a)
        _new_ns(b)
        if nat:
            _new_ns(r)
        if profiles:
            _emulated_wire(info, host, r if nat else b, *profiles)
        else:
            _ip("-n", a, "link", "set", LINK_IF, "netns", r if nat else b)
        if not nat:
            _ip("-n", b, "addr", "add", f"{B_SPLIT_ADDR}/24", "dev", LINK_IF)
            _ip("-n", b, "link", "set", LINK_IF, "up")
            _ip("-n", b, "route", "add", "default", "via", A_ADDR, "dev", LINK_IF)
        else:
            _ip("-n", r, "addr", "add", f"{R_OUTER_ADDR}/24", "dev", LINK_IF)
            _ip("-n", r, "link", "set", LINK_IF, "up")
            _ip("-n", r, "link", "add", R_IF, "type", "veth", "peer", "name", B_NAT_IF, "netns", b)
            _ip("-n", r, "addr", "add", f"{R_INNER_ADDR}/24", "dev", R_IF)
            _ip("-n", r, "link", "set", R_IF, "up")
            _ip("-n", b, "addr", "add", f"{B_NAT_ADDR}/24", "dev", B_NAT_IF)
            _ip("-n", b, "link", "set", B_NAT_IF, "up")
            _ip("-n", b, "route", "add", "default", "via", R_INNER_ADDR, "dev", B_NAT_IF)
            _run_in(r, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            _run_in(r, "nft", "-f", "-", stdin=_ROUTER_NFT)
    except BaseException:
        detach(info)
        raise
    return host


def detach(info: dict) -> list[str]:
    """Remove host B (and R): stop their processes, park sbh1 back in A (so sbh0 and its
    addresses survive), delete the namespaces. Safe to call twice. Returns what was done."""
    host = info.get("host")
    if not host:
        return []
    a = info["netns"]
    done: list[str] = []
    if host.get("link"):
        done += _remove_wire(a, host["link"])
    for ns in (host["netns"], host.get("router_netns")):
        if ns and netns.exists(ns):
            netns.kill_all(ns)
            if _has_link(ns, LINK_IF):
                _ip("-n", ns, "link", "set", LINK_IF, "netns", a)
            _ip("netns", "del", ns)
            done.append(f"deleted netns {ns}")
    if netns.exists(a):
        prepare(a)  # (no-op unless the pair died with B or R)
        _ip("-n", a, "link", "set", LINK_IF, "down", check=False)
    info.pop("host", None)
    _save(info)
    return done


def cleanup(name: str, state: dict) -> list[str]:
    """For ``network.down``: delete B and R (and every process in them) whatever state they are in."""
    done = []
    names = {*host_names(name), link_name(name)}
    host = state.get("host") or {}
    names.update(n for n in (host.get("netns"), host.get("router_netns"), (host.get("link") or {}).get("netns")) if n)
    for ns in sorted(names):
        if netns.exists(ns):
            netns.delete(ns)
            done.append(f"deleted netns {ns}")
    return done


_LINK_NFT = f"""\
table netdev {LINK_TABLE} {{
  chain from_a {{ type filter hook ingress device "{LINK_IF}" priority filter; policy drop; }}
  chain from_b {{ type filter hook ingress device "{EMU_IF}" priority filter; policy drop; }}
}}
"""


def _set_tso(ns: str, ifname: str, on: bool) -> bool:
    with netns.entered(ns):
        return linkemu.set_tso(ifname, on)


def _emulated_wire(info: dict, host: dict, nxt: str, to_b: LinkProfile, to_a: LinkProfile) -> None:
    """A -sbh0=sbh1- E (linkemu) -sbe0=sbh1- ``nxt``: the wire of `attach` with a link."""
    a, link = info["netns"], host["link"]
    e = link["netns"]
    _new_ns(e)
    _run_in(e, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
    _ip("-n", a, "link", "set", LINK_IF, "netns", e)
    _ip("-n", e, "link", "add", EMU_IF, "type", "veth", "peer", "name", LINK_IF, "netns", nxt)
    for dev in (LINK_IF, EMU_IF):
        _run_in(e, "sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1")
        _ip("-n", e, "link", "set", dev, "up")
    _run_in(e, "nft", "-f", "-", stdin=_LINK_NFT)
    link["tso_was"] = _set_tso(a, A_IF, False)
    _set_tso(nxt, LINK_IF, False)
    stats = Path(link["stats"])
    stats.unlink(missing_ok=True)
    log = open(stats.with_suffix(".log"), "ab")
    proc = subprocess.Popen(
        netns.exec_prefix(e) + [sys.executable, "-m", "sunbeam.refnet.linkemu", "--a-if", LINK_IF, "--b-if", EMU_IF,
                                "--to-b", str(to_b), "--to-a", str(to_a), "--seed", str(link["seed"]),
                                "--stats", str(stats)],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    _EMULATORS[e] = proc
    link["pid"] = proc.pid
    _save(info)
    deadline = time.monotonic() + 15
    while not stats.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise TopologyError(f"link emulator did not start ({proc.poll()}): "
                                f"{stats.with_suffix('.log').read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)


_EMULATORS: dict[str, subprocess.Popen] = {}  # E -> the emulator we started (reaped in detach)


def _remove_wire(a: str, link: dict) -> list[str]:
    """Stop the emulator, return sbh1 to A, delete E (and with its sbe0 the far sbh1)."""
    e = link["netns"]
    done: list[str] = []
    if netns.exists(e):
        netns.kill_all(e)
        if _has_link(e, LINK_IF):
            _ip("-n", e, "link", "set", LINK_IF, "netns", a)
        _ip("-n", e, "link", "del", EMU_IF, check=False)
        _ip("netns", "del", e)
        done.append(f"deleted netns {e}")
    proc = _EMULATORS.pop(e, None)
    if proc is not None:
        proc.wait(timeout=10)
    if netns.exists(a) and _has_link(a, A_IF) and link.get("tso_was") is not None:
        _set_tso(a, A_IF, bool(link["tso_was"]))
    return done


def link_stats(info: dict) -> dict:
    """The emulator's counters now (per direction: frames, bytes, lost, held, sent...): asks
    it (SIGUSR1) for a fresh write and waits for it; the last one written if it is gone."""
    link = _host(info).get("link")
    if not link:
        raise TopologyError(f"network {info.get('name')!r} has no emulated link")
    path = Path(link["stats"])
    before = json.loads(path.read_text()).get("serial", 0)
    try:
        os.kill(int(link["pid"]), signal.SIGUSR1)
    except ProcessLookupError:
        return json.loads(path.read_text())
    deadline = time.monotonic() + 5
    while True:
        stats = json.loads(path.read_text())
        if stats.get("serial", 0) > before or time.monotonic() > deadline:
            return stats
        time.sleep(0.01)


def _host(info: dict) -> dict:
    host = info.get("host")
    if not host:
        raise TopologyError(f"network {info.get('name')!r} has no host attached")
    return host


def _table(info: dict, table: str, on: bool, match: str) -> None:
    """(Re)create (on) or delete (off) netdev table ``table`` in B dropping ``match`` both
    ways on B's uplink: at egress (after the socket: the sender sees no error, as if the
    packet died on the wire) and at ingress."""
    host = _host(info)
    dev = host["uplink"]
    script = f"add table netdev {table}\ndelete table netdev {table}\n"
    if on:
        script += f"table netdev {table} {{\n"
        for hook, m in (("egress", match.format(to="daddr", port="dport")),
                        ("ingress", match.format(to="saddr", port="sport"))):
            script += (f"  chain {hook} {{\n    type filter hook {hook} device \"{dev}\" priority filter;"
                       f" policy accept;\n    {m} drop\n  }}\n")
        script += "}\n"
    _run_in(host["netns"], "nft", "-f", "-", stdin=script)


def block_derp(info: dict, on: bool) -> None:
    """In B: drop TCP to and from 10.77.0.1:8080 (the DERP map's host), established connections
    included; 10.77.0.11:8080 (B's control URL) stays open."""
    _table(info, DERP_TABLE, on, f"ip {{to}} {A_ADDR} tcp {{port}} {PORT}")


def block_udp(info: dict, on: bool) -> None:
    """In B: drop every UDP datagram (v4 and v6) in or out of B's one link, which leads only to
    A (directly or through R): STUN, disco and WireGuard over UDP between the hosts all die,
    both directions, silently; TCP (control, DERP) and B's loopback are untouched."""
    _table(info, UDP_TABLE, on, "meta l4proto udp")
