"""The two-host reference topology (sunbeam.refnet.topology), proved with real traffic.

Namespace A: Headscale (control, DERP, STUN) on 10.77.0.1 (+10.77.0.11) and tailscaled
peers; namespace B on the same link (split) or behind router R's masquerade (nat). Checked:
control and DERP reachable from B, `block_derp` / `block_udp` cut exactly what they claim
(on, on again, off, off again), the address A sees (UDP echo and real STUN to Headscale),
the NAT's mapping and filtering, and a real tailscaled in B forming a direct path to A's
peer, keeping it with DERP blocked and falling back to DERP with UDP blocked.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from sunbeam.refnet import netns, network, topology
from sunbeam.refnet.blobs import blob_sha256
from sunbeam.refnet.cli import fetch_via_socks
from sunbeam.refnet.install import install
from sunbeam.refnet.tailscale import Peer
from sunbeam.ctl.daemon import process_alive
from sunbeam.shared.proto.stun import binding_request, parse_response

pytestmark = pytest.mark.realnet

KINDS = ("split", "nat")


@pytest.fixture(params=KINDS)
def host(request):
    return request.getfixturevalue(f"{request.param}_host")


def _curl(host: dict, url: str, max_time: float = 3) -> subprocess.CompletedProcess:
    return subprocess.run(host["exec_prefix"] + ["curl", "-sS", "--max-time", str(max_time), url],
                          check=False, capture_output=True, text=True, timeout=max_time + 10)


def _reachable(host: dict, addr: str) -> bool:
    res = _curl(host, f"http://{addr}:8080/key?v=113", max_time=1.5)
    if res.returncode == 0:
        assert "publicKey" in json.loads(res.stdout)
    return res.returncode == 0


def _udp_socket(ns: str, bind: str = "0.0.0.0") -> socket.socket:
    with netns.entered(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((bind, 0))
    return s


def _recv(s: socket.socket, timeout: float) -> tuple[bytes, tuple] | None:
    s.settimeout(timeout)
    try:
        return s.recvfrom(2048)
    except TimeoutError:
        return None


class UdpEcho:
    """A UDP responder in namespace A on 10.77.0.1: answers every datagram with "ip:port", the
    sender's address as A sees it."""

    def __init__(self, ns: str) -> None:
        self.sock = _udp_socket(ns, topology.A_ADDR)
        self.port = self.sock.getsockname()[1]
        self.seen: list[tuple[str, int]] = []
        self._stop = False
        self.sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                _, src = self.sock.recvfrom(2048)
            except TimeoutError:
                continue
            self.seen.append(src)
            self.sock.sendto(f"{src[0]}:{src[1]}".encode(), src)

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self.sock.close()


def _echo(client: socket.socket, echo: UdpEcho, timeout: float = 1.0) -> str | None:
    client.sendto(b"who am i", (topology.A_ADDR, echo.port))
    got = _recv(client, timeout)
    return got[0].decode() if got else None


def _stun(client: socket.socket, timeout: float = 1.0) -> str | None:
    txid = os.urandom(12)
    client.sendto(binding_request(txid), (topology.A_ADDR, topology.STUN_PORT))
    got = _recv(client, timeout)
    if got is None:
        return None
    rtxid, mapped = parse_response(got[0])
    assert rtxid == txid and got[1] == (topology.A_ADDR, topology.STUN_PORT)
    return mapped


def test_attach_needs_a_hosts_network():
    with pytest.raises(topology.TopologyError, match="hosts=True"):
        topology.attach({"name": "x", "netns": "x", "control_url": "http://127.0.0.1:8080"}, "split")
    with pytest.raises(ValueError):
        topology.attach({"name": "x", "netns": "x", "hosts": True}, "bridge")


