"""``sunbeam-ctl ip`` and ``sunbeam-ctl whois`` (ctl/lookup.py) on netmaps built here: the
name rules (the proxy's NameTable, our own node included), IPv4 first, -4/-6, --json
always JSON, unknown names with a hint, whois's owner vs "routed by", the exit codes."""

from __future__ import annotations

import ipaddress
import json
import os

import pytest
from sunbeam.ctl import cli, lookup
from sunbeam.ctl.lookup import NOT_RUNNING, find_node, node_ips, parse_ip_arg, whois
from sunbeam.shared.netmap import Netmap, Peer, SelfNode
from sunbeam.shared.proto.tailcfg import DNSConfig, DNSRecord, UserProfile

from .ctlenv import env_only_context


def _key(i: int) -> str:
    return "nodekey:" + f"{i:02x}" * 32


def _own(i: int) -> tuple[str, str]:
    return (f"100.64.0.{i}/32", f"fd7a:115c:a1e0::{i:x}/128")


ME = SelfNode(id=10, stable_id="nME", key=_key(10), name="laptop.tail.example.", hostname="laptop",
              addresses=_own(10), allowed_ips=_own(10), user=1)
# IPv6 listed first: `ip` still prints IPv4 first
PEER1 = Peer(id=1, stable_id="nP1", key=_key(1), name="peer-1.tail.example.", hostname="Build-Box",
             addresses=_own(1)[::-1], allowed_ips=_own(1)[::-1], user=1, online=True)
ROUTER = Peer(id=2, key=_key(2), name="router.tail.example.", hostname="router", addresses=_own(2),
              allowed_ips=_own(2) + ("192.168.0.0/16", "192.168.77.0/24", "fd00:77::/64"), user=2,
              tags=("tag:router",), online=False)
GATEWAY = Peer(id=3, key=_key(3), name="gateway.tail.example.", hostname="gw", addresses=_own(3),
               allowed_ips=_own(3) + ("0.0.0.0/0", "::/0"), user=2, online=True)
V4ONLY = Peer(id=4, key=_key(4), name="printer.tail.example.", addresses=("100.64.0.4/32",),
              allowed_ips=("100.64.0.4/32",), user=7)
NETMAP = Netmap(
    self_node=ME, peers=(PEER1, ROUTER, GATEWAY, V4ONLY), domain="tail.example",
    user_profiles=(UserProfile(id=1, login_name="alice@example.com", display_name="Alice"),
                   UserProfile(id=2, login_name="tagged-devices", display_name="Tagged Devices")),
    dns=DNSConfig(extra_records=[DNSRecord(name="wiki.tail.example.", type="A", value="10.1.2.3")]),
)


# -- names ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("target, node_id", [
    ("peer-1", 1), ("PEER-1.tail.example.", 1), ("peer-1.tail.example", 1), ("build-box", 1),
    ("100.64.0.1", 1), ("fd7a:115c:a1e0::1", 1), ("[fd7a:115c:a1e0::1]", 1),
    ("laptop", 10), ("laptop.tail.example", 10), ("100.64.0.10", 10),
    ("gateway", 3), ("gw", 3), ("printer", 4),
])
def test_find_node_uses_the_proxys_name_rules(target, node_id):
    node = find_node(NETMAP, target)
    assert node is not None and node.id == node_id
    assert isinstance(node, SelfNode) == (node_id == 10)


@pytest.mark.parametrize("target", ["nobody", "100.64.0.99", "wiki", "192.168.77.1", ""])
def test_find_node_knows_no_other_name(target):
    assert find_node(NETMAP, target) is None  # an ExtraRecords name or a routed IP is no node


def test_node_ips_put_ipv4_first():
    assert PEER1.addresses[0].startswith("fd7a")
    assert node_ips(PEER1) == ["100.64.0.1", "fd7a:115c:a1e0::1"]
    assert node_ips(V4ONLY) == ["100.64.0.4"]


