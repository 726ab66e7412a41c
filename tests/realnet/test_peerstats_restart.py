"""Per-peer traffic totals survive a wg worker's kill -9 under supervisord (issue 16 item 12):
`sunbeam-ctl peers` went from 50.8 MiB to 956 B when supervisord restarted the worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest
from sunbeam.services.wg.statsfile import decode, stats_path
from sunbeam.shared.keys import from_text

from .sunbeam_node import SunbeamNode, wait_for

pytestmark = pytest.mark.realnet

SOCKS = 21190
MB = 1 << 20


@pytest.fixture()
def node(refnet):
    n = SunbeamNode(refnet, hostname="sunbeam-stats", listeners=[{"kind": "socks5", "listen": f"127.0.0.1:{SOCKS}"}],
                    extra_env={"SUNBEAM_WG_WORKERS": "2"})
    yield n
    n.close()


def _peer(node: SunbeamNode, name: str) -> dict:
    res = node.ctl("peers", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    return next(p for p in json.loads(res.stdout) if p["name"] == name)


def _pid(node: SunbeamNode, service: str) -> int | None:
    return next((s["pid"] for s in node.status().get("services", []) if s["service"] == service), None)


def test_rx_tx_and_last_handshake_survive_kill9_of_the_owning_worker(refnet, node):
    res = node.ctl("connect", timeout=90)
    assert res.returncode == 0, res.stdout + res.stderr
    peer = refnet["peers"][1]
    # traffic both ways: a 6 MiB download, plus the requests and ACKs that went out
    blob = subprocess.run(refnet["exec_prefix"] + [
        "curl", "-sS", "--fail", "--max-time", "60", "-o", "/dev/null", "-w", "%{size_download}",
        "--socks5-hostname", f"127.0.0.1:{SOCKS}", f"http://{peer['name']}:{peer['service_port']}/blob/6M?seed=st"],
        check=False, capture_output=True, text=True, timeout=90)
    assert blob.returncode == 0 and blob.stdout == str(6 * MB), blob.stdout + blob.stderr
    before = _peer(node, peer["name"])
    assert before["rx_bytes"] > 6 * MB and before["tx_bytes"] > 0 and before["last_handshake"] > 0, before
    k = before["worker"]
    key = from_text("nodekey:", before["key"])
    # the worker saves its totals every second: wait until the file holds what we read
    path = stats_path(node.rundir, k)

    def saved():
        try:
            t = decode(path.read_bytes(), k, 2).get(key)
        except (OSError, ValueError):
            return None
        return t if t and t.rx_bytes >= before["rx_bytes"] and t.tx_bytes >= before["tx_bytes"] else None

    wait_for(saved, 10, f"wg-{k} saved the totals we read")
    assert os.stat(path).st_mode & 0o077 == 0
    pid = _pid(node, f"wg-{k}")
    assert pid
    os.kill(pid, signal.SIGKILL)
    # supervisord restarts it; the new process gets the netmap and reports the peer again
    wait_for(lambda: _pid(node, f"wg-{k}") not in (None, pid), 30, f"supervisord restarted wg-{k}")
    after = wait_for(lambda: (p := _peer(node, peer["name"]))["worker"] == k and p, 30, "the peer reported again")
    assert after["rx_bytes"] >= before["rx_bytes"] and after["tx_bytes"] >= before["tx_bytes"], (before, after)
    assert after["last_handshake"] >= before["last_handshake"], (before, after)
    # and it counts on from there: a ping needs a new handshake with the new process
    ping = node.ctl("ping", peer["name"], "-c", "2", timeout=60)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    grown = wait_for(lambda: (p := _peer(node, peer["name"]))["last_handshake"] > after["last_handshake"] and p,
                     30, "a handshake with the restarted worker")
    assert grown["rx_bytes"] > after["rx_bytes"] and grown["tx_bytes"] > after["tx_bytes"], (after, grown)
    health = next(s for s in node.status()["services"] if s["service"] == f"wg-{k}")
    assert health["counters"].get("stats_file_dropped", 0) == 0, health
