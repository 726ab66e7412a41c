"""The workers' direct sockets against a real tailscaled (issue 20 item 2): with
SUNBEAM_DIRECT_SOCKETS=1 the datagrams of a peer on a direct path go to the owning worker's
own socket, not through udp, and a download survives kill -9 of that worker and of udp."""

from __future__ import annotations

import hashlib
import json
import subprocess

import pytest
from sunbeam.refnet.blobs import blob_sha256
from sunbeam.shared.keys import from_text
from sunbeam.shared.sharding import owner

from .sunbeam_node import SunbeamNode, read_killing, wait_for, wait_restarted

pytestmark = pytest.mark.realnet

SOCKS = 21280
MB = 1 << 20


@pytest.fixture()
def node(refnet):
    n = SunbeamNode(refnet, hostname="sunbeam-direct", listeners=[{"kind": "socks5", "listen": f"127.0.0.1:{SOCKS}"}],
                    extra_env={"SUNBEAM_WG_WORKERS": "2", "SUNBEAM_DIRECT_SOCKETS": "1"})
    yield n
    n.close()


def _worker_of(node: SunbeamNode, peer: dict) -> str:
    netmap = json.loads(node.ctl("netmap", "--json").stdout)
    key = next(p["key"] for p in netmap["peers"] if p["hostname"] == peer["name"])
    return f"wg-{owner(from_text('nodekey:', key), 2)}"


def _direct(node: SunbeamNode, peer: dict) -> None:
    def check():
        node.ctl("ping", peer["name"], "-c", "1", timeout=30)
        rows = {e["name"]: e for e in json.loads(node.ctl("peers", "--json").stdout or "[]")}
        return rows.get(peer["name"], {}).get("path") == "direct"

    wait_for(check, 60, f"a direct path to {peer['name']}", interval=0.5)


def _fetch(peer: dict, refnet: dict, size_mb: int, seed: str) -> None:
    res = subprocess.run(refnet["exec_prefix"] + [
        "curl", "-sS", "--fail", "--max-time", "60", "--socks5-hostname", f"127.0.0.1:{SOCKS}",
        f"http://{peer['name']}:{peer['service_port']}/blob/{size_mb}M?seed={seed}"], capture_output=True)
    assert res.returncode == 0, res.stderr
    assert hashlib.sha256(res.stdout).hexdigest() == blob_sha256(size_mb * MB, seed)


def test_a_direct_peers_datagrams_go_to_its_workers_socket_and_survive_kill9(refnet, node):
    res = node.ctl("connect", timeout=90)
    assert res.returncode == 0, res.stdout + res.stderr
    peer = refnet["peers"][1]
    worker = _worker_of(node, peer)
    _direct(node, peer)
    _fetch(peer, refnet, 5, "direct")  # the connected sockets are open once the path is trusted
    wc0, udp0 = node.counters(worker), node.counters("udp")
    _fetch(peer, refnet, 10, "direct2")
    wc, udp = node.counters(worker), node.counters("udp")
    got_direct = wc.get("direct.rx.datagrams", 0) - wc0.get("direct.rx.datagrams", 0)
    sent_direct = wc.get("direct.tx.datagrams", 0) - wc0.get("direct.tx.datagrams", 0)
    via_udp = udp.get("rx.to_wg", 0) - udp0.get("rx.to_wg", 0)
    # 10 MB is > 7,000 datagrams of ~1,400 bytes; all but a few (a handshake, the odd
    # datagram from another source) come in on the worker's socket, not udp's
    assert wc.get("direct.opened", 0) >= 1 and got_direct > 5000, (wc, udp)
    assert via_udp < got_direct / 20, (via_udp, got_direct, udp)
    assert sent_direct > 10, wc  # our ACKs leave from the worker too (coalesced: tens per 10 MB)

    def disco_through_worker():  # heartbeat pongs (every 3 s while in use) land on the worker's socket
        node.ctl("ping", peer["name"], "-c", "1", timeout=30)
        return node.counters(worker).get("direct.to_udp", 0) >= 1 and node.counters("udp").get("rx.from_wg", 0) >= 1

    wait_for(disco_through_worker, 20, "disco forwarded by the worker to udp", interval=1.0)

    # 100 MB at 5 MB/s (~20 s): kill -9 the worker holding the peer, then udp, mid-transfer
    curl = subprocess.Popen(refnet["exec_prefix"] + [
        "curl", "-sS", "--fail", "--max-time", "180", "--limit-rate", "5M", "--socks5-hostname",
        f"127.0.0.1:{SOCKS}", f"http://{peer['name']}:{peer['service_port']}/blob/100M?seed=dkill"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert curl.stdout is not None
    got = read_killing(curl.stdout, node, [(10 * MB, worker), (45 * MB, "udp")])
    assert curl.wait(timeout=60) == 0, curl.stderr.read() if curl.stderr else ""
    assert set(got.killed) == {worker, "udp"}, got.killed
    assert got.nbytes == 100 * MB and got.sha256 == blob_sha256(100 * MB, "dkill")
    wait_restarted(node, got.killed)
    # the restarted worker opens its socket again once the restarted udp trusts the path
    _direct(node, peer)
    wait_for(lambda: node.counters(worker).get("direct.opened", 0) >= 1, 30, "a direct socket in the new worker")
    before = node.counters(worker).get("direct.rx.datagrams", 0)
    _fetch(peer, refnet, 5, "after")
    assert node.counters(worker).get("direct.rx.datagrams", 0) - before > 2000, node.counters(worker)
