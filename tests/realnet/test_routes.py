"""Subnet routes and exit nodes through a real tailscaled gateway (refnet/gateway.py).

The gateway (namespace <name>-gw) advertises 192.168.77.0/24 and an exit node; Headscale
approves both. Behind it, a LAN host 192.168.77.2 and an "internet" host 203.0.113.10 that
nothing in namespace A -- where sunbeam runs -- can reach except through the tunnel. Three
sunbeam nodes: one with defaults (no routes, no exit node), one with accept_routes, one with
accept_routes and exit_node = "gateway". Every transfer is sha256-checked.
"""

from __future__ import annotations

import hashlib
import json
import socket
import struct
import subprocess
import time

import pytest

from sunbeam.refnet import gateway, netns
from sunbeam.refnet.blobs import blob_sha256, iter_blob

from .sunbeam_node import SunbeamNode, until_ok, wait_for

pytestmark = pytest.mark.realnet

MB = 1 << 20
LAN_URL = f"http://{gateway.LAN_HOST}:{gateway.HTTP_PORT}"
NET_URL = f"http://{gateway.INTERNET_HOST}:{gateway.HTTP_PORT}"
PORTS = {"plain": 22080, "routes": 22180, "exit": 22280}  # socks5 = base, http + 1, forward + 2, dns + 3


def _node(net: dict, kind: str, **env: str) -> SunbeamNode:
    base = PORTS[kind]
    n = SunbeamNode(net, hostname=f"sb-{kind}", extra_env=env, listeners=[
        {"kind": "socks5", "listen": f"127.0.0.1:{base}"},
        {"kind": "http", "listen": f"127.0.0.1:{base + 1}"},
        {"kind": "forward", "listen": f"127.0.0.1:{base + 2}",
         "target": f"{gateway.LAN_HOST}:{gateway.ECHO_PORT}"},
        {"kind": "dns", "listen": f"127.0.0.1:{base + 3}"},
    ])
    n.start_pipeline(workers=2)
    n.wait_state("Running", timeout=40)
    return n


@pytest.fixture(scope="module")
def nodes(refnet_gateway):
    made: dict[str, SunbeamNode] = {}
    try:
        made["plain"] = _node(refnet_gateway, "plain")
        made["routes"] = _node(refnet_gateway, "routes", SUNBEAM_ACCEPT_ROUTES="true")
        made["exit"] = _node(refnet_gateway, "exit", SUNBEAM_ACCEPT_ROUTES="true", SUNBEAM_EXIT_NODE=gateway.NAME,
                             SUNBEAM_DNS_FORWARD="true")
        yield made
    finally:
        for n in made.values():
            n.close()


def _curl(net: dict, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(net["exec_prefix"] + ["curl", "-sS", "--max-time", str(timeout), *args],
                          capture_output=True, timeout=timeout + 30)


def _socks(kind: str) -> list[str]:
    return ["--socks5-hostname", f"127.0.0.1:{PORTS[kind]}"]


def _http(kind: str) -> list[str]:
    return ["--proxy", f"http://127.0.0.1:{PORTS[kind] + 1}"]


def _socks_reply(net: dict, kind: str, ip: str, port: int) -> tuple[int, float]:
    """The SOCKS5 reply code for CONNECT ip:port, and how long it took."""
    with netns.entered(net["netns"]):
        s = socket.create_connection(("127.0.0.1", PORTS[kind]), timeout=10)
    with s:
        t0 = time.monotonic()
        s.sendall(b"\x05\x01\x00")
        assert s.recv(2) == b"\x05\x00"
        s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton(ip) + struct.pack("!H", port))
        reply = s.recv(10)
        return reply[1], time.monotonic() - t0


def _download(net: dict, proxy: list[str], url: str, size: int, seed: str) -> float:
    t0 = time.monotonic()
    res = _curl(net, "--fail", *proxy, f"{url}/blob/{size}?seed={seed}")
    took = time.monotonic() - t0
    assert res.returncode == 0, res.stderr
    assert len(res.stdout) == size and hashlib.sha256(res.stdout).hexdigest() == blob_sha256(size, seed)
    return size / MB / took


