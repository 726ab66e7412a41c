"""Hostile peers, servers and users against the running pipeline (issue 9, service level).

One module-scoped node runs every service against the real Headscale, with two hostile
pieces in its path:

- `ControlMitm`, a TS2021 man in the middle between our control service and Headscale.
  It holds Headscale's Noise key (in the reference network's work dir) and our machine key
  (keys.json), so it terminates our Noise session (the test Noise responder of
  tests/proto/test_controlbase.py), opens its own to Headscale with our `ControlConnection`,
  and relays HTTP/2 requests and responses. Map frames pass whole, so the test can inject
  frames between real ones, and each real frame can be rewritten: we add DERP region 1000
  (a fake DERP server) and one made-up peer whose home is region 1000, which is what makes
  our derp service connect there (it dials its home region plus every peer's home region).
- `TcpDerpServer` (tests/derp/test_derp_service.py) as that region's server, through which
  the test pushes garbage frames and raw garbage bytes at our derp service.

Throughout, a real tailscaled peer (peer-2) downloads a sha256-checked blob through our
inbound listener (a local service exposed on our tailnet address), so each hostile case
also shows the good peer kept being served.

Covered elsewhere, not repeated here: a replayed WireGuard message is dropped by the
replay window in the worker (tests/lifecycle/test_wg_workers.py), and an inbound
connection the packet filter forbids is refused (tests/realnet/test_proxy.py,
test_real_peer_reaches_our_inbound_service_and_filter_refuses). Here replays arrive from
the network, among a flood.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import os
import random
import socket
import stat
import struct
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import zstandard
from sunbeam.refnet import netns
from sunbeam.refnet.blobs import blob_sha256
from sunbeam.shared.keys import load_or_create
from sunbeam.shared.proto.derp import FrameType
from sunbeam.shared.proto.disco import MAGIC as DISCO_MAGIC
from sunbeam.shared.sharding import make_index

from ..derp.test_derp_service import TcpDerpServer
from .control_mitm import ControlMitm, _add_hostile_region_and_peer, _frame
from .sunbeam_node import SunbeamNode, until_ok, wait_for

pytestmark = pytest.mark.realnet

SOCKS, INBOUND = 21280, 18280
MB = 1 << 20
WORKERS = 2
# Drop lines per reason (per RateLimitedLog key) a test may see: the services allow 10 (udp,
# wg) or 5 (derp, control) a minute per key, and a test's span may straddle two windows.
LOG_BOUND = 20


class Hostile:
    """The node under test, its control MITM and the fake DERP server of region 1000."""

    def __init__(self, refnet: dict) -> None:
        p1 = refnet["peers"][0]
        self.refnet = refnet
        with netns.entered(refnet["netns"]):
            self.derp = TcpDerpServer()
        self.node = SunbeamNode(refnet, hostname="sunbeam-hostile", listeners=[
            {"kind": "socks5", "listen": f"127.0.0.1:{SOCKS}"},
            {"kind": "inbound", "port": INBOUND, "target": f"127.0.0.1:{p1['service_port']}"}])
        self.mitm = ControlMitm(refnet, self.node.statedir)
        self.node.env["SUNBEAM_CONTROL_URL"] = self.mitm.url
        self.fake_peer = os.urandom(32)
        self.mitm.rewrite = _add_hostile_region_and_peer(self.derp.port, self.fake_peer, os.urandom(32))

    def start(self) -> None:
        self.node.start_pipeline(workers=WORKERS)
        self.node.wait_state("Running", timeout=40)
        self.ours = self.node.control()["addresses"][0].split("/")[0]
        self.node_key = load_or_create(self.node.statedir)[0].node.public

    def close(self) -> None:
        self.node.close()
        self.derp.close()
        self.mitm.close()


@pytest.fixture(scope="module")
def hostile(refnet):
    h = Hostile(refnet)
    try:
        h.start()
        warm = until_ok(lambda: _peer_curl(refnet, f"http://{h.ours}:{INBOUND}/whoami", timeout=15), 60)
        assert warm.returncode == 0, warm.stderr
        yield h
    finally:
        h.close()


def _peer_curl(refnet: dict, url: str, timeout: int = 20) -> subprocess.CompletedProcess:
    peer = refnet["peers"][1]
    return subprocess.run(refnet["exec_prefix"] + ["curl", "-sS", "--fail", "--max-time", str(timeout),
                                                   "--socks5-hostname", peer["socks5"], url],
                          capture_output=True, timeout=timeout + 30, check=False)




class Download:
    """peer-2 (real tailscaled) fetches a blob through our inbound listener, hashed as it streams."""

    def __init__(self, h: Hostile, size: int, seed: str, rate: str = "2M") -> None:
        peer = h.refnet["peers"][1]
        self.size, self.seed = size, seed
        self.proc = subprocess.Popen(h.refnet["exec_prefix"] + [
            "curl", "-sS", "--fail", "--max-time", "300", "--limit-rate", rate, "--socks5-hostname", peer["socks5"],
            f"http://{h.ours}:{INBOUND}/blob/{size}?seed={seed}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.digest = hashlib.sha256()
        self.got = 0
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while self.got < MB:  # flowing before the hostile part starts
            if self.proc.poll() is not None:
                raise AssertionError(f"download failed at once: {self.proc.stderr.read()!r}")
            assert time.monotonic() < deadline, f"download stuck at {self.got} bytes"
            time.sleep(0.05)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while chunk := self.proc.stdout.read1(1 << 16):
            self.digest.update(chunk)
            self.got += len(chunk)

    def in_flight(self) -> bool:
        return self.proc.poll() is None and 0 < self.got < self.size

    def finish(self) -> None:
        assert self.proc.wait(timeout=300) == 0, self.proc.stderr.read() if self.proc.stderr else ""
        self.thread.join(30)
        assert self.got == self.size and self.digest.hexdigest() == blob_sha256(self.size, self.seed)


def _pids(node: SunbeamNode) -> dict[str, int]:
    return {s["service"]: s["pid"] for s in node.status().get("services", [])}


def _alive(node: SunbeamNode, pids: dict[str, int]) -> None:
    assert {n: p.poll() for n, p in node.procs.items() if p.poll() is not None} == {}
    assert _pids(node) == pids  # same processes: nothing crashed and came back


def _log_events(node: SunbeamNode, service: str, *events: str) -> Counter:
    """How many log lines each (event, reason) has; every event when none is named."""
    out: Counter = Counter()
    for line in node.log(service).splitlines():
        if line.startswith("{"):
            rec = json.loads(line)
            if not events or rec["event"] in events:
                out[(rec["event"], rec.get("reason") if rec["event"].endswith("_drop") else None)] += 1
    return out


def _delta(before: dict, after: dict, prefix: str = "") -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if k.startswith(prefix) and v != before.get(k, 0)}


def udp_port(node: SunbeamNode) -> int:
    for line in node.log("udp").splitlines():
        if '"udp_listening"' in line:
            return json.loads(line)["port"]
    raise AssertionError("the udp service never logged its port")


# -- 1. a UDP flood: junk, replayed and forged WireGuard, garbage disco --------------------------

class Capture:
    """Copies of the UDP datagrams arriving at ``port`` on the namespace's loopback (AF_PACKET)."""

    def __init__(self, ns: str, port: int) -> None:
        self.port = port
        self.packets: list[bytes] = []
        self.stop = threading.Event()
        with netns.entered(ns):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(3))  # ETH_P_ALL
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * MB)
        self.sock.bind(("lo", 0))
        self.sock.settimeout(0.2)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                ip, addr = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            if addr[2] != socket.PACKET_HOST:  # loopback shows each packet going out and coming in
                continue
            if ip[0] >> 4 == 4 and ip[9] == 17:
                udp = ip[(ip[0] & 15) * 4:]
            elif ip[0] >> 4 == 6 and ip[6] == 17:
                udp = ip[40:]
            else:
                continue
            if int.from_bytes(udp[2:4], "big") == self.port:
                self.packets.append(bytes(udp[8:]))

    def close(self) -> list[bytes]:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()
        return self.packets