def test_peers_in_a_use_control_at_10_77_0_1(refnet_hosts):
    assert refnet_hosts["hosts"] and refnet_hosts["control_url"] == "http://10.77.0.1:8080"
    for peer in refnet_hosts["peers"]:
        cli = peer["tailscale_cli"]
        st = json.loads(subprocess.run(cli + ["status", "--json"], capture_output=True, text=True, check=True).stdout)
        assert st["BackendState"] == "Running" and st["Self"]["Online"]
        prefs = json.loads(subprocess.run(cli + ["debug", "prefs"], capture_output=True, text=True, check=True).stdout)
        assert prefs["ControlURL"] == "http://10.77.0.1:8080"
        dm = json.loads(subprocess.run(cli + ["debug", "derp-map"], capture_output=True, text=True, check=True).stdout)
        (node,) = dm["Regions"]["999"]["Nodes"]
        assert (node["HostName"], node["IPv4"], node["DERPPort"], node["STUNPort"]) == ("10.77.0.1", "10.77.0.1", 8080, 3478)


def ip(ns: str, *args: str) -> str:
    return subprocess.run(["ip", "-n", ns, *args], capture_output=True, text=True, check=True).stdout


def test_addresses_and_routes(refnet_hosts, host):
    a = refnet_hosts["netns"]
    assert "10.77.0.1/24" in ip(a, "-o", "addr", "show", "dev", "sbh0")
    assert "10.77.0.11/24" in ip(a, "-o", "addr", "show", "dev", "sbh0")
    routes_a = ip(a, "route")
    assert "10.88." not in routes_a and "default via 192.0.2.254 dev sb0" in routes_a
    assert re.search(r"^10\.77\.0\.0/24 dev sbh0 proto kernel scope link", routes_a, re.MULTILINE)
    b = host["netns"]
    assert f"{host['local_addr']}/24" in ip(b, "-o", "addr")
    gateway = "10.77.0.1" if host["kind"] == "split" else "10.88.0.1"
    assert f"default via {gateway}" in ip(b, "route")
    # only R forwards (and only between A and B: it has no other link)
    assert _forwarding(refnet_hosts["exec_prefix"]) == _forwarding(host["exec_prefix"]) == "0"
    if host["kind"] == "nat":
        r = host["router_netns"]
        assert "10.77.0.3/24" in ip(r, "-o", "addr", "show", "dev", "sbh1")
        assert _forwarding(host["router_exec_prefix"]) == "1"
        assert sorted(line.split(":")[1].strip().split("@")[0] for line in ip(r, "-o", "link").splitlines()) == \
            ["lo", "sbh1", "sbr0"]