def _upload(net: dict, proxy: list[str], url: str, size: int, tmp_path) -> None:
    payload = tmp_path / "up.bin"
    with payload.open("wb") as f:
        for piece in iter_blob(size, "routes-up"):
            f.write(piece)
    res = _curl(net, "--fail", *proxy, "--data-binary", f"@{payload}", "-H", "Content-Type: application/octet-stream",
                f"{url}/upload")
    assert res.returncode == 0, res.stderr
    assert f'"sha256": "{blob_sha256(size, "routes-up")}"'.encode() in res.stdout.replace(b'":"', b'": "')


def test_the_lan_and_internet_are_unreachable_from_a_without_the_tunnel(refnet_gateway):
    for url in (LAN_URL, NET_URL):
        res = _curl(refnet_gateway, "--connect-timeout", "2", f"{url}/whoami", timeout=5)
        assert res.returncode != 0, f"{url} answered without the tunnel: the test would prove nothing"


def test_subnet_route_unused_without_accept_routes(refnet_gateway, nodes):
    code, took = _socks_reply(refnet_gateway, "plain", gateway.LAN_HOST, gateway.HTTP_PORT)
    assert code == 3 and took < 1.0
    res = _curl(refnet_gateway, *_http("plain"), f"{LAN_URL}/whoami", timeout=10)
    assert b"502" in res.stdout or b"accept_routes is off" in res.stdout, res
    counters = nodes["plain"].counters("proxy")
    assert counters.get("connect_failed_routes_not_accepted", 0) >= 2, counters


def test_subnet_route_through_socks5_http_and_forward(refnet_gateway, nodes, tmp_path):
    first = until_ok(lambda: _curl(refnet_gateway, "--fail", *_socks("routes"), f"{LAN_URL}/whoami", timeout=20))
    assert first.returncode == 0, first.stderr + nodes["routes"].log("proxy")[-2000:].encode()
    assert b'"lan-host"' in first.stdout
    socks_rate = _download(refnet_gateway, _socks("routes"), LAN_URL, 16 * MB, "lan-s")
    http_rate = _download(refnet_gateway, _http("routes"), LAN_URL, 16 * MB, "lan-h")
    _upload(refnet_gateway, _socks("routes"), LAN_URL, 4 * MB, tmp_path)
    _upload(refnet_gateway, _http("routes"), LAN_URL, 4 * MB, tmp_path)
    print(f"16 MB from the gateway's LAN: SOCKS5 {socks_rate:.1f} MB/s, HTTP {http_rate:.1f} MB/s")
    with netns.entered(refnet_gateway["netns"]):
        s = socket.create_connection(("127.0.0.1", PORTS["routes"] + 2), timeout=20)
    with s:  # the forward listener's target is the LAN host's echo port
        s.sendall(b"through the subnet router\n")
        got = b""
        while len(got) < 26:
            chunk = s.recv(100)
            assert chunk, "echo closed early"
            got += chunk
        assert got == b"through the subnet router\n"
    # with routes but no exit node, the internet host is refused at once
    code, took = _socks_reply(refnet_gateway, "routes", gateway.INTERNET_HOST, gateway.HTTP_PORT)
    assert code == 3 and took < 1.0
    res = _curl(refnet_gateway, *_http("routes"), f"{NET_URL}/whoami", timeout=10)
    assert b"no exit node" in res.stdout, res


