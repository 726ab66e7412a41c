"""The control server goes away and comes back (issue 15).

The real Headscale killed for 30 s: meanwhile the control service keeps trying (nothing
answers, so retrying costs the server nothing) and the data plane keeps flowing on the
direct path it already had (the DERP server is embedded in Headscale and goes down with
it). When Headscale answers again we are Running within a few seconds, not after a backoff
that grew all through the outage.

Behind a relay (`Relay`: plain TCP, or TLS with a certificate we make trusted through
``SSL_CERT_FILE``): a server whose host drops our SYNs does not stall the control loop (it
answers status all along, issue 19), and reconnecting over TLS works the same way.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sunbeam.refnet import netns, network

from .sunbeam_node import SunbeamNode, wait_for

pytestmark = pytest.mark.realnet

DOWN_FOR = 30.0
RUNNING_WITHIN = 5.0


@pytest.fixture(scope="module")
def node(refnet):
    n = SunbeamNode(refnet, hostname="sunbeam-outage")
    n.start_pipeline(workers=1)
    n.wait_state("Running", timeout=30)
    yield n
    n.close()


def _path_to(node: SunbeamNode, name: str) -> str | None:
    res = node.ctl("peers", "--json")
    rows = {p["name"]: p for p in json.loads(res.stdout)} if res.returncode == 0 else {}
    return rows.get(name, {}).get("path")


def _events_since(node: SunbeamNode, service: str, name: str, since: float) -> list[tuple[float, dict]]:
    """(wall-clock time, fields) of every ``name`` event ``service`` logged after ``since``."""
    out = []
    for line in node.log(service).splitlines():
        event = json.loads(line) if line.startswith("{") else {}
        if event.get("event") == name:
            at = datetime.fromisoformat(event["ts"].replace("Z", "+00:00")).timestamp()
            if at >= since:
                out.append((at, event))
    return out


def _states_since(node: SunbeamNode, since: float) -> list[tuple[float, str]]:
    """(wall-clock time, state) of every control state change logged after ``since``."""
    return [(at, event["state"]) for at, event in _events_since(node, "control", "control_state", since)]


def test_running_soon_after_headscale_returns_and_direct_traffic_flows_meanwhile(refnet, node):
    peer = refnet["peers"][0]

    def direct() -> bool:
        node.ctl("ping", peer["name"], "-c", "1", timeout=30)
        return _path_to(node, peer["name"]) == "direct"

    wait_for(direct, 40, "a direct path to the peer before the outage")
    attempts = node.counters().get("connect_attempts", 0)

    pings: list[tuple[float, int, str]] = []
    stop = threading.Event()

    def ping_meanwhile() -> None:
        while not stop.wait(1.0):
            res = node.ctl("ping", peer["name"], "-c", "1", timeout=30)
            pings.append((time.time(), res.returncode, res.stdout.strip()))

    pinger = threading.Thread(target=ping_meanwhile, daemon=True)
    killed = time.time()
    pinger.start()
    try:
        network.restart_headscale(refnet["name"], down_for=DOWN_FOR)  # SIGKILL, 30 s, start, healthy
        back = time.time()
    finally:
        stop.set()
        pinger.join(timeout=60)
    node.wait_state("Running", timeout=60)
    states = _states_since(node, killed)
    running = [at for at, state in states if state == "Running"]
    assert running, states
    took = running[0] - back
    print(f"Running {took:.2f} s after Headscale answered again ({running[0] - killed - DOWN_FOR:.2f} s after "
          f"the {DOWN_FOR:.0f} s outage ended); states {[(round(at - killed, 2), s) for at, s in states]}")
    assert took < RUNNING_WITHIN, (took, states)
    # the outage was seen (Reconnecting, not Running) until the server was back
    assert [s for at, s in states if at < back - 1][:1] == ["Reconnecting"], states
    assert not [at for at in running if at < back - 1], states
    # it kept knocking while nothing answered: every 1-2 s, not a backoff grown to 16-32 s
    assert node.counters()["connect_attempts"] - attempts >= DOWN_FOR / 2.0 - 2
    # the DERP server embedded in Headscale: our home connection is back as soon (the derp
    # service retries on its own schedule, so its login may come after control's Running)
    def derp_up() -> list[float]:
        return [at for at, _ in _events_since(node, "derp", "derp_connected", killed)]

    wait_for(lambda: derp_up() or time.time() > back + RUNNING_WITHIN + 1, RUNNING_WITHIN + 2,
             "derp_connected or its deadline")
    ups = derp_up()
    assert ups and ups[0] - back < RUNNING_WITHIN, (ups, back, node.log("derp")[-3000:])
    # data kept flowing on the direct path the whole time
    during = [p for p in pings if killed + 1 < p[0] < back]
    assert len(during) >= DOWN_FOR / 3, pings
    failed = [p for p in during if p[1] != 0 or "via DERP" in p[2]]
    assert not failed, failed


# -- behind a relay ---------------------------------------------------------------------------

class Relay:
    """Listens on 127.0.0.1:<port> in the reference namespace and relays each connection to
    the real Headscale, byte for byte; ``tls``: terminate TLS first (a reverse proxy)."""

    def __init__(self, refnet: dict, tls: ssl.SSLContext | None = None) -> None:
        self.gateway_down = False
        """Answer every new connection's request with 502, as a reverse proxy whose server is down."""
        self.ns = refnet["netns"]
        url = urlsplit(refnet["control_url"])
        self.upstream = (url.hostname, url.port)
        self.tls = tls
        self.live: list[socket.socket] = []
        self.lock = threading.Lock()
        with netns.entered(self.ns):
            self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(down,), daemon=True).start()

    def _serve(self, down: socket.socket) -> None:
        try:
            if self.tls is not None:
                down = self.tls.wrap_socket(down, server_side=True)
            if self.gateway_down:
                down.settimeout(5)
                head = b""
                while b"\r\n\r\n" not in head and (chunk := down.recv(4096)):
                    head += chunk
                down.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n"
                             b"Connection: close\r\n\r\nBad Gateway")
                down.close()
                return
            with netns.entered(self.ns):
                up = socket.create_connection(self.upstream, timeout=5)
            up.settimeout(None)
        except OSError:
            down.close()
            return
        with self.lock:
            self.live += [down, up]
        threading.Thread(target=self._pump, args=(up, down), daemon=True).start()
        self._pump(down, up)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        """End every relayed connection (our side sees the server close it)."""
        with self.lock:
            live, self.live = self.live, []
        for s in live:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.listener.close()
        self.cut()