# -- ip -------------------------------------------------------------------------------------------

@pytest.fixture()
def running(monkeypatch, tmp_path):
    """Config from the environment only; the netmap `fetch_netmap` returns is ``state["netmap"]``."""
    env_only_context(monkeypatch, tmp_path)
    state: dict[str, Netmap | str] = {"netmap": NETMAP}
    monkeypatch.setattr(lookup, "fetch_netmap", lambda rundir: state["netmap"])
    return state


def test_ip_of_our_node_ipv4_first(running, capsys):
    assert cli.main(["ip"]) == 0
    assert capsys.readouterr().out == "100.64.0.10\nfd7a:115c:a1e0::a\n"


@pytest.mark.parametrize("args, out", [
    (["ip", "peer-1"], "100.64.0.1\nfd7a:115c:a1e0::1\n"),
    (["ip", "-4", "peer-1"], "100.64.0.1\n"),
    (["ip", "-6", "Build-Box"], "fd7a:115c:a1e0::1\n"),
    (["ip", "-6"], "fd7a:115c:a1e0::a\n"),
    (["ip", "fd7a:115c:a1e0::3"], "100.64.0.3\nfd7a:115c:a1e0::3\n"),
])
def test_ip_of_a_peer_and_one_family(running, capsys, args, out):
    assert cli.main(args) == 0
    assert capsys.readouterr().out == out