def _forwarding(prefix: list[str]) -> str:
    return subprocess.run(prefix + ["sysctl", "-n", "net.ipv4.ip_forward"], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_control_reachable_and_block_derp(host, refnet_hosts):
    assert _reachable(host, "10.77.0.11") and _reachable(host, "10.77.0.1")
    # an established connection to the DERP host, to show it stalls too
    with netns.entered(host["netns"]):
        conn = socket.create_connection(("10.77.0.1", 8080), timeout=3)
    request = b"GET /health HTTP/1.1\r\nHost: 10.77.0.1\r\n\r\n"
    conn.sendall(request)
    assert conn.recv(4096).startswith(b"HTTP/1.1 200")
    for _ in range(2):  # idempotent
        topology.block_derp(refnet_hosts, True)
    try:
        assert not _reachable(host, "10.77.0.1")
        assert _reachable(host, "10.77.0.11")  # control stays up
        conn.sendall(request)
        conn.settimeout(1.5)
        with pytest.raises(TimeoutError):
            conn.recv(4096)
    finally:
        conn.close()
        for _ in range(2):
            topology.block_derp(refnet_hosts, False)
    assert _reachable(host, "10.77.0.1") and _reachable(host, "10.77.0.11")


def test_udp_echo_stun_and_block_udp(host, refnet_hosts):
    echo = UdpEcho(refnet_hosts["netns"])
    client = _udp_socket(host["netns"])
    port = client.getsockname()[1]
    try:
        seen = _echo(client, echo)
        mapped = _stun(client)
        assert seen is not None and mapped is not None
        assert seen.split(":")[0] == host["addr"] and mapped.split(":")[0] == host["addr"]
        assert seen == mapped  # one outside port per socket, whatever the destination
        if host["kind"] == "split":
            assert seen == f"10.77.0.2:{port}"
        for _ in range(2):  # idempotent
            topology.block_udp(refnet_hosts, True)
        try:
            n = len(echo.seen)
            assert _echo(client, echo, 0.7) is None and _stun(client, 0.7) is None
            assert len(echo.seen) == n  # dropped on the way out of B
            echo.sock.sendto(b"in", (host["addr"], int(seen.split(":")[1])))  # and on the way in
            assert _recv(client, 0.7) is None
            assert _reachable(host, "10.77.0.11") and _reachable(host, "10.77.0.1")  # TCP untouched
        finally:
            for _ in range(2):
                topology.block_udp(refnet_hosts, False)
        assert _echo(client, echo) == seen and _stun(client) == mapped
        echo.sock.sendto(b"in", (host["addr"], int(seen.split(":")[1])))
        got = _recv(client, 1.0)
        assert got is not None and got[0] == b"in"
        if host["kind"] == "nat":  # only the mapped 5-tuple gets in; 10.88/16 is unreachable from A
            stranger = _udp_socket(refnet_hosts["netns"], topology.A_ADDR)
            try:
                stranger.sendto(b"stranger", (host["addr"], int(seen.split(":")[1])))
                stranger.sendto(b"stranger", (host["local_addr"], port))
                assert _recv(client, 0.7) is None
            finally:
                stranger.close()
    finally:
        client.close()
        echo.close()


def _ping_via(cli: list[str], target: str, *, until_direct: bool, count: int) -> str:
    res = subprocess.run(cli + ["ping", f"--c={count}", f"--until-direct={str(until_direct).lower()}", target],
                         check=False, capture_output=True, text=True, timeout=count * 2 + 30)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout.strip().splitlines()[-1]


def _wait_listed(cli: list[str], name: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = json.loads(subprocess.run(cli + ["status", "--json"], capture_output=True, text=True, check=True).stdout)
        if any(p["HostName"] == name and p.get("Online") for p in (st.get("Peer") or {}).values()):
            return
        time.sleep(0.2)
    raise AssertionError(f"{name} not listed online within {timeout}s")


def _fetch_blob(info: dict, via: dict, target: dict, timeout: int = 20) -> bool:
    res = fetch_via_socks(info, via, target, "/blob/200000?seed=topo", timeout=timeout)
    return res.returncode == 0 and hashlib.sha256(res.stdout).hexdigest() == blob_sha256(200000, "topo")


def test_real_tailscaled_in_b_direct_then_derp(host, refnet_hosts):
    """A real tailscaled in B as the stand-in for sunbeam: the direct-path acceptance steps."""
    info = refnet_hosts
    bins = install(log=lambda m: None)
    index = 60 + KINDS.index(host["kind"])
    peer = Peer(index, Path(info["workdir"]), bins["tailscaled"], bins["tailscale"], host["netns"], False)
    daemon = peer.start_daemon()
    service = peer.start_service()
    try:
        peer.wait_socket(daemon)
        res = subprocess.run(peer.up_command(host["control_url"], info["auth_keys"]["ephemeral"]),
                             check=False, capture_output=True, text=True, timeout=90)
        assert res.returncode == 0, res.stdout + res.stderr + peer.log_tail()
        b = {"name": peer.name, "ips": peer.ips(), "service_port": peer.service_port}
        a = info["peers"][0]
        _wait_listed(a["tailscale_cli"], peer.name)
        # a direct path, both ways, at the address A sees B (and B sees A) at
        last = _ping_via(a["tailscale_cli"], b["ips"][0], until_direct=True, count=30)
        assert re.search(rf"via {re.escape(host['addr'])}:\d+ in", last), last
        last = _ping_via(peer.cli, a["ips"][0], until_direct=True, count=30)
        # (A's addresses; in split B also reaches A's dead-end 192.0.2.1 through its default route)
        assert re.search(r"via (10\.77\.0\.(1|11)|192\.0\.2\.1):\d+ in", last), last
        status = json.loads(subprocess.run(a["tailscale_cli"] + ["status", "--json"], capture_output=True,
                                           text=True, check=True).stdout)
        (entry,) = [p for p in status["Peer"].values() if p["HostName"] == peer.name]
        assert entry["Online"] and entry["CurAddr"].startswith(host["addr"] + ":"), entry
        assert _fetch_blob(info, a, b)
        # DERP blocked in B: traffic continues on the direct path
        topology.block_derp(info, True)
        try:
            time.sleep(2)
            assert _fetch_blob(info, a, b)
            assert re.search(rf"via {re.escape(host['addr'])}:\d+ in",
                             _ping_via(a["tailscale_cli"], b["ips"][0], until_direct=False, count=1))
        finally:
            topology.block_derp(info, False)
        # UDP between the hosts blocked: traffic moves to DERP
        topology.block_udp(info, True)
        try:
            start = time.monotonic()
            while not _fetch_blob(info, a, b, timeout=3):
                assert time.monotonic() - start < 30, "no traffic through DERP 30 s after blocking UDP"
            moved = time.monotonic() - start
            print(f"{host['kind']}: traffic through DERP {moved:.1f} s after blocking UDP")
            assert "via DERP(refnet)" in _ping_via(a["tailscale_cli"], b["ips"][0], until_direct=False, count=1)
        finally:
            topology.block_udp(info, False)
        # and back to direct once UDP flows again
        last = _ping_via(a["tailscale_cli"], b["ips"][0], until_direct=True, count=30)
        assert re.search(rf"via {re.escape(host['addr'])}:\d+ in", last), last
    finally:
        subprocess.run(peer.cli + ["logout"], check=False, capture_output=True, timeout=30)  # ephemeral: Headscale deletes it
        for proc in (service, daemon):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_down_removes_every_namespace_and_process(tmp_path, monkeypatch):
    monkeypatch.setenv("SUNBEAM_REFNET_STATE_DIR", str(tmp_path / "state"))
    name = f"sbhdown-{os.getpid()}"
    b, r = topology.host_names(name)
    try:
        info = network.up(1, name=name, hosts=True, log=lambda m: None)
        topology.attach(info, "split")
        assert topology.detach(info) == [f"deleted netns {b}"]
        # A's side survives a detach: addresses there, peer still Running, attach again works
        addrs = ip(name, "-o", "addr")
        assert "10.77.0.1/24" in addrs and "10.77.0.11/24" in addrs
        peer_cli = info["peers"][0]["tailscale_cli"]
        st = json.loads(subprocess.run(peer_cli + ["status", "--json"], capture_output=True, text=True, check=True).stdout)
        assert st["BackendState"] == "Running"
        host = topology.attach(info, "nat")
        assert network.load_state(name)["host"]["router_netns"] == r
        sleepers = [subprocess.Popen(p + ["sleep", "300"]) for p in (host["exec_prefix"], host["router_exec_prefix"])]
        pids = list(info["pids"].values()) + [s.pid for s in sleepers]
        done = network.down(name)  # no detach first
        assert f"deleted netns {b}" in done and f"deleted netns {r}" in done and f"deleted netns {name}" in done
        for s in sleepers:
            s.wait(timeout=10)
        deadline = time.monotonic() + 5
        while any(process_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [p for p in pids if process_alive(p)]
        assert not any(netns.exists(n) for n in (name, b, r))
        assert not Path(info["workdir"]).exists() and not network.state_file(name).exists()
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
        assert not re.search(r"\b(sbh0|sbh1|sbr0|sbb0)\b", links)
    finally:
        network.down(name)