def _nft(ns: str, script: str) -> None:
    subprocess.run(netns.exec_prefix(ns) + ["nft", "-f", "-"], input=script, text=True, check=True,
                   capture_output=True)


def _relayed_node(refnet: dict, relay: Relay, hostname: str, **env: str) -> SunbeamNode:
    n = SunbeamNode(refnet, hostname=hostname)
    n.env.update(SUNBEAM_CONTROL_URL=relay.url, **env)
    n.start("control")
    n.wait_state("Running", timeout=30)
    return n


SILENT_FOR = 10.0


def test_a_server_that_drops_our_syns_does_not_stall_the_loop(refnet):
    relay = Relay(refnet)
    node = _relayed_node(refnet, relay, "sunbeam-silent")
    table = f"sbtest_silent_{relay.port}"
    try:
        # from now on SYNs to the relay vanish (as to a host that went away), then the live
        # connection ends: every reconnect waits for a SYN-ACK that never comes
        _nft(refnet["netns"], f"table inet {table} {{\n chain input {{\n"
                              f"  type filter hook input priority filter; policy accept;\n"
                              f"  tcp dport {relay.port} drop\n }}\n}}\n")
        relay.cut()
        seen = []
        end = time.monotonic() + SILENT_FOR
        while time.monotonic() < end:
            t0 = time.monotonic()
            control = node.control()  # the service has 2 s to answer
            seen.append((round(time.monotonic() - t0, 2), control.get("state"), control.get("reason")))
            time.sleep(0.3)
        assert all(state for _, state, _ in seen), seen  # it always answered
        assert {state for _, state, _ in seen[3:]} == {"Reconnecting"}, seen
        assert any("connect timed out" in (reason or "") for _, _, reason in seen), seen
        assert node.counters().get("connect_timeout", 0) >= 2
        _nft(refnet["netns"], f"delete table inet {table}\n")
        opened = time.monotonic()
        node.wait_state("Running", timeout=30)
        took = time.monotonic() - opened
        print(f"Running {took:.2f} s after the server's SYNs got through again")
        assert took < RUNNING_WITHIN, took
    finally:
        subprocess.run(netns.exec_prefix(refnet["netns"]) + ["nft", "delete", "table", "inet", table],
                       capture_output=True)
        node.close()
        relay.close()


def test_over_tls_running_and_back_soon_after_the_connection_ends(refnet, tmp_path: Path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=sunbeam-test",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-addext", "keyUsage=critical,digitalSignature,keyCertSign",
                    "-addext", "extendedKeyUsage=serverAuth"], check=True, capture_output=True)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    relay = Relay(refnet, tls)
    node = _relayed_node(refnet, relay, "sunbeam-tls", SSL_CERT_FILE=str(cert))
    try:
        assert node.control()["state"] == "Running"
        cut = time.time()
        relay.cut()
        node.wait_state("Reconnecting", timeout=10)
        node.wait_state("Running", timeout=30)
        running = [at for at, state in _states_since(node, cut) if state == "Running"]
        assert running and running[0] - cut < RUNNING_WITHIN, running
    finally:
        node.close()
        relay.close()


GATEWAY_DOWN_FOR = 20.0


def test_a_reverse_proxy_answering_502_is_retried_soon(refnet):
    """Behind a reverse proxy, a control server that is down shows as 502 to the upgrade;
    that is no load on the server, so it is retried as soon as silence would be, and we are
    Running within a few seconds of the server being reachable through the proxy again."""
    relay = Relay(refnet)
    node = _relayed_node(refnet, relay, "sunbeam-gateway")
    try:
        relay.gateway_down = True
        relay.cut()
        node.wait_state("Reconnecting", timeout=10)
        time.sleep(GATEWAY_DOWN_FOR)
        reason = node.control().get("reason") or ""
        assert "HTTP 502" in reason, reason
        relay.gateway_down = False
        back = time.time()
        node.wait_state("Running", timeout=60)
        running = [at for at, state in _states_since(node, back) if state == "Running"]
        print(f"Running {running[0] - back:.2f} s after the proxy's 502s ended")
        assert running[0] - back < RUNNING_WITHIN, running
    finally:
        node.close()
        relay.close()