def test_exit_node_carries_internet_traffic(refnet_gateway, nodes, tmp_path):
    first = until_ok(lambda: _curl(refnet_gateway, "--fail", *_socks("exit"), f"{NET_URL}/whoami", timeout=20))
    assert first.returncode == 0, first.stderr + nodes["exit"].log("proxy")[-2000:].encode()
    socks_rate = _download(refnet_gateway, _socks("exit"), NET_URL, 16 * MB, "net-s")
    http_rate = _download(refnet_gateway, _http("exit"), NET_URL, 16 * MB, "net-h")
    _upload(refnet_gateway, _socks("exit"), NET_URL, 4 * MB, tmp_path)
    _upload(refnet_gateway, _http("exit"), NET_URL, 4 * MB, tmp_path)
    print(f"16 MB through the exit node: SOCKS5 {socks_rate:.1f} MB/s, HTTP {http_rate:.1f} MB/s")
    events = [json.loads(line) for line in nodes["exit"].log("proxy").splitlines() if line.startswith("{")]
    chosen = [e for e in events if e.get("event") == "exit_node"]
    assert chosen and chosen[-1]["peer"] == f"{gateway.NAME}.tailnet.test", chosen


def test_an_exit_node_that_offers_none_is_refused(refnet_gateway):
    peer = refnet_gateway["peers"][0]["name"]
    node = SunbeamNode(refnet_gateway, hostname="sb-badexit", extra_env={"SUNBEAM_EXIT_NODE": peer}, listeners=[
        {"kind": "socks5", "listen": "127.0.0.1:22380"}, {"kind": "http", "listen": "127.0.0.1:22381"}])
    try:
        node.start_pipeline(workers=1)
        node.wait_state("Running", timeout=40)
        res = _curl(refnet_gateway, "--proxy", "http://127.0.0.1:22381", f"{NET_URL}/whoami", timeout=10)
        assert b"exit node is not usable" in res.stdout, res
        log = wait_for(lambda: "exit_node_unusable" in node.log("proxy") and node.log("proxy"), 10, "warning")
        assert "offers no exit route" in log
    finally:
        node.close()


def test_unapproved_routes_stop_being_used_at_the_next_netmap(refnet_gateway, nodes):
    assert until_ok(lambda: _curl(refnet_gateway, "--fail", *_socks("routes"), f"{LAN_URL}/whoami",
                                  timeout=20)).returncode == 0
    assert until_ok(lambda: _curl(refnet_gateway, "--fail", *_socks("exit"), f"{NET_URL}/whoami",
                                  timeout=20)).returncode == 0
    gateway.approve(refnet_gateway, [])
    try:
        wait_for(lambda: _socks_reply(refnet_gateway, "routes", gateway.LAN_HOST, gateway.HTTP_PORT)[0] == 3, 30,
                 "the withdrawn subnet route refused")
        wait_for(lambda: _socks_reply(refnet_gateway, "exit", gateway.INTERNET_HOST, gateway.HTTP_PORT)[0] == 3, 30,
                 "the unapproved exit node refused")
        res = _curl(refnet_gateway, *_http("exit"), f"{NET_URL}/whoami", timeout=10)
        assert b"exit node is not usable" in res.stdout, res
    finally:
        gateway.approve(refnet_gateway, [gateway.SUBNET, *gateway.EXIT_ROUTES])
    ok = until_ok(lambda: _curl(refnet_gateway, "--fail", *_socks("exit"), f"{NET_URL}/whoami", timeout=20))
    assert ok.returncode == 0, "re-approved exit node not used again"
    assert until_ok(lambda: _curl(refnet_gateway, "--fail", *_socks("routes"), f"{LAN_URL}/whoami",
                                  timeout=20)).returncode == 0


def _ctl_json(node: SunbeamNode, *args: str) -> dict | list:
    res = node.ctl(*args, "--json")
    assert res.stdout.strip(), res.stderr
    return json.loads(res.stdout)


