"""The user's lifecycle against the real network: `sunbeam-ctl connect` starts supervisord
and every service, status/peers/ping/stop, crash recovery under supervisord."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
from sunbeam.refnet.blobs import blob_sha256
from sunbeam.ctl.daemon import process_alive
from sunbeam.shared.keys import from_text
from sunbeam.shared.sharding import owner

from .sunbeam_node import SunbeamNode, read_killing, service_pids, wait_restarted

pytestmark = pytest.mark.realnet

SOCKS = 21180
MB = 1 << 20
SERVICES = {"control", "derp", "udp", "proxy", "wg-0", "wg-1"}
CONNECTED = re.compile(r"^Connected \((100\.64\.\d+\.\d+), (fd7a:115c:a1e0:[0-9a-f:]+)\) — (\d+) peers? visible$", re.M)


@pytest.fixture()
def node(refnet):
    n = SunbeamNode(refnet, hostname="sunbeam-lc", listeners=[{"kind": "socks5", "listen": f"127.0.0.1:{SOCKS}"}],
                    extra_env={"SUNBEAM_WG_WORKERS": "2"})
    yield n
    n.close()


def _supervisord_pid(node: SunbeamNode) -> int:
    return int((node.rundir / "supervisord.pid").read_text())


def assert_forked_from(sup: int, pids: dict[str, int]) -> None:
    """Each service is a child of supervisord that did not exec (ctl/forkspawn.py): the same
    command line as supervisord (the held interpreter's), its name in /proc/<pid>/comm, and
    dirty pages it shares with its parent (the preloaded imports)."""
    sup_cmdline = Path(f"/proc/{sup}/cmdline").read_bytes()
    for svc, pid in pids.items():
        with open(f"/proc/{pid}/stat") as f:
            ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        assert ppid == sup, (svc, pid, ppid)
        assert Path(f"/proc/{pid}/cmdline").read_bytes() == sup_cmdline, svc
        assert Path(f"/proc/{pid}/comm").read_text().strip() == f"sunbeam-{svc}", svc
        with open(f"/proc/{pid}/smaps_rollup") as f:
            rollup = {p[0][:-1]: int(p[1]) for p in map(str.split, f) if p[0].endswith(":") and len(p) > 1}
        # dirty pages shared: the parent's heap, not written since the fork (an exec'd process has ~none)
        assert rollup["Shared_Dirty"] > 4 * 1024, (svc, rollup)


def _gone(pid: int) -> bool:
    return not process_alive(pid)


def test_connect_status_peers_ping_stop_transcript(refnet, node):
    res = node.ctl("connect", timeout=90)
    out = res.stdout
    assert res.returncode == 0, out + res.stderr + node.log()[-2000:]
    m = CONNECTED.search(out)
    assert m, out
    assert int(m.group(3)) >= 2  # both reference peers (tests may add more)
    assert "services up" in out  # progress while it came up
    # Connected means reachable: a real peer gets through at once. (Declared on the first
    # map, the peers still had "no UDP or DERP addr" for us and their WireGuard waited 5 s.)
    first = subprocess.run(refnet["peers"][1]["tailscale_cli"] + [
        "ping", "--icmp", "--c=1", "--timeout=3s", "--until-direct=false", m.group(1)], capture_output=True, text=True)
    assert first.returncode == 0 and "pong from" in first.stdout, first.stdout + first.stderr
    sup = _supervisord_pid(node)
    assert not _gone(sup)
    assert_forked_from(sup, service_pids(node))

    status = node.ctl("status")
    assert status.returncode == 0, status.stdout
    lines = status.stdout.splitlines()
    assert lines[0] == "VPN: running"
    assert f"addresses: {m.group(1)}, {m.group(2)}" in lines
    assert "derp home: region 999" in lines
    for svc in SERVICES:
        assert re.search(rf"^  {re.escape(svc)}\s+pid \d+\s+running", status.stdout, re.M), status.stdout
    as_json = json.loads(node.ctl("status", "--json").stdout)
    assert as_json["running"] and {s["service"] for s in as_json["services"]} == SERVICES

    # the runtime dir and every socket and log in it: the owning user only
    assert stat.S_IMODE(node.rundir.stat().st_mode) == 0o700
    socks = list(node.rundir.glob("*.sock"))
    assert len(socks) >= 13
    for f in [*socks, *node.rundir.glob("*.log")]:
        assert stat.S_IMODE(f.stat().st_mode) & 0o077 == 0, f"{f} is {oct(f.stat().st_mode)}"

    p1, p2 = refnet["peers"][:2]
    ping = node.ctl("ping", p1["name"], "-c", "2", timeout=60)
    assert ping.returncode == 0 and f"pong from {p1['name']}" in ping.stdout, ping.stdout + ping.stderr

    peers = node.ctl("peers")
    assert peers.returncode == 0, peers.stdout + peers.stderr
    for p in (p1, p2):
        row = next((line for line in peers.stdout.splitlines() if line.split()[:1] == [p["name"]]), None)
        assert row is not None and p["ips"][0] in row, peers.stdout
    listed = {e["name"]: e for e in json.loads(node.ctl("peers", "--json").stdout)}
    assert listed[p1["name"]]["online"] is True and listed[p1["name"]]["last_handshake"] > 0, listed
    assert listed[p1["name"]]["rx_bytes"] > 0 and listed[p1["name"]]["tx_bytes"] > 0, listed
    assert listed[p1["name"]]["path"] in ("direct", "derp"), listed

    again = node.ctl("connect", timeout=30)
    assert again.returncode == 1 and "already running" in again.stdout, again.stdout
    assert _supervisord_pid(node) == sup  # the running one is untouched

    pids = service_pids(node)
    stop = node.ctl("stop", timeout=60)
    assert stop.returncode == 0, stop.stdout
    assert stop.stdout.splitlines() == ["Asking VPN daemon to stop...", "Daemon acknowledged shutdown."]
    assert _gone(sup) and all(_gone(pid) for pid in pids.values()), pids
    assert not list(node.rundir.glob("*.sock")), list(node.rundir.iterdir())
    after = node.ctl("status")
    assert after.returncode == 1 and after.stdout.strip() == "VPN: not running"
    assert node.ctl("disconnect").returncode == 0  # nothing to stop is not an error


def test_download_survives_kill9_of_worker_udp_and_derp(refnet, node):
    res = node.ctl("connect", timeout=90)
    assert res.returncode == 0, res.stdout + res.stderr
    peer = refnet["peers"][1]
    netmap = json.loads(node.ctl("netmap", "--json").stdout)
    key = next(p["key"] for p in netmap["peers"] if p["hostname"] == peer["name"])
    worker = f"wg-{owner(from_text('nodekey:', key), 2)}"  # the worker holding this peer's sessions
    # 100 MB at 5 MB/s: ~20 s, so each kill lands mid-transfer
    curl = subprocess.Popen(refnet["exec_prefix"] + [
        "curl", "-sS", "--fail", "--max-time", "180", "--limit-rate", "5M", "--socks5-hostname",
        f"127.0.0.1:{SOCKS}", f"http://{peer['name']}:{peer['service_port']}/blob/100M?seed=kill"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert curl.stdout is not None
    got = read_killing(curl.stdout, node, [(3 * MB, worker), (30 * MB, "udp"), (55 * MB, "derp")])
    assert curl.wait(timeout=60) == 0, curl.stderr.read() if curl.stderr else ""
    assert set(got.killed) == {worker, "udp", "derp"}, got.killed
    assert got.nbytes == 100 * MB and got.sha256 == blob_sha256(100 * MB, "kill")
    wait_restarted(node, got.killed)  # supervisord restarted each one: a new pid, running; traffic flows again
    pids = service_pids(node)
    assert_forked_from(_supervisord_pid(node), {svc: pids[svc] for svc in got.killed})  # forked again
    ping = node.ctl("ping", peer["name"], "-c", "2", timeout=60)
    assert ping.returncode == 0, ping.stdout


def test_stale_sockets_of_a_killed_run_do_not_block_connect(refnet, node):
    assert node.ctl("connect", timeout=90).returncode == 0
    pids = [_supervisord_pid(node), *service_pids(node).values()]
    for pid in pids:  # the whole daemon dies at once, as on a power cut
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not all(_gone(pid) for pid in pids):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert list(node.rundir.glob("*.sock"))  # left behind
    assert node.ctl("status").stdout.strip() == "VPN: not running"
    res = node.ctl("connect", timeout=90)
    assert res.returncode == 0 and CONNECTED.search(res.stdout), res.stdout + res.stderr
    assert "removed leftovers of an earlier run" in res.stdout
    assert node.ctl("stop", timeout=60).returncode == 0


def test_connect_foreground_stops_on_sigterm(refnet, node):
    proc = subprocess.Popen(refnet["exec_prefix"] + ["sunbeam-ctl", "connect", "--foreground"], env=node.env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith(("Connected", "Connect failed")):
            break
    assert CONNECTED.search("".join(seen)), seen
    sup = _supervisord_pid(node)
    pids = service_pids(node)
    assert set(pids) == SERVICES
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert _gone(sup) and all(_gone(pid) for pid in pids.values())
    assert not list(node.rundir.glob("*.sock"))


def test_connect_with_a_rejected_key_says_why_and_leaves_nothing(refnet):
    n = SunbeamNode(refnet, hostname="sunbeam-badkey", auth_key="hskey-auth-" + "x" * 90,
                    extra_env={"SUNBEAM_WG_WORKERS": "1"})
    try:
        res = n.ctl("connect", timeout=90)
        assert res.returncode == 1, res.stdout
        assert "Connect failed: auth key rejected" in res.stdout, res.stdout
        assert "last lines of" in res.stdout and "control_error" in res.stdout  # the failing service's log
        assert not (n.rundir / "supervisord.pid").exists()
        assert not list(n.rundir.glob("*.sock"))
        assert n.ctl("status").stdout.strip() == "VPN: not running"
    finally:
        n.close()
