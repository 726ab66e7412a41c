"""The data plane against real tailscaled peers: WireGuard over DERP, ICMP and TSMP."""

from __future__ import annotations

import subprocess
import time

import pytest
import zmq

from sunbeam.refnet import network
from sunbeam.shared.keys import from_text
from sunbeam.shared.sharding import owner

from .sunbeam_node import SunbeamNode, until_ok

pytestmark = pytest.mark.realnet

WORKERS = 2


@pytest.fixture(scope="module")
def node(refnet_derp):
    n = SunbeamNode(refnet_derp, hostname="sunbeam-dp")
    n.start_pipeline(workers=WORKERS)
    n.wait_state("Running", timeout=30)
    yield n
    n.close()


def _our_ip(node) -> str:
    return node.control()["addresses"][0].split("/")[0]


def _ts_ping(peer: dict, target: str, kind: str, count: int = 5) -> subprocess.CompletedProcess:
    return subprocess.run(peer["tailscale_cli"] + ["ping", f"--{kind}", f"--c={count}", "--until-direct=false",
                                                  "--timeout=5s", target],
                          capture_output=True, text=True, timeout=90)




def _proxy_ping(node, dst: str, count: int = 3, timeout: float = 5.0):
    from sunbeam.shared.messages.ping import PING_REPLY_CODEC, PING_REQUEST_CODEC, PingPeer

    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, int((timeout * count + 5) * 1000))
    sock.connect(f"ipc://{node.rundir / 'proxy-ping.sock'}")
    try:
        sock.send(PING_REQUEST_CODEC.encode(PingPeer(dst_ip=dst, count=count, timeout=timeout)))
        return PING_REPLY_CODEC.decode(sock.recv())
    finally:
        sock.close()


def test_real_peer_pings_us_with_icmp_and_tsmp(refnet_derp, node):
    peer = refnet_derp["peers"][0]
    ours = _our_ip(node)
    for kind in ("icmp", "tsmp"):
        res = until_ok(lambda: _ts_ping(peer, ours, kind), timeout=30)
        assert res.returncode == 0, f"{kind}: {res.stdout}{res.stderr}\n{node.log('wg-0')[-2000:]}"
        assert "pong from sunbeam-dp" in res.stdout, res.stdout


def test_our_echo_to_peers_is_answered(refnet_derp, node):
    for peer in refnet_derp["peers"]:
        result = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            result = _proxy_ping(node, peer["ips"][0], count=3, timeout=2.0)
            if any(r is not None for r in result.rtts):
                break
        assert result is not None and any(r is not None for r in result.rtts), result


def test_each_peer_served_by_its_owner_and_all_reachable(refnet_derp, node):
    if len(refnet_derp["peers"]) < 3:
        network.add_peer(refnet_derp["name"], log=lambda m: None)
        refnet_derp.update(network.load_state(refnet_derp["name"]))
    watch = node.watch()
    try:
        netmap = watch.wait_for(lambda nm: len(nm.peers) >= 3, 15)
    finally:
        watch.close()
    expected: dict[int, set[str]] = {k: set() for k in range(WORKERS)}
    for p in netmap.peers:
        expected[owner(from_text("nodekey:", p.key), WORKERS)].add(p.hostname)
    for peer in refnet_derp["peers"]:
        _answered_ping(node, peer)
    for k in range(WORKERS):
        counters = node.counters(f"wg-{k}")
        assert counters["peers"] == len(expected[k]), (k, counters, expected)
        if expected[k]:
            assert counters.get("wg_handshake_completed", 0) >= 1, counters


def _answered_ping(node, peer: dict) -> None:
    """Echo requests to ``peer`` until one is answered (the first waits for the handshake)."""
    deadline = time.monotonic() + 30
    while True:
        result = _proxy_ping(node, peer["ips"][0], count=2, timeout=2.0)
        if any(r is not None for r in result.rtts) or time.monotonic() > deadline:
            break
    assert any(r is not None for r in result.rtts), (peer["name"], result)


def test_sunbeam_ctl_ping_by_name(refnet_derp, node):
    target = refnet_derp["peers"][1]
    deadline = time.monotonic() + 30
    while True:
        res = node.ctl("ping", target["name"], "-c", "3")
        if res.returncode == 0 or time.monotonic() > deadline:
            break
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"pong from {target['name']} ({target['ips'][0]}) via DERP(999) in " in res.stdout
    unknown = node.ctl("ping", "no-such-peer")
    assert unknown.returncode == 1 and "no peer called 'no-such-peer'" in unknown.stdout


def test_peers_and_ping_report_the_derp_path(refnet_derp, node, capsys):
    import json

    from sunbeam.ctl.peers import peers_command, ping_command

    for peer in refnet_derp["peers"]:  # a session with each peer, its traffic over DERP
        _answered_ping(node, peer)
    capsys.readouterr()
    assert peers_command(node.rundir, as_json=True) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    for peer in refnet_derp["peers"]:
        row = rows[peer["name"]]
        assert set(row["addresses"]) == set(peer["ips"]), row
        assert row["online"] is True and row["key"].startswith("nodekey:") and row["id"] > 0, row
        assert (row["path"], row["endpoint"], row["derp_region"]) == ("derp", "", 999), row
        assert row["last_handshake"] > time.time() - 300 and row["rx_bytes"] > 0 and row["tx_bytes"] > 0, row
        assert row["worker"] == owner(from_text("nodekey:", row["key"]), WORKERS), row
    assert peers_command(node.rundir, as_json=False) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["NAME", "ADDRESSES", "ONLINE", "PATH"]
    for peer in refnet_derp["peers"]:
        [line] = [ln for ln in table if ln.startswith(peer["name"] + " ")]
        assert " yes " in line and " DERP(999) " in line and " ago " in line, line
    target = refnet_derp["peers"][0]
    assert ping_command(node.rundir, target["name"], 2) == 0
    out = capsys.readouterr().out
    assert f"pong from {target['name']} ({target['ips'][0]}) via DERP(999) in " in out, out
