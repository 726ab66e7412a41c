"""The control plane against a real Headscale and real tailscaled peers."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import datetime

import pytest
from sunbeam.refnet import network
from sunbeam.services.control.client import ANNOUNCE_TIMEOUT

from .control_mitm import ControlMitm
from .sunbeam_node import SunbeamNode

pytestmark = pytest.mark.realnet

ZERO_DISCO = "discokey:" + "0" * 64


@pytest.fixture(scope="module")
def node(refnet):
    n = SunbeamNode(refnet, hostname="sunbeam-test")
    n.start()
    n.wait_state("Running", timeout=30)
    yield n
    n.close()


def _hs_nodes(refnet) -> dict[str, dict]:
    out = subprocess.run(refnet["headscale_cli"] + ["nodes", "list", "-o", "json"], capture_output=True, text=True,
                         check=True)
    return {n["given_name"]: n for n in json.loads(out.stdout)}


def _ts_status(peer: dict) -> dict:
    out = subprocess.run(peer["tailscale_cli"] + ["status", "--json"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_registered_online_and_seen_by_real_peer(refnet, node):
    control = node.control()
    ours = [a.split("/")[0] for a in control["addresses"]]
    assert len(ours) == 2 and ours[0].startswith("100.")
    hs = _hs_nodes(refnet)["sunbeam-test"]
    assert hs["online"] is True
    assert hs["disco_key"].startswith("discokey:") and hs["disco_key"] != ZERO_DISCO
    assert hs["ip_addresses"] == ours
    keys = json.loads((node.statedir / "keys.json").read_text())
    assert keys["node"].startswith("privkey:")
    deadline = time.monotonic() + 10
    while True:
        listed = {p["HostName"]: p for p in (_ts_status(refnet["peers"][0]).get("Peer") or {}).values()}
        if "sunbeam-test" in listed or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert sorted(listed["sunbeam-test"]["TailscaleIPs"]) == sorted(ours)
    out = node.ctl("status")
    assert out.returncode == 0
    assert out.stdout.splitlines()[:4] == [
        "VPN: running", f"addresses: {', '.join(ours)}", f"peers: {control['peers']}", "derp home: region 999"]


def test_netmap_holds_reference_peers(refnet, node):
    watch = node.watch()
    try:
        netmap = watch.wait_for(lambda nm: {"peer-1", "peer-2"} <= {p.hostname for p in nm.peers}, 10)
    finally:
        watch.close()
    by_name = {p.hostname: p for p in netmap.peers}
    for ref in refnet["peers"]:
        peer = by_name[ref["name"]]
        real = _ts_status(ref)["Self"]
        assert sorted(a.split("/")[0] for a in peer.addresses) == sorted(ref["ips"])
        assert peer.key == real["PublicKey"]
        assert peer.disco_key and peer.disco_key.startswith("discokey:") and peer.disco_key != ZERO_DISCO
        assert peer.home_derp == 999
        assert peer.online is True
    assert netmap.self_node is not None and netmap.self_node.hostname == "sunbeam-test"
    assert netmap.derp_map is not None and 999 in (netmap.derp_map.regions or {})


def test_peer_joining_mid_stream_appears_and_logout_removes_it(refnet, node):
    watch = node.watch()
    try:
        # the session's network may hold nodes other tests left (their own sunbeam nodes):
        # count from what is there now, not from the two reference peers
        baseline = len(watch.wait_for(lambda nm: len(nm.peers) >= 2, 10).peers)
        entry = network.add_peer(refnet["name"], ephemeral=True, log=lambda m: None)
        t0 = time.monotonic()
        watch.wait_for(lambda nm: any(p.hostname == entry["name"] for p in nm.peers), 5)
        appeared = time.monotonic() - t0
        subprocess.run(entry["tailscale_cli"] + ["logout"], check=True, capture_output=True, timeout=60)
        watch.wait_for(lambda nm: all(p.hostname != entry["name"] for p in nm.peers), 10)
    finally:
        watch.close()
    print(f"third peer appeared in our netmap {appeared:.2f} s after `tailscale up` returned")
    assert node.control()["peers"] == baseline


def test_restart_keeps_node_id_and_addresses_without_auth_key(refnet, node):
    before = node.control()
    keys_before = (node.statedir / "keys.json").read_text()
    remembered = json.loads((node.statedir / "home-derp.json").read_text())
    assert remembered == {"control_url": refnet["control_url"], "region": 999}
    waits = node.log().count('"announce_wait"')
    assert waits >= 1  # a new node: the server first knew it without a home region
    assert node.stop() == 0
    # a key that would be rejected: a registered node must not need it again
    node.env["SUNBEAM_AUTH_KEY"] = "hskey-auth-not-a-real-key"
    node.start()
    after = node.wait_state("Running", timeout=30)
    assert (after["node_id"], after["addresses"]) == (before["node_id"], before["addresses"])
    assert (node.statedir / "keys.json").read_text() == keys_before
    node.env["SUNBEAM_AUTH_KEY"] = refnet["auth_keys"]["reusable"]
    # the remembered home region went out with the first requests: the server never showed
    # peers this node without one, so Running came without waiting for it
    assert node.log().count('"announce_wait"') == waits


def test_survives_headscale_restart(refnet, node):
    before = node.control()
    attempts = node.counters().get("connect_attempts", 0)
    network.restart_headscale(refnet["name"], down_for=3.0)
    # Reconnecting was entered while the server was gone, and the netmap stayed published.
    assert "Reconnecting" in node.log() or node.control()["state"] == "Reconnecting"
    watch = node.watch()
    try:
        assert len(watch.wait_for(lambda nm: True, 5).peers) >= 2
    finally:
        watch.close()
    after = node.wait_state("Running", timeout=60)
    assert (after["node_id"], after["addresses"]) == (before["node_id"], before["addresses"])
    assert node.counters()["connect_attempts"] > attempts
    assert _hs_nodes(refnet)["sunbeam-test"]["online"] is True


def test_bad_auth_key_is_a_clear_error_without_retry_storm(refnet):
    # well-formed but unknown to Headscale (a malformed one is refused the same way, with
    # Headscale's parse error as the reason)
    bogus = "hskey-auth-" + "A" * 12 + "-" + "b" * 64
    bad = SunbeamNode(refnet, hostname="sunbeam-badkey", auth_key=bogus)
    try:
        bad.start()
        control = bad.wait_state("Error", timeout=20)
        assert "auth key rejected" in control["reason"] and "invalid" in control["reason"]
        out = bad.ctl("status")
        assert out.returncode == 1
        assert out.stdout.splitlines()[0].startswith("VPN: error: auth key rejected")
        time.sleep(5)  # an absence (no retry) shows only over time: 5 s is > 2 unreachable-retry periods
        assert bad.counters()["connect_attempts"] == 1
        assert bad.control()["state"] == "Error"
        assert "b" * 64 not in bad.log()  # the key itself is never logged
    finally:
        bad.close()
    assert "sunbeam-badkey" not in _hs_nodes(refnet)


def test_running_after_the_announce_timeout_when_the_server_never_shows_our_region(refnet):
    # a control server that never shows our home DERP region in its view of us (here: the
    # real Headscale, its answers rewritten on the way) must not keep us out of Running
    node = SunbeamNode(refnet, hostname="sunbeam-noecho")
    mitm = ControlMitm(refnet, node.statedir)
    node.env["SUNBEAM_CONTROL_URL"] = mitm.url

    def hide_our_region(msg: dict) -> dict:
        if msg.get("Node"):
            msg["Node"]["HomeDERP"] = 0
            msg["Node"].pop("DERP", None)
        return msg

    mitm.rewrite = hide_our_region
    try:
        node.start()
        node.wait_state("Running", timeout=40)
        assert node.counters().get("announce_unconfirmed") == 1
        at = {}
        for line in node.log().splitlines():
            event = json.loads(line) if line.startswith("{") else {}
            name = event.get("event")
            if name == "control_state":
                name = event["state"]
            if name in ("announce_wait", "announce_unconfirmed", "Running"):
                at.setdefault(name, datetime.fromisoformat(event["ts"].replace("Z", "+00:00")).timestamp())
        assert set(at) == {"announce_wait", "announce_unconfirmed", "Running"}, at
        waited = at["Running"] - at["announce_wait"]
        assert ANNOUNCE_TIMEOUT - 0.01 <= waited < ANNOUNCE_TIMEOUT + 2, waited
    finally:
        node.close()
        mitm.close()
