"""Many short connections, and refusals that come at once (issue 15).

Through each of sunbeam's listeners (forward, SOCKS5, HTTP proxy in absolute form and with
CONNECT) to peer-2's test service, 1,000 sequential and 1,000 concurrent (50 at a time)
short requests (``GET /blob/1K`` with ``Connection: close``, sha256 checked, each on a new
connection; sunbeam.refnet.loadgen): every one must succeed, and the direct path to the
peer must hold all along. Thousands of connections from our one tailnet address to one
peer port are what exposes a TCP that reuses a local port the peer still holds in
TIME_WAIT, so the counts are the point; the per-request timeout (10 s) only keeps a hang
from stalling the run, and a run stops after 10 failures so a broken build still ends in
minutes.

A connection that cannot succeed must fail at once (< 1 s), with the reason: a port the
reference policy denies (7777: tailscaled answers the SYN with a TSMP reject), a tailnet
address no peer has, an address outside the tailnet, a name nobody has. The last three
never leave the proxy: nothing routes them. SOCKS5 replies 2 (not allowed) for the denied
port and 3 or 4 (network / host unreachable) for the others; the HTTP proxy 403 and 502.

Also here: the test service itself takes a burst of connections (it listened with a backlog
of 5), and the reference tailscaled serves 200 concurrent streams, so what fails through
sunbeam is sunbeam's. (tailscaled itself does not pass the soak: see the yardstick test.)
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from sunbeam.refnet import netns
from sunbeam.refnet.blobs import blob_sha256
from sunbeam.refnet.headscale import DENIED_PORT
from sunbeam.refnet.loadgen import Via, fetch, run

from .sunbeam_node import SunbeamNode, wait_for

pytestmark = pytest.mark.realnet

FORWARD, SOCKS, HTTP, FORWARD_DENIED = 23079, 23080, 23081, 23082
PATH = "/blob/1K?seed=soak"
COUNT, CONCURRENCY, TIMEOUT, STOP_AFTER = 1000, 50, 10.0, 10
UNROUTED_TAILNET_IP = "100.64.99.99"  # in the tailnet's range, no node has it
OUTSIDE_IP = "198.51.100.1"  # TEST-NET-2: no tailnet route; in the namespace it leads into the void
UNKNOWN_NAMES = ("no-such-peer", "no-such-peer.tailnet.test")


def _listen_overflows(ns: str) -> int:
    """TcpExt ListenOverflows of namespace ``ns``: SYNs dropped because an accept queue was full."""
    out = subprocess.run(netns.exec_prefix(ns) + ["cat", "/proc/net/netstat"], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    for names, values in zip(out[::2], out[1::2], strict=False):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split()[1:], values.split()[1:], strict=True))["ListenOverflows"])
    raise AssertionError("no TcpExt line in /proc/net/netstat")


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_testservice_takes_a_burst_of_200_connections():
    """200 connections arrive while the service's accept loop is held up (SIGSTOP): the
    kernel must queue them all (a backlog of 5 dropped the rest's SYNs), then all 200 are
    served; and 200 concurrent requests (loadgen) are all served."""
    if os.geteuid() != 0:
        pytest.fail("needs root (a network namespace)", pytrace=False)
    ns = f"sbsoak-ts-{os.getpid()}"
    netns.create(ns)
    proc = subprocess.Popen(netns.exec_prefix(ns) + [sys.executable, "-m", "sunbeam.refnet.testservice", "--name",
                                                     "burst", "--port", "18050", "--echo-port", "19050"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    socks: list[socket.socket] = []
    try:
        assert "testservice burst" in proc.stdout.readline()
        before = _listen_overflows(ns)
        proc.send_signal(signal.SIGSTOP)
        with netns.entered(ns):
            for _ in range(200):
                s = socket.socket()
                s.setblocking(False)
                assert s.connect_ex(("127.0.0.1", 18050)) in (0, 115)  # EINPROGRESS
                socks.append(s)
        time.sleep(0.5)  # the handshakes the kernel completes on its own
        overflowed = _listen_overflows(ns) - before
        proc.send_signal(signal.SIGCONT)
        assert overflowed == 0, f"{overflowed} SYNs dropped: the accept queue was full"
        request = b"GET /blob/1K?seed=burst HTTP/1.1\r\nHost: burst\r\nConnection: close\r\n\r\n"
        for s in socks:
            s.settimeout(10)
            s.sendall(request)
        bodies = [_read_response(s).partition(b"\r\n\r\n") for s in socks]
        served = sum(head.startswith(b"HTTP/1.1 200") and hashlib.sha256(body).hexdigest()
                     == blob_sha256(1024, "burst") for head, _, body in bodies)
        assert served == 200
        summary = run(Via("direct"), "127.0.0.1", 18050, count=200, concurrency=200, path=PATH, netns=ns)
        assert (summary.ok, summary.failed) == (200, 0), summary.line()
        assert _listen_overflows(ns) - before == 0
    finally:
        for s in socks:
            s.close()
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        proc.wait(10)
        netns.delete(ns)


def test_reference_tailscaled_serves_200_concurrent(refnet):
    """The yardstick: peer-1's own SOCKS5 (a real tailscaled) to peer-2's service, 200
    streams at once, all served. Here the client closes first (keep-alive, then close):
    when the server closes first, tailscaled 1.98 itself loses 1-6 % of such connections
    (its SOCKS5 gives up after 5 s: reply 1), because its netstack reuses a 4-tuple the far
    tailscaled still holds in TIME_WAIT, the very case the sunbeam soak below checks; with
    the client closing first, 3,000 of 3,000 were served (measured)."""
    p1, p2 = refnet["peers"][:2]
    host, port = p1["socks5"].rsplit(":", 1)
    via = Via("socks5", (host, int(port)))
    wait_for(lambda: fetch_in(refnet, via, p2, "/whoami").ok, 30, "tailscaled's SOCKS5 reaching peer-2")
    summary = run(via, p2["name"], p2["service_port"], count=200, concurrency=200, path=PATH, netns=refnet["netns"],
                  client_closes=True)
    print(summary.line())
    assert (summary.ok, summary.failed) == (200, 0), f"{summary.line()}\n{summary.examples}"


def fetch_in(refnet: dict, via: Via, peer: dict, path: str = PATH, host: str | None = None, port: int | None = None,
             timeout: float = TIMEOUT):
    with netns.entered(refnet["netns"]):
        return fetch(via, host or peer["name"], port or peer["service_port"], path, timeout=timeout)


@pytest.fixture(scope="module")
def node(refnet):
    p2 = refnet["peers"][1]
    n = SunbeamNode(refnet, hostname="sunbeam-soak", extra_env={"SUNBEAM_LOG_LEVEL": "info"}, listeners=[
        {"kind": "forward", "listen": f"127.0.0.1:{FORWARD}", "target": f"{p2['name']}:{p2['service_port']}"},
        {"kind": "socks5", "listen": f"127.0.0.1:{SOCKS}"},
        {"kind": "http", "listen": f"127.0.0.1:{HTTP}"},
        {"kind": "forward", "listen": f"127.0.0.1:{FORWARD_DENIED}", "target": f"{p2['name']}:{DENIED_PORT}"},
    ])
    n.start_pipeline(workers=2)
    n.wait_state("Running", timeout=30)
    wait_for(lambda: fetch_in(refnet, Via("socks5", ("127.0.0.1", SOCKS)), p2, "/whoami").ok, 30,
             "sunbeam's SOCKS5 reaching peer-2")
    yield n
    n.close()


def _path_to(node: SunbeamNode, name: str) -> dict:
    res = node.ctl("peers", "--json")
    return next((p for p in json.loads(res.stdout) if p["name"] == name), {}) if res.returncode == 0 else {}


def _direct(node: SunbeamNode, peer: dict) -> dict:
    def check():
        node.ctl("ping", peer["name"], "-c", "1", timeout=30)
        p = _path_to(node, peer["name"])
        return p if p.get("path") == "direct" else None

    return wait_for(check, 40, f"a direct path to {peer['name']}", interval=0.5)


def _lapses(node: SunbeamNode) -> dict:
    c = node.counters("udp")
    return {k: c.get(k, 0) for k in ("paths.path_lapsed", "paths.to_derp")}


VIAS = {"forward": Via("forward", ("127.0.0.1", FORWARD)), "socks5": Via("socks5", ("127.0.0.1", SOCKS)),
        "http": Via("http", ("127.0.0.1", HTTP)), "http-connect": Via("http-connect", ("127.0.0.1", HTTP))}


@pytest.mark.parametrize("kind", list(VIAS))
def test_1000_sequential_and_1000_concurrent_short_connections(refnet, node, kind):
    peer = refnet["peers"][1]
    via = VIAS[kind]
    _direct(node, peer)
    lapses = _lapses(node)
    runs = []
    for concurrency in (1, CONCURRENCY):
        s = run(via, peer["name"], peer["service_port"], count=COUNT, concurrency=concurrency, path=PATH,
                timeout=TIMEOUT, netns=refnet["netns"], stop_after=STOP_AFTER)
        print(s.line())
        runs.append(s)
    proxy = {k: v for k, v in node.counters("proxy").items() if "connect" in k or "refused" in k or "reset" in k}
    report = "\n".join(f"{s.line()}\n  first failures (index, kind, detail, s): {s.examples}" for s in runs)
    assert [(s.attempted, s.ok, s.failed) for s in runs] == [(COUNT, COUNT, 0)] * 2, f"{report}\nproxy: {proxy}"
    assert _lapses(node) == lapses, "the direct path lapsed during the run"
    assert _path_to(node, peer["name"]).get("path") == "direct"


def _refusal(refnet, via: Via, host: str, port: int):
    with netns.entered(refnet["netns"]):
        return fetch(via, host, port, "/whoami", timeout=5.0)


def _cases(refnet) -> list[tuple[str, str, int, str]]:
    """(what, host, port, reason): reason "denied" or "unreachable"."""
    p2 = refnet["peers"][1]
    return [("policy-denied port", p2["name"], DENIED_PORT, "denied"),
            ("policy-denied port, by IP", p2["ips"][0], DENIED_PORT, "denied"),
            ("tailnet IP no peer has", UNROUTED_TAILNET_IP, p2["service_port"], "unreachable"),
            ("IP outside the tailnet", OUTSIDE_IP, 80, "unreachable")] + [
            (f"unknown name {n}", n, 80, "unreachable") for n in UNKNOWN_NAMES]


def test_socks5_refuses_at_once_with_the_reason(refnet, node):
    _direct(node, refnet["peers"][1])
    want = {"denied": {"socks5_reply_2"}, "unreachable": {"socks5_reply_3", "socks5_reply_4"}}
    wrong = {}
    for what, host, port, reason in _cases(refnet):
        o = _refusal(refnet, VIAS["socks5"], host, port)
        if o.kind not in want[reason] or o.elapsed_s >= 1.0:
            wrong[what] = (o.kind, round(o.elapsed_s, 2))
    assert not wrong, f"want reply 2 for denied, 3/4 for unreachable, each in < 1 s; got {wrong}"


@pytest.mark.parametrize("kind", ["http", "http-connect"])
def test_http_proxy_refuses_at_once_with_the_reason(refnet, node, kind):
    _direct(node, refnet["peers"][1])
    want = {"denied": "http_403", "unreachable": "http_502"}
    wrong = {}
    for what, host, port, reason in _cases(refnet):
        o = _refusal(refnet, VIAS[kind], host, port)
        if o.kind != want[reason] or o.elapsed_s >= 1.0:
            wrong[what] = (o.kind, round(o.elapsed_s, 2))
    assert not wrong, f"want 403 for denied, 502 for unreachable, each in < 1 s; got {wrong}"


def test_forward_to_a_denied_port_closes_at_once(refnet, node):
    """A forward listener cannot say why; it must still close the local connection at once
    (EOF or RST), not after a connect timeout."""
    _direct(node, refnet["peers"][1])
    for _ in range(3):
        o = _refusal(refnet, Via("forward", ("127.0.0.1", FORWARD_DENIED)), "peer-2", DENIED_PORT)
        assert o.kind in ("closed:response", "reset:response") and o.elapsed_s < 1.0, o


def test_nothing_is_left_open_after_the_soak(node):
    """After thousands of connections (run after the soak above), the proxy holds none: no
    stack connection beyond its short TIME-WAIT, no handler, no local socket."""
    def drained():
        c = node.counters("proxy")
        return c if (c.get("tcp_open"), c.get("tcp_handlers"), c.get("local_open")) == (0, 0, 0) else None

    counters = wait_for(drained, 15, "the proxy to hold no connection")
    assert counters["accepted_forward"] >= 2 * COUNT and counters["accepted_socks5"] >= 2 * COUNT