def test_ip_json(running, capsys):
    assert cli.main(["ip", "--json", "peer-1.tail.example."]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "name": "peer-1.tail.example", "hostname": "Build-Box", "self": False,
        "addresses": ["100.64.0.1", "fd7a:115c:a1e0::1"], "error": None}
    assert cli.main(["ip", "--json", "-4"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["self"] is True and doc["addresses"] == ["100.64.0.10"] and doc["name"] == "laptop.tail.example"


def test_ip_of_an_unknown_peer_suggests_close_names(running, capsys):
    assert cli.main(["ip", "peer1"]) == 1
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err == "sunbeam-ctl: no peer called 'peer1'; did you mean peer-1?\n"
    assert cli.main(["ip", "--json", "zzz"]) == 1
    out = capsys.readouterr()
    doc = json.loads(out.out)
    assert doc["addresses"] == [] and doc["name"] is None and doc["error"].startswith("no peer called 'zzz'; peers: ")
    assert out.err.count("\n") == 1 and "Build-Box" in out.err


def test_ip_of_a_family_the_node_lacks(running, capsys):
    assert cli.main(["ip", "-6", "printer"]) == 1
    out = capsys.readouterr()
    assert out.out == "" and "printer.tail.example has no IPv6 address" in out.err


def test_ip_when_not_running_or_before_the_netmap(running, capsys):
    running["netmap"] = NOT_RUNNING
    assert cli.main(["ip"]) == 1
    out = capsys.readouterr()
    assert out.out == "" and out.err == "sunbeam-ctl: VPN: not running\n"
    assert cli.main(["ip", "--json", "peer-1"]) == 1
    assert json.loads(capsys.readouterr().out)["error"] == "VPN: not running"
    running["netmap"] = Netmap(peers=(PEER1,))  # no self node yet
    assert cli.main(["ip", "--json"]) == 1
    assert "no netmap yet" in json.loads(capsys.readouterr().out)["error"]
    assert cli.main(["ip", "peer-1"]) == 0  # a peer is known all the same
    assert capsys.readouterr().out.startswith("100.64.0.1\n")


def test_ip_and_whois_without_any_config_say_not_running(tmp_path, monkeypatch, capsys):
    for var in [v for v in os.environ if v.startswith("SUNBEAM_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert cli.main(["ip", "--json"]) == 1
    out = capsys.readouterr()
    assert json.loads(out.out)["error"] == "VPN: not running" and "config" not in out.err
    assert cli.main(["whois", "100.64.0.1"]) == 1
    assert capsys.readouterr().err == "sunbeam-ctl: VPN: not running\n"
    assert cli.main(["whois", "--json", "not-an-ip"]) == 2  # the usage error comes first
    assert "not an IP address" in json.loads(capsys.readouterr().out)["error"]


# -- whois ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, ip", [
    ("100.64.0.1", "100.64.0.1"), (" 100.64.0.1 ", "100.64.0.1"), ("100.64.0.1:22", "100.64.0.1"),
    ("fd7a:115c:a1e0::1", "fd7a:115c:a1e0::1"), ("[fd7a:115c:a1e0::1]", "fd7a:115c:a1e0::1"),
    ("[fd7a:115c:a1e0::1]:443", "fd7a:115c:a1e0::1"),
    ("peer-1", None), ("100.64.0", None), ("100.64.0.1:http", None), ("[100.64.0.1]x", None),
    ("fe80::1%eth0", None), ("", None), ("1.2.3.4:", None),
])
def test_parse_ip_arg(text, ip):
    got = parse_ip_arg(text)
    assert (str(got) if got is not None else None) == ip


def test_whois_a_peer_names_node_and_user():
    doc = whois(NETMAP, ipaddress.ip_address("fd7a:115c:a1e0::1"))
    assert doc == {"ip": "fd7a:115c:a1e0::1", "routed_by": [], "error": None, "node": {
        "name": "peer-1.tail.example", "hostname": "Build-Box", "id": 1, "stable_id": "nP1",
        "addresses": ["100.64.0.1", "fd7a:115c:a1e0::1"],
        "user": {"id": 1, "login_name": "alice@example.com", "display_name": "Alice"},
        "tags": [], "online": True, "self": False, "expired": False}}
    tagged = whois(NETMAP, ipaddress.ip_address("100.64.0.2"))["node"]
    assert tagged["tags"] == ["tag:router"] and tagged["online"] is False
    assert tagged["user"]["login_name"] == "tagged-devices"
    assert whois(NETMAP, ipaddress.ip_address("100.64.0.4"))["node"]["user"] is None  # no profile for it


def test_whois_text_shows_a_name_once_and_no_stable_id_equal_to_the_id():
    doc = whois(Netmap(self_node=ME, peers=(Peer(id=5, stable_id="5", key=_key(5), name="h.tail.example.",
                                                 addresses=_own(5), user=3, online=None),),
                       user_profiles=(UserProfile(id=3, login_name="refnet", display_name="refnet"),)),
                ipaddress.ip_address("100.64.0.5"))
    lines = lookup.format_whois(doc).splitlines()
    assert lines[1:3] == ["hostname:  -", "node id:   5"]
    assert lines[4] == "user:      refnet, user id 3" and lines[6] == "online:    -"


def test_whois_our_own_address():
    node = whois(NETMAP, ipaddress.ip_address("100.64.0.10"))["node"]
    assert node["self"] is True and node["name"] == "laptop.tail.example" and node["online"] is None
    assert node["user"]["display_name"] == "Alice"


def test_whois_a_routed_address_names_the_router_not_an_owner():
    doc = whois(NETMAP, ipaddress.ip_address("192.168.77.5"), accept_routes=False, exit_peer=None)
    assert doc["node"] is None and doc["error"] is None
    assert [(r["name"], r["kind"], r["prefix"], r["in_use"]) for r in doc["routed_by"]] == [
        ("router.tail.example", "subnet", "192.168.77.0/24", False),  # the longest prefix first
        ("router.tail.example", "subnet", "192.168.0.0/16", False),
        ("gateway.tail.example", "exit", "0.0.0.0/0", False),
    ]
    used = whois(NETMAP, ipaddress.ip_address("192.168.1.1"), accept_routes=True, exit_peer=GATEWAY)["routed_by"]
    assert [(r["prefix"], r["accepted"], r["in_use"], r["ip"]) for r in used] == [
        ("192.168.0.0/16", True, True, "100.64.0.2"), ("0.0.0.0/0", True, False, "100.64.0.3")]  # longest wins
    text = lookup.format_whois({"ip": "192.168.1.1", "node": None, "routed_by": used})
    assert text.splitlines()[1:] == [
        "  router.tail.example (100.64.0.2): subnet route 192.168.0.0/16 (in use)",
        "  gateway.tail.example (100.64.0.3): exit node 0.0.0.0/0 (not used: a more specific route wins)"]
    outside = whois(NETMAP, ipaddress.ip_address("10.0.0.1"), accept_routes=False, exit_peer=GATEWAY)["routed_by"]
    assert [(r["kind"], r["accepted"], r["in_use"]) for r in outside] == [("exit", True, True)]
    v6 = whois(NETMAP, ipaddress.ip_address("2001:db8::1"))["routed_by"]
    assert [(r["id"], r["prefix"]) for r in v6] == [(3, "::/0")]
    text = lookup.format_whois(doc)
    assert text.splitlines()[0] == "192.168.77.5: no node has this address; routed by (not owned by):"
    assert "  router.tail.example (100.64.0.2): subnet route 192.168.77.0/24 (not used: accept_routes is off)" in text
    assert "exit node 0.0.0.0/0 (not used: not the configured exit_node)" in text


def test_whois_an_unknown_tailnet_address_is_not_the_exit_nodes():
    doc = whois(NETMAP, ipaddress.ip_address("100.64.0.99"), exit_peer=GATEWAY)
    assert doc["node"] is None and doc["routed_by"] == []
    assert doc["error"] == "no node has 100.64.0.99 and no peer routes it"


def test_whois_command_text_json_and_exit_codes(running, capsys, monkeypatch):
    assert cli.main(["whois", "100.64.0.1:22"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["node:      peer-1.tail.example", "hostname:  Build-Box", "node id:   1 (stable id nP1)",
                     "addresses: 100.64.0.1, fd7a:115c:a1e0::1", "user:      alice@example.com (Alice), user id 1",
                     "tags:      -", "online:    yes"]
    assert cli.main(["whois", "100.64.0.10"]) == 0
    out = capsys.readouterr().out
    assert "node:      laptop.tail.example (this node)" in out and "online:    this node" in out
    assert cli.main(["whois", "100.64.0.2"]) == 0  # same login and display name: shown once; no stable id
    out = capsys.readouterr().out.splitlines()
    assert "user:      tagged-devices (Tagged Devices), user id 2" in out and "node id:   2" in out
    assert "tags:      tag:router" in out and "online:    no" in out
    assert cli.main(["whois", "--json", "100.64.0.99"]) == 1
    out = capsys.readouterr()
    assert json.loads(out.out)["error"] == "no node has 100.64.0.99 and no peer routes it"
    assert out.err == "sunbeam-ctl: no node has 100.64.0.99 and no peer routes it\n"
    assert cli.main(["whois", "peer-1"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err.count("\n") == 1 and "not an IP address: 'peer-1'" in out.err
    # the context's accept_routes and exit_node decide "in use"
    monkeypatch.setenv("SUNBEAM_ACCEPT_ROUTES", "true")
    monkeypatch.setenv("SUNBEAM_EXIT_NODE", "gw")
    assert cli.main(["whois", "--json", "192.168.77.5"]) == 0
    routes = json.loads(capsys.readouterr().out)["routed_by"]
    assert [(r["prefix"], r["accepted"], r["in_use"]) for r in routes] == [
        ("192.168.77.0/24", True, True), ("192.168.0.0/16", True, False), ("0.0.0.0/0", True, False)]
    assert cli.main(["whois", "192.168.77.5"]) == 0
    assert "subnet route 192.168.77.0/24 (in use)" in capsys.readouterr().out