def test_cli_shows_routes_exit_nodes_and_who_routes_an_address(refnet_gateway, nodes):
    doc = _ctl_json(nodes["exit"], "exit-node", "list")
    assert [(e["name"], e["in_use"]) for e in doc["exit_nodes"]] == [(gateway.NAME, True)], doc
    assert doc["problem"] is None and doc["configured"] == gateway.NAME
    doc = _ctl_json(nodes["plain"], "exit-node", "list")
    assert [(e["name"], e["in_use"]) for e in doc["exit_nodes"]] == [(gateway.NAME, False)], doc
    peers = _ctl_json(nodes["routes"], "peers")
    gw = next(p for p in peers if p["name"].split(".")[0] == gateway.NAME)
    assert gw["subnet_routes"] == [gateway.SUBNET] and gw["offers_exit"] is True, gw
    lan = _ctl_json(nodes["routes"], "whois", gateway.LAN_HOST)
    assert lan["node"] is None and {r["name"].split(".")[0] for r in lan["routed_by"]} == {gateway.NAME}, lan
    assert sorted(r["kind"] for r in lan["routed_by"]) == ["exit", "subnet"], lan  # its subnet and its 0.0.0.0/0
    text = nodes["plain"].ctl("peers").stdout
    assert gateway.SUBNET in text, text


def test_cli_reports_the_exit_node_the_running_proxy_uses_not_a_later_config(refnet_gateway, nodes):
    node = nodes["exit"]
    started_with = dict(node.env)
    del node.env["SUNBEAM_EXIT_NODE"]  # the config as edited after the start (env: what the ctl reads)
    try:
        doc = _ctl_json(node, "exit-node", "list")
        text = node.ctl("exit-node", "list").stdout
    finally:
        node.env = started_with
    assert [(e["name"], e["in_use"]) for e in doc["exit_nodes"]] == [(gateway.NAME, True)], doc
    assert doc["configured"] is None and doc["running_exit_node"] == gateway.NAME, doc
    assert f"the running proxy uses exit_node = {gateway.NAME!r}; the config now says no exit_node" in text, text


def _dig(net: dict, kind: str, *args: str) -> str:
    res = subprocess.run(net["exec_prefix"] + ["dig", "@127.0.0.1", "-p", str(PORTS[kind] + 3), "+time=8",
                                                "+tries=1", *args], capture_output=True, text=True, timeout=30)
    return res.stdout


def _lan_dns_log(net: dict) -> str:
    from pathlib import Path

    return (Path(net["workdir"]) / "lan-dnsserver.log").read_text()


def test_names_outside_the_tailnet_resolve_through_the_exit_node(refnet_gateway, nodes):
    url = f"http://{gateway.INTERNET_NAME}:{gateway.HTTP_PORT}/whoami"
    before = _lan_dns_log(refnet_gateway).count(f"query {gateway.INTERNET_NAME}.")
    for proxy in (_socks("exit"), _http("exit")):
        res = until_ok(lambda: _curl(refnet_gateway, "--fail", *proxy, url, timeout=20))
        assert res.returncode == 0 and b'"lan-host"' in res.stdout, res.stderr + nodes["exit"].log("proxy")[-2000:].encode()
    # the LAN's DNS server (reachable only through the gateway) was asked
    assert _lan_dns_log(refnet_gateway).count(f"query {gateway.INTERNET_NAME}.") > before
    # no exit node and no dns_forward: a name outside the tailnet is unknown at once
    res = _curl(refnet_gateway, *_http("routes"), url, timeout=10)
    assert b"no tailnet node has that name" in res.stdout, res
    # the dns listener forwards with dns_forward (through the exit node), and refuses without
    out = _dig(refnet_gateway, "exit", gateway.INTERNET_NAME)
    assert "status: NOERROR" in out and gateway.INTERNET_HOST in out and " ra" in out, out
    out = _dig(refnet_gateway, "exit", "nosuch.internet.test", "+tcp")
    assert "status: NXDOMAIN" in out, out
    assert "status: REFUSED" in _dig(refnet_gateway, "routes", gateway.INTERNET_NAME)
    out = _dig(refnet_gateway, "exit", "gateway.tailnet.test")  # tailnet names stay local
    assert "status: NOERROR" in out and refnet_gateway["gateway"]["ips"][0] in out, out