def _direct_path(h: Hostile) -> None:
    """Make peer-2 talk to our UDP port directly (so its WireGuard packets can be captured)."""
    peer = h.refnet["peers"][1]

    def direct() -> bool:
        h.node.ctl("ping", peer["name"], "-c", "1", timeout=30)
        subprocess.run(peer["tailscale_cli"] + ["ping", "-c", "1", "--timeout", "2s", h.ours], capture_output=True,
                       timeout=30, check=False)
        st = json.loads(subprocess.run(peer["tailscale_cli"] + ["status", "--json"], capture_output=True,
                                       timeout=30, check=True).stdout)
        me = next((p for p in (st.get("Peer") or {}).values() if h.ours in (p.get("TailscaleIPs") or [])), {})
        return bool(me.get("CurAddr"))

    wait_for(direct, 60, "a direct path from peer-2 to us")


def _flood(ns: str, port: int, captured: list[bytes], rng: random.Random) -> dict[str, int]:
    """Send every kind of bad datagram at our UDP port, paced; return how many of each."""
    def junk(n: int) -> bytes:
        return rng.randbytes(n)

    transport = [p for p in captured if p[:4] == b"\x04\0\0\0"]
    kinds: dict[str, list[bytes]] = {
        # first word not a WireGuard type (nor disco's 'T', nor STUN's zero top bits)
        "junk": [bytes([rng.choice([b for b in range(64, 256) if b != 0x54])]) + junk(rng.randrange(0, 1400))
                 for _ in range(3000)],
        "short_transport": [b"\x04\0\0\0" + junk(rng.randrange(0, 28)) for _ in range(500)],
        "foreign_index": [b"\x04\0\0\0" + make_index(rng.randrange(WORKERS, 256), rng.getrandbits(24)).to_bytes(4, "little")
                          + junk(rng.randrange(24, 200)) for _ in range(500)],
        "unknown_index": [b"\x04\0\0\0" + make_index(rng.randrange(WORKERS), rng.getrandbits(24)).to_bytes(4, "little")
                          + junk(rng.randrange(24, 200)) for _ in range(1000)],
        "bad_initiation": [b"\x01\0\0\0" + junk(144) for _ in range(300)],
        "replay": transport * 2,
        "tampered": [p[:20] + bytes([p[20] ^ 0xFF]) + p[21:] for p in transport],
        "disco": [DISCO_MAGIC + junk(32 + 24 + rng.randrange(0, 100)) for _ in range(1000)],
    }
    order = [(kind, p) for kind, ps in kinds.items() for p in ps]
    rng.shuffle(order)
    with netns.entered(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for i, (_, p) in enumerate(order):
            s.sendto(p, ("127.0.0.1", port))
            if i % 50 == 49:
                time.sleep(0.004)  # ~10k datagrams/s: a flood our socket buffer can hold
    finally:
        s.close()
    return {kind: len(ps) for kind, ps in kinds.items()}


def test_udp_flood_of_junk_replays_and_garbage_disco(hostile):
    h, node = hostile, hostile.node
    port = udp_port(node)
    _direct_path(h)
    pids = _pids(node)
    svcs = ["udp"] + [f"wg-{k}" for k in range(WORKERS)]
    before = {s: node.counters(s) for s in svcs}
    lines_before = {s: _log_events(node, s, "udp_drop", "wg_drop") for s in svcs}
    capture = Capture(h.refnet["netns"], port)
    download = Download(h, 80 * MB, "flood", rate="2M")
    # tailscaled's netstack sends stretch ACKs (about one per 100 KB), so a few hundred
    # transport packets are what a 40 MB transfer yields; 200 are plenty to replay
    wait_for(lambda: sum(p[:4] == b"\x04\0\0\0" for p in capture.packets) >= 200, 20, "peer-2's WireGuard packets")
    captured = capture.close()
    sent = _flood(h.refnet["netns"], port, captured, random.Random(9))
    assert download.in_flight(), "the flood should land mid-transfer"

    def deltas() -> tuple[dict[str, int], dict[str, int]]:
        after = {s: node.counters(s) for s in svcs}
        wg: dict[str, int] = {}
        for s in svcs[1:]:
            for k, v in _delta(before[s], after[s]).items():
                wg[k] = wg.get(k, 0) + v
        return _delta(before["udp"], after["udp"], "rx.drop."), wg

    # the flood is counted as the services read it: wait for its total, then look closer
    wait_for(lambda: sum(deltas()[0].values()) + sum(v for k, v in deltas()[1].items() if k.startswith(
        ("wg_replay", "wg_decrypt", "wg_unknown_index", "initiation_invalid", "wg_handshake_decrypt", "wg_under_load")))
        >= 0.9 * sum(sent.values()), 20, "the flood counted")
    udp, wg = deltas()
    download.finish()
    _alive(node, pids)
    lines = {s: dict(_log_events(node, s, "udp_drop", "wg_drop") - lines_before[s]) for s in svcs}
    print("sent:", sent, "\nudp drops:", udp, "\nwg:", {k: v for k, v in wg.items() if k.startswith(("wg_", "init"))},
          "\nnew drop log lines:", lines)
    # the udp service: each kind it can tell apart, counted under its reason (>= 90%: the
    # kernel may drop a few datagrams of the flood before we see them)
    assert udp.get("rx.drop.not_wireguard", 0) >= 0.9 * sent["junk"]
    assert udp.get("rx.drop.bad_length", 0) >= 0.9 * sent["short_transport"]
    assert udp.get("rx.drop.bad_index", 0) >= 0.9 * sent["foreign_index"]
    assert sum(v for k, v in udp.items() if k.startswith("rx.drop.disco_")) >= 0.9 * sent["disco"]
    # the workers: replays, forgeries and unknown sessions, each a counted drop
    assert wg.get("wg_replay", 0) >= 0.9 * sent["replay"]
    assert wg.get("wg_decrypt", 0) >= 0.9 * sent["tampered"]
    assert wg.get("wg_unknown_index", 0) >= 0.9 * sent["unknown_index"]
    assert wg.get("initiation_invalid", 0) + wg.get("wg_handshake_decrypt", 0) + wg.get("wg_under_load", 0) \
        >= 0.9 * sent["bad_initiation"]
    assert lines["udp"] and all(n <= LOG_BOUND for per in lines.values() for n in per.values()), lines


# -- 2. a fake DERP server sending garbage ---------------------------------------------------

def _our_fake_derp_conn(h: Hostile):
    return h.derp.core.conns.get(h.node_key)


def _raw_to_our_derp_conn(h: Hostile, data: bytes) -> None:
    with h.derp.lock:
        conn = _our_fake_derp_conn(h)
        sock = next(s for s, c in h.derp.conns if c is conn)
        sock.sendall(data)


def test_fake_derp_server_sending_garbage(hostile):
    h, node = hostile, hostile.node
    conn = wait_for(lambda: _our_fake_derp_conn(h), 40, "our derp service at the fake region 1000")
    pids = _pids(node)
    svcs = ["derp", "udp"] + [f"wg-{k}" for k in range(WORKERS)]
    before = {s: node.counters(s) for s in svcs}
    noisy = ("derp_frame_malformed", "derp_health", "derp_reconnect")
    derp_lines = _log_events(node, "derp", *noisy)
    rng = random.Random(7)
    download = Download(h, 40 * MB, "derp", rate="2M")
    pushed = {"short_recv": 300, "short_ping": 100, "short_peer_gone": 100, "unknown_type": 100, "health": 50,
              "wg_junk": 500, "disco_junk": 200}
    for _ in range(pushed["short_recv"]):
        h.derp.push(h.node_key, FrameType.RECV_PACKET, rng.randbytes(rng.randrange(0, 32)))
    for _ in range(pushed["short_ping"]):
        h.derp.push(h.node_key, FrameType.PING, rng.randbytes(rng.randrange(0, 8)))
    for _ in range(pushed["short_peer_gone"]):
        h.derp.push(h.node_key, FrameType.PEER_GONE, rng.randbytes(rng.randrange(0, 32)))
    for _ in range(pushed["unknown_type"]):
        h.derp.push(h.node_key, 0x7E, rng.randbytes(rng.randrange(0, 300)))
    for _ in range(pushed["health"]):
        h.derp.push(h.node_key, FrameType.HEALTH, b'"}\n{"level":"error","event":"forged"}\x00' + rng.randbytes(50))
    for _ in range(pushed["wg_junk"]):  # relayed "WireGuard" from the fake peer and from strangers
        src = h.fake_peer if rng.random() < 0.5 else rng.randbytes(32)
        body = b"\x04\0\0\0" + make_index(rng.randrange(WORKERS), rng.getrandbits(24)).to_bytes(4, "little")
        h.derp.push(h.node_key, FrameType.RECV_PACKET, src + body + rng.randbytes(rng.randrange(24, 500)))
    for _ in range(pushed["disco_junk"]):
        h.derp.push(h.node_key, FrameType.RECV_PACKET, h.fake_peer + DISCO_MAGIC + rng.randbytes(80))
    wait_for(lambda: node.counters("derp").get("derp_frame_malformed", 0)
          >= before["derp"].get("derp_frame_malformed", 0) + 500, 20, "malformed frames counted")
    # then bytes that break the framing: a frame announcing 4 GiB, then plain noise
    for garbage in (b"\x05\xff\xff\xff\xff" + rng.randbytes(1000), b"\xee" + rng.randbytes(65536)):
        _raw_to_our_derp_conn(h, garbage)
        conn = wait_for(lambda c=conn: _our_fake_derp_conn(h) not in (None, c) and _our_fake_derp_conn(h),
                     30, "the derp service logging in again after garbage")
    assert download.in_flight()
    # the junk pushed through DERP is counted by the workers as it arrives
    wait_for(lambda: sum(_delta(before[s], node.counters(s), "wg_").get("wg_unknown_index", 0) for s in svcs[2:])
             >= pushed["wg_junk"], 20, "the junk counted by the workers")
    after = {s: node.counters(s) for s in svcs}
    download.finish()
    _alive(node, pids)
    derp = _delta(before["derp"], after["derp"])
    udp = _delta(before["udp"], after["udp"], "rx.drop.disco_")
    wg: dict[str, int] = {}
    for s in svcs[2:]:
        for k, v in _delta(before[s], after[s], "wg_").items():
            wg[k] = wg.get(k, 0) + v
    lines = dict(_log_events(node, "derp", *noisy) - derp_lines)
    print("pushed:", pushed, "\nderp:", derp, "\nudp:", udp, "\nwg:", wg, "\nnew derp log lines:", lines)
    assert derp.get("derp_frame_malformed", 0) == pushed["short_recv"] + pushed["short_ping"] + pushed["short_peer_gone"]
    assert derp.get("derp_connection_failed", 0) >= 2 and derp.get("derp_connect_attempts", 0) >= 2
    assert derp.get("derp_packets_received", 0) >= pushed["wg_junk"] + pushed["disco_junk"]
    assert sum(udp.values()) >= pushed["disco_junk"]  # via DERP, still dropped by reason
    assert wg.get("wg_unknown_index", 0) >= pushed["wg_junk"]
    assert all(n <= LOG_BOUND // 2 for n in lines.values()), lines  # 5 a minute each
    assert '"event":"forged"' not in node.log("derp")  # a server's text cannot forge a log record


# -- 3. a control server sending malformed and oversized map frames ------------------------------

def _zstd_bombs() -> list[bytes]:
    declared = zstandard.ZstdCompressor().compress(bytes(64 * MB))  # says 64 MiB up front
    cobj = zstandard.ZstdCompressor(write_content_size=False)
    undeclared = cobj.compress(bytes(100 * MB))  # says nothing: 100 MiB of zeros
    return [declared, undeclared, b"\x28\xb5\x2f\xfd" + os.urandom(200)]


def test_control_server_sending_malformed_and_oversized_map_frames(hostile):
    h, node = hostile, hostile.node
    assert h.mitm.live_map.wait(30), h.mitm.errors
    pid = _pids(node)["control"]
    pids = _pids(node)
    before = node.counters("control")
    noisy = ("map_response_malformed", "map_frame_corrupt", "control_reconnect")
    lines_before = _log_events(node, "control", *noisy)
    connections, streams = h.mitm.connections, h.mitm.map_streams
    download = Download(h, 40 * MB, "ctl", rate="2M")
    wrong_types = [b'{"Node": "me", "Peers": 5}', b'{"DERPMap": [1, 2, 3]}', b'{"PacketFilter": {"a": 1}}',
                   b'{"Peers": [{"ID": "x", "Key": 7}]}', b'{"ControlTime": 12, "KeepAlive": "yes"}', b"[]", b"null",
                   b'{"Node": {"ID": 1e400}}']
    malformed = [_frame(b"{not json" + os.urandom(20)) for _ in range(300)]
    malformed += [_frame(wrong_types[i % len(wrong_types)]) for i in range(300)]
    malformed += [_frame(b"[" * 200_000), _frame(os.urandom(3 * MB))]  # deep nesting; 3 MiB of noise
    bombs = [_frame(b) for b in _zstd_bombs()]
    h.mitm.inject(*malformed, *bombs)
    wait_for(lambda: node.counters("control").get("map_frame_corrupt", 0) >= before.get("map_frame_corrupt", 0) + 3,
          30, "zstd bombs counted")
    mid = node.counters("control")
    assert node.control()["state"] == "Running"  # none of that broke the stream
    assert _peers_of(node) >= {h.refnet["peers"][0]["name"], h.refnet["peers"][1]["name"]}
    # a 100 MiB length prefix: the framing is lost; the service drops the stream and reconnects
    h.mitm.inject(struct.pack("<I", 100 * MB) + b"x" * 64)
    wait_for(lambda: node.counters("control").get("map_frame_fatal", 0) > before.get("map_frame_fatal", 0), 20,
          "the fatal frame counted")
    fatal = node.counters("control")
    # the reconnect: a new TS2021 connection through the same server, a new map stream whose
    # responses are consumed, and the netmap kept published all along
    wait_for(lambda: h.mitm.connections > connections and h.mitm.map_streams > streams, 30, "a new map stream")
    wait_for(lambda: node.counters("control").get("map_responses", 0) > fatal.get("map_responses", 0), 30,
          "map responses on the new stream")
    assert _peers_of(node) >= {h.refnet["peers"][0]["name"], h.refnet["peers"][1]["name"]}
    assert download.in_flight()
    download.finish()
    _alive(node, pids)
    assert _pids(node)["control"] == pid
    after = node.counters("control")
    got = _delta(before, after)
    lines = dict(_log_events(node, "control", *noisy) - lines_before)
    print("injected:", h.mitm.injected, "frames\ncontrol counters:", got, "\nnew log lines:", lines)
    assert mid.get("map_response_malformed", 0) - before.get("map_response_malformed", 0) == len(malformed)
    assert mid.get("map_frame_corrupt", 0) - before.get("map_frame_corrupt", 0) == len(bombs)
    assert got.get("map_frame_fatal", 0) == 1 and got.get("connect_attempts", 0) >= 1
    assert all(n <= LOG_BOUND // 2 for n in lines.values()), lines  # 5 a minute each
    # regression: Running was set only by a map response that changed the netmap, so after a
    # reconnect with an unchanged netmap the state stayed Registering (this was a separate
    # test that relied on running after this one)
    wait_for(lambda: node.control().get("state") == "Running", 10, "state Running after the reconnect")


def _peers_of(node: SunbeamNode) -> set[str]:
    res = node.ctl("peers", "--json")
    return {p["name"] for p in json.loads(res.stdout)} if res.returncode == 0 else set()


# -- 4. security checks ------------------------------------------------------------------------

SERVICES = [("control", ()), ("udp", ()), ("derp", ()), ("proxy", ()), ("wg", ("--worker", "0"))]


def _run(node: SunbeamNode, service: str, args=(), timeout: float = 30) -> tuple[int, str]:
    """Exit code and what the user reads: every line but the JSON log records."""
    env = dict(node.env, SUNBEAM_WG_WORKERS="1")
    res = subprocess.run(node.refnet["exec_prefix"] + [f"sunbeam-{service}", *args], env=env, capture_output=True,
                         text=True, timeout=timeout, check=False)
    lines = (res.stdout + res.stderr).strip().splitlines()
    return res.returncode, "\n".join(line for line in lines if not line.startswith('{"ts":'))


@pytest.mark.parametrize("mode", [0o755, 0o750, 0o777])
def test_runtime_dir_open_to_others_is_refused_saying_why(refnet, mode):
    node = SunbeamNode(refnet, hostname="sunbeam-looserun")
    try:
        node.rundir.mkdir()
        os.chmod(node.rundir, mode)
        for service, args in SERVICES:
            code, out = _run(node, service, args)
            assert code == 1, (service, out)
            assert len(out.splitlines()) == 1 and "Traceback" not in out, (service, out)
            assert str(node.rundir) in out and f"mode {mode:04o}" in out and "chmod 700" in out, (service, out)
        res = node.ctl("connect", timeout=60)
        assert res.returncode == 1 and f"mode {mode:04o}" in res.stdout + res.stderr, res.stdout + res.stderr
        assert stat.S_IMODE(node.rundir.stat().st_mode) == mode  # left as it was: the user decides
        assert list(node.rundir.iterdir()) == []  # no socket, log or pid file made in it
    finally:
        node.close()


@pytest.mark.parametrize("service,args", [  # the proxy holds no keys
    ("control", ()), ("udp", ()), ("derp", ()), ("wg", ("--worker", "0"))])
def test_keys_file_readable_by_others_is_refused_saying_why(refnet, service, args):
    node = SunbeamNode(refnet, hostname="sunbeam-loosekeys")
    try:
        load_or_create(node.statedir)
        keys = node.statedir / "keys.json"
        os.chmod(keys, 0o644)
        content = keys.read_bytes()
        code, out = _run(node, service, args)
        assert code != 0, out
        assert len(out.splitlines()) == 1 and "Traceback" not in out, out
        assert str(keys) in out and "0644" in out and "chmod 600" in out, out
        assert keys.read_bytes() == content and stat.S_IMODE(keys.stat().st_mode) == 0o644
    finally:
        node.close()


def _proc_sockets(pids: dict[str, int]) -> list[tuple[str, str, ipaddress._BaseAddress, int, str]]:
    """(service, proto, local address, port, state) of every inet socket our processes hold."""
    owner: dict[int, str] = {}
    for name, pid in pids.items():
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                owner[int(link[8:-1])] = name
    rows = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        for line in Path(f"/proc/{next(iter(pids.values()))}/net/{proto}").read_text().splitlines()[1:]:
            f = line.split()
            if int(f[9]) not in owner:
                continue
            hexaddr, hexport = f[1].split(":")
            raw = bytes.fromhex(hexaddr)
            addr = ipaddress.ip_address(b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4)))
            rows.append((owner[int(f[9])], proto, addr, int(hexport, 16), f[3]))
    return rows


def _loopback(addr) -> bool:
    return addr.is_loopback or bool(getattr(addr, "ipv4_mapped", None) and addr.ipv4_mapped.is_loopback)


def test_no_listener_beyond_loopback(refnet, hostile):
    default = SunbeamNode(refnet, hostname="sunbeam-default")  # no listeners configured
    try:
        default.start_pipeline(workers=WORKERS)
        default.wait_state("Running", timeout=40)
        for node, configured in ((default, False), (hostile.node, True)):
            pids = _pids(node)
            assert set(pids) == {"control", "derp", "udp", "proxy", *(f"wg-{k}" for k in range(WORKERS))}
            rows = _proc_sockets(pids)
            print(node.env["SUNBEAM_HOSTNAME"], rows)
            listening = [r for r in rows if r[1].startswith("tcp") and r[4] == "0A"]
            assert all(_loopback(r[2]) for r in listening), listening
            if configured:  # the SOCKS5 listener of the config, on 127.0.0.1 as written
                assert [(r[0], str(r[2]), r[3]) for r in listening] == [("proxy", "127.0.0.1", SOCKS)]
            else:
                assert listening == []  # nothing listens on TCP by default
            # UDP: the WireGuard/disco socket on every address is the one expected exception. A
            # worker's direct socket (services/wg/direct.py) is connect()ed to one peer (state 01,
            # ESTABLISHED): the kernel gives it only that peer's datagrams, so it listens to nobody
            udp_rows = [r for r in rows if r[1].startswith("udp") and not _loopback(r[2])]
            connected = [r for r in udp_rows if r[4] == "01"]
            assert all(r[0].startswith("wg-") and r[3] == udp_port(node) for r in connected), connected
            wildcard = [r for r in udp_rows if r[4] != "01"]
            assert [(r[0], r[3]) for r in wildcard] == [("udp", udp_port(node))], wildcard
            assert wildcard[0][2].is_unspecified
        _assert_no_secrets(default, refnet)
    finally:
        default.close()


def _secret_forms(raw: bytes) -> set[str]:
    b64 = base64.b64encode(raw).decode()
    return {raw.hex(), raw.hex().upper(), raw.hex()[:16], b64, b64.rstrip("="), b64[:16],
            base64.urlsafe_b64encode(raw).decode().rstrip("=")}


def _assert_no_secrets(node: SunbeamNode, refnet: dict) -> None:
    keys, _ = load_or_create(node.statedir)
    secrets = {f"{name} private key": _secret_forms(getattr(keys, name).private_bytes())
               for name in ("machine", "node", "disco")}
    auth = node.env["SUNBEAM_AUTH_KEY"]
    secrets["auth key"] = {auth, auth.removeprefix("hskey-auth-")}
    texts = {p.name: p.read_text(errors="replace") for p in [*node.base.glob("*.log"), *node.rundir.glob("*.log")]}
    for args in (("status", "--json"), ("peers", "--json"), ("netmap", "--json"), ("status",), ("peers",),
                 ("netmap",)):
        res = node.ctl(*args)
        assert res.returncode == 0, (args, res.stdout, res.stderr)
        texts["sunbeam-ctl " + " ".join(args)] = res.stdout + res.stderr
    assert keys.node_public_text in texts["sunbeam-ctl netmap --json"]  # the outputs are real
    assert sum(len(t) for t in texts.values()) > 10_000
    found = [(what, where) for what, forms in secrets.items() for where, text in texts.items()
             if any(f in text for f in forms)]
    assert found == []


def test_no_private_or_auth_key_in_logs_or_ctl_output(refnet, hostile):
    """Last on purpose: the hostile node's logs now hold everything the cases above caused."""
    assert len(hostile.node.log("control")) > 1000
    _assert_no_secrets(hostile.node, refnet)
