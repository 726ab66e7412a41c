"""``sunbeam-ctl ip``, ``whois`` and ``exit-node list`` against the real reference network:
what they say matches what the real tailscaled peers say about themselves and about us
(``tailscale status --json``, ``tailscale ip``), and the Headscale user is the one the
network's nodes were registered with ("refnet").

One sunbeam node (started with ``sunbeam-ctl connect``, as a user does) for the module;
the network has no exit node (tests/realnet/test_routes.py has one).
"""

from __future__ import annotations

import ipaddress
import json
import subprocess

import pytest

from .sunbeam_node import SunbeamNode, wait_for

pytestmark = pytest.mark.realnet

HOSTNAME = "sunbeam-lookup"
USER = "refnet"  # network.up() registers every node with this Headscale user


def _ts(peer: dict, *args: str) -> subprocess.CompletedProcess:
    """``tailscale ARGS`` on a reference peer (its CLI talks to its daemon's unix socket)."""
    return subprocess.run(peer["tailscale_cli"] + list(args), capture_output=True, text=True, timeout=30)


def _status(peer: dict) -> dict:
    res = _ts(peer, "status", "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def _v4_first(ips: list[str]) -> list[str]:
    return sorted(ips, key=lambda ip: ipaddress.ip_address(ip).version)


def _family(ips: list[str], version: int) -> list[str]:
    return [ip for ip in ips if ipaddress.ip_address(ip).version == version]


def _json(res: subprocess.CompletedProcess) -> dict:
    assert res.stdout.strip(), res.stderr
    return json.loads(res.stdout)


@pytest.fixture(scope="module")
def node(refnet):
    n = SunbeamNode(refnet, hostname=HOSTNAME)
    try:
        res = n.ctl("connect", timeout=90)
        assert res.returncode == 0, res.stdout + res.stderr
        n.wait_state("Running", timeout=30)
        # every reference peer has us in its netmap (tailscale ip resolves us by name)
        for peer in refnet["peers"][:2]:
            wait_for(lambda: _ts(peer, "ip", HOSTNAME).returncode == 0, 30, f"{peer['name']} knows {HOSTNAME}")
        yield n
    finally:
        n.close()


def test_ip_of_our_node_is_what_the_peers_see(refnet, node):
    res = node.ctl("ip")
    assert res.returncode == 0, res.stderr
    ours = res.stdout.split()
    assert len(ours) == 2 and ours == _v4_first(ours), ours
    assert ours == node.control()["addresses"] or ours == [a.split("/")[0] for a in node.control()["addresses"]]
    for peer in refnet["peers"][:2]:
        seen = _ts(peer, "ip", HOSTNAME)
        assert seen.returncode == 0 and seen.stdout.split() == ours, (peer["name"], seen.stdout, seen.stderr)
        us = next(p for p in (_status(peer).get("Peer") or {}).values() if p["HostName"] == HOSTNAME)
        assert _v4_first(us["TailscaleIPs"]) == ours
    v4, v6 = node.ctl("ip", "-4"), node.ctl("ip", "-6")
    assert v4.returncode == v6.returncode == 0
    assert v4.stdout.split() == _family(ours, 4) and v6.stdout.split() == _family(ours, 6)
    assert _ts(refnet["peers"][0], "ip", "-4", HOSTNAME).stdout.split() == v4.stdout.split()
    doc = _json(node.ctl("ip", "--json"))
    assert doc["self"] is True and doc["addresses"] == ours and doc["error"] is None
    assert doc["hostname"] == HOSTNAME and doc["name"].split(".")[0] == HOSTNAME


def test_ip_of_each_peer_matches_its_own_status(refnet, node):
    for peer in refnet["peers"][:2]:
        me = _status(peer)["Self"]
        truth = _v4_first(me["TailscaleIPs"])
        fqdn = me["DNSName"]
        for name in (peer["name"], fqdn, fqdn.rstrip(".").upper(), truth[0], truth[1]):
            res = node.ctl("ip", name)
            assert res.returncode == 0 and res.stdout.split() == truth, (name, res.stdout, res.stderr)
        for flag, version in (("-4", 4), ("-6", 6)):
            res = node.ctl("ip", flag, peer["name"])
            assert res.returncode == 0 and res.stdout.split() == _family(truth, version), res
        doc = _json(node.ctl("ip", "--json", peer["name"]))
        assert doc == {"name": fqdn.rstrip("."), "hostname": me["HostName"], "self": False,
                       "addresses": truth, "error": None}


def test_ip_of_an_unknown_peer(refnet, node):
    res = node.ctl("ip", "peer1")
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr.strip() == "sunbeam-ctl: no peer called 'peer1'; did you mean peer-1?", res.stderr
    doc = _json(node.ctl("ip", "--json", "no-such-node"))
    assert doc["addresses"] == [] and doc["error"].startswith("no peer called 'no-such-node'")


def test_whois_a_peer_names_the_node_and_the_headscale_user(refnet, node):
    for peer in refnet["peers"][:2]:
        st = _status(peer)
        me = st["Self"]
        for ip in me["TailscaleIPs"]:
            doc = _json(node.ctl("whois", "--json", ip))
            found = doc["node"]
            assert doc["error"] is None and doc["routed_by"] == [] and found is not None, doc
            assert found["name"] == me["DNSName"].rstrip(".") and found["hostname"] == peer["name"]
            assert found["addresses"] == _v4_first(me["TailscaleIPs"]) and found["self"] is False
            assert found["online"] is True and found["tags"] == []
            assert found["stable_id"] == me["ID"]
            user = found["user"]
            profile = st["User"][str(me["UserID"])]  # tailscaled's view of the same user
            assert user["id"] == me["UserID"] and USER in (user["login_name"], user["display_name"]), user
            assert (user["login_name"], user["display_name"]) == (profile["LoginName"], profile["DisplayName"])
        text = node.ctl("whois", me["TailscaleIPs"][0])
        assert text.returncode == 0, text.stderr
        lines = dict(line.split(":", 1) for line in text.stdout.splitlines())
        assert lines["node"].strip() == me["DNSName"].rstrip(".") and lines["hostname"].strip() == peer["name"]
        assert USER in lines["user"] and lines["online"].strip() == "yes"


def test_whois_our_own_address(node):
    status = node.status()
    for ip in node.ctl("ip").stdout.split():
        doc = _json(node.ctl("whois", "--json", ip))
        assert doc["node"]["self"] is True and doc["node"]["hostname"] == HOSTNAME
        assert doc["node"]["name"] == status["magicdns_name"]
        assert USER in (doc["node"]["user"]["login_name"], doc["node"]["user"]["display_name"])
    text = node.ctl("whois", node.ctl("ip", "-4").stdout.strip())
    assert text.returncode == 0 and f"node:      {status['magicdns_name']} (this node)" in text.stdout


def test_whois_of_an_address_nobody_has(node):
    for ip in ("100.64.0.250", "8.8.8.8", "fd7a:115c:a1e0::fff0"):
        res = node.ctl("whois", ip)
        assert res.returncode == 1 and res.stdout == "", res
        assert res.stderr.strip() == f"sunbeam-ctl: no node has {ip} and no peer routes it"
    doc = _json(node.ctl("whois", "--json", "8.8.8.8"))
    assert doc["node"] is None and doc["routed_by"] == [] and doc["error"]
    bad = node.ctl("whois", "peer-1")
    assert bad.returncode == 2 and "not an IP address" in bad.stderr


def test_exit_node_list_when_no_peer_offers_one(node):
    res = node.ctl("exit-node", "list")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["no exit nodes: no peer offers one",
                                       "no exit node in use (exit_node is not set in the context)"]
    doc = _json(node.ctl("exit-node", "list", "--json"))
    assert doc == {"exit_nodes": [], "configured": None, "running_exit_node": None, "in_use": None, "problem": None,
                   "error": None}


def test_peers_shows_no_routes_here(refnet, node):
    rows = {r["name"]: r for r in _json_list(node.ctl("peers", "--json"))}
    for peer in refnet["peers"][:2]:
        row = rows[peer["name"]]
        assert row["subnet_routes"] == [] and row["offers_exit"] is False and row["routes_in_use"] == []
    text = node.ctl("peers")
    col = text.stdout.splitlines()[0].index("ROUTES")
    assert all(line[col:] == "-" for line in text.stdout.splitlines()[1:]), text.stdout


def _json_list(res: subprocess.CompletedProcess) -> list:
    assert res.stdout.strip(), res.stderr
    return json.loads(res.stdout)
