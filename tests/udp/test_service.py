"""sunbeam-udp as a real process, with the test playing every neighbour: it binds the
PULL sockets of two WireGuard workers and of the derp service, pushes into udp-in, and
talks UDP to the service from plain sockets on loopback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import zlib
from pathlib import Path

import pytest
import zmq
from sunbeam.ctl.client import request
from sunbeam.shared.keys import from_text, public_from_private
from sunbeam.shared.messages.ctl import HealthRequest
from sunbeam.shared.messages.dataplane import (
    DERP_IN_CODEC,
    UDP_IN_CODEC,
    WG_IN_CODEC,
    DerpSend,
    DiscoReceived,
    UdpReceived,
    UdpSend,
)
from sunbeam.shared.proto import disco
from sunbeam.shared.proto.disco import CallMeMaybe, Ping, Pong
from sunbeam.shared.proto.wireguard import split_segments
from sunbeam.shared.runtime.counters import Counters
from sunbeam.shared.runtime.rundir import endpoint
from sunbeam.shared.runtime.udpsock import UdpSocket
from sunbeam.shared.sharding import make_index

PEER_DISCO = bytes(range(0x41, 0x61))
PEER_NODE_KEY = bytes(range(0x81, 0xA1))


def free_udp_port() -> int:
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Harness:
    def __init__(self, extra_env: dict[str, str] | None = None) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="sb-udp-"))
        os.chmod(self.base, 0o700)
        self.rundir = self.base / "run"
        self.rundir.mkdir(mode=0o700)
        self.port = free_udp_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SUNBEAM_")}
        self.env.update(
            SUNBEAM_RUNTIME_DIR=str(self.rundir), SUNBEAM_WG_WORKERS="2", SUNBEAM_CONTROL_URL="http://127.0.0.1:9",
            SUNBEAM_AUTH_KEY="tskey-unit-test-secret", SUNBEAM_STATE_DIR=str(self.base / "state"),
            XDG_CONFIG_HOME=str(self.base / "cfg"), SUNBEAM_UDP_PORT=str(self.port), SUNBEAM_LOG_LEVEL="debug",
        )
        self.env.update(extra_env or {})
        self.zctx = zmq.Context()
        self.pulls = {}
        for name in ("wg-0-in", "wg-1-in", "derp-in"):
            sock = self.zctx.socket(zmq.PULL)
            sock.bind(endpoint(self.rundir, name))
            self.pulls[name] = sock
        self.push = self.zctx.socket(zmq.PUSH)
        self.push.connect(endpoint(self.rundir, "udp-in"))
        self.peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.peer.bind(("127.0.0.1", 0))
        self.peer.settimeout(5)
        self.peer_text = f"127.0.0.1:{self.peer.getsockname()[1]}"
        self.log = open(self.base / "udp.log", "wb")
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(["sunbeam-udp"], env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        self.wait_running()
        keys = json.loads((self.base / "state" / "keys.json").read_text())
        self.our_disco = public_from_private(from_text("privkey:", keys["disco"]))

    def health(self):
        return request(self.rundir / "udp-ctl.sock", HealthRequest(), context=self.zctx)

    def counters(self) -> dict[str, int]:
        return self.health().counters

    def wait_running(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.logtext()
            if (self.rundir / "udp-ctl.sock").exists():
                try:
                    if self.health().state == "running":
                        return
                except TimeoutError:
                    pass
            time.sleep(0.05)
        raise AssertionError("sunbeam-udp did not start\n" + self.logtext())

    def logtext(self) -> str:
        return (self.base / "udp.log").read_text(errors="replace")

    def recv(self, name: str, codec, want_packets: int = 1, timeout: float = 5.0) -> list:
        """Messages from PULL ``name`` until they carry ``want_packets`` packets."""
        sock = self.pulls[name]
        got, n = [], 0
        deadline = time.monotonic() + timeout
        while n < want_packets:
            left = deadline - time.monotonic()
            assert left > 0 and sock.poll(int(left * 1000)), f"nothing more on {name}: {got}\n{self.logtext()[-2000:]}"
            msg = codec.decode(sock.recv())
            got.append(msg)
            n += len(msg.packets)
        return got

    def assert_quiet(self, *names: str, wait: float = 0.2) -> None:
        time.sleep(wait)
        for name in names:
            assert not self.pulls[name].poll(0), f"unexpected message on {name}"

    def close(self) -> int:
        rc = None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            rc = self.proc.wait(timeout=15)
        self.zctx.destroy(linger=0)
        self.peer.close()
        self.log.close()
        shutil.rmtree(self.base, ignore_errors=True)
        return rc


@pytest.fixture(scope="module")
def h():
    harness = Harness()
    yield harness
    assert harness.close() == 0


def le(n: int) -> bytes:
    return n.to_bytes(4, "little")


def test_listens_on_the_configured_port_and_logs_it(h):
    line = next(json.loads(x) for x in h.logtext().splitlines() if '"udp_listening"' in x)
    assert line["port"] == h.port and line["family"] == "dual-stack" and line["gro"] and line["gso"]
    assert h.counters()["offload.gso"] == 1


def test_wireguard_routed_by_receiver_index(h):
    transport = le(4) + le(make_index(1, 0xABCDE)) + bytes(8) + b"t" * 48
    h.peer.sendto(transport, ("127.0.0.1", h.port))
    [msg] = h.recv("wg-1-in", WG_IN_CODEC)
    assert msg == UdpReceived(src=h.peer_text, packets=[transport])

    # response: the receiver index (ours) is at 8..12, the sender's at 4..8
    response = le(2) + le(make_index(1, 5)) + le(make_index(0, 9)) + bytes(80)
    h.peer.sendto(response, ("127.0.0.1", h.port))
    assert h.recv("wg-0-in", WG_IN_CODEC) == [UdpReceived(src=h.peer_text, packets=[response])]
    cookie = le(3) + le(make_index(1, 7)) + bytes(56)
    h.peer.sendto(cookie, ("127.0.0.1", h.port))
    assert h.recv("wg-1-in", WG_IN_CODEC) == [UdpReceived(src=h.peer_text, packets=[cookie])]

    initiation = le(1) + le(12345) + bytes(140)
    h.peer.sendto(initiation, ("127.0.0.1", h.port))
    worker = zlib.crc32(h.peer_text.encode()) % 2
    assert h.recv(f"wg-{worker}-in", WG_IN_CODEC) == [UdpReceived(src=h.peer_text, packets=[initiation])]
    h.assert_quiet("wg-0-in", "wg-1-in")


def test_a_burst_arrives_in_order_in_few_batches(h):
    pkts = [le(4) + le(make_index(0, i)) + i.to_bytes(8, "little") + b"b" * 32 for i in range(200)]
    for p in pkts:
        h.peer.sendto(p, ("127.0.0.1", h.port))
    msgs = h.recv("wg-0-in", WG_IN_CODEC, want_packets=200)
    assert [p for m in msgs for p in m.packets] == pkts
    assert len(msgs) < 200 and all(m.src == h.peer_text for m in msgs)


def test_disco_ping_over_udp_gets_a_pong_with_our_observed_address(h):
    before = h.counters()
    txid = os.urandom(12)
    ping = disco.seal(PEER_DISCO, h.our_disco, Ping(txid, PEER_NODE_KEY), os.urandom(24))
    h.peer.sendto(ping, ("127.0.0.1", h.port))
    data, addr = h.peer.recvfrom(2048)
    assert addr == ("127.0.0.1", h.port)
    sender, pong = disco.open_packet(PEER_DISCO, data)
    assert sender == h.our_disco and pong == Pong(txid, h.peer_text)

    # over IPv6 too, and a padded ping (path MTU probe) is answered as well
    six = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        six.bind(("::1", 0))
        six.settimeout(5)
        six.sendto(disco.seal(PEER_DISCO, h.our_disco, Ping(txid, PEER_NODE_KEY, 900), os.urandom(24)),
                   ("::1", h.port))
        data, _ = six.recvfrom(2048)
        assert disco.open_packet(PEER_DISCO, data)[1] == Pong(txid, f"[::1]:{six.getsockname()[1]}")
    finally:
        six.close()
    after = h.counters()
    assert after["disco.ping_rx"] - before.get("disco.ping_rx", 0) == 2
    assert after["disco.pong_tx"] - before.get("disco.pong_tx", 0) == 2


def test_disco_ping_via_derp_answered_via_derp(h):
    txid = os.urandom(12)
    peer_key = bytes(range(32))
    ping = disco.seal(PEER_DISCO, h.our_disco, Ping(txid, peer_key), os.urandom(24))
    cmm = disco.seal(PEER_DISCO, h.our_disco, CallMeMaybe(("192.0.2.1:41641",)), os.urandom(24))
    h.push.send(UDP_IN_CODEC.encode(DiscoReceived(peer_key=peer_key, region=999, packets=[ping, cmm])))
    [msg] = h.recv("derp-in", DERP_IN_CODEC)
    assert isinstance(msg, DerpSend) and msg.peer_key == peer_key and msg.region == 999
    [pkt] = msg.packets
    assert disco.open_packet(PEER_DISCO, pkt) == (h.our_disco, Pong(txid, "127.3.3.40:999"))
    c = h.counters()
    assert c["disco.ping_rx_derp"] == 1 and c["disco.call_me_maybe_rx_derp"] == 1 and c["disco.pong_tx_derp"] == 1


def test_udp_send_delivers_every_packet(h):
    before = h.counters()
    few = [b"one", b"two", b"three"]
    h.push.send(UDP_IN_CODEC.encode(UdpSend(dsts=[h.peer_text], packets=few)))
    assert [h.peer.recv(2048) for _ in few] == few
    train = [bytes([i]) * 1300 for i in range(50)]
    h.push.send(UDP_IN_CODEC.encode(UdpSend(dsts=[h.peer_text, "[::1]:9"], packets=train)))
    assert [h.peer.recv(2048) for _ in train] == train
    after = h.counters()
    assert after["tx.gso_sends"] - before.get("tx.gso_sends", 0) >= 1
    assert after["tx.datagrams"] - before.get("tx.datagrams", 0) == 3 + 2 * 50


def test_garbage_is_counted_and_the_service_stays_up(h):
    before = h.counters()
    junk = [b"", b"\x00", b"hello world", le(4) + le(make_index(7, 1)) + bytes(40), le(1) + bytes(10),
            disco.MAGIC + os.urandom(100), disco.MAGIC + bytes(32) + os.urandom(60)]
    for j in junk:
        h.peer.sendto(j, ("127.0.0.1", h.port))
    h.push.send(b"\xc1 not msgpack")
    h.push.send_multipart([b"two", b"frames"])
    h.push.send(UDP_IN_CODEC.encode(UdpSend(dsts=["nonsense"], packets=[b"x"])))
    # a disco ping sealed to someone else's key
    h.peer.sendto(disco.seal(PEER_DISCO, PEER_DISCO, Ping(os.urandom(12)), os.urandom(24)), ("127.0.0.1", h.port))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        c = h.counters()
        drops = sum(v - before.get(k, 0) for k, v in c.items() if k.startswith("rx.drop."))
        if drops >= len(junk) + 1 and c.get("udp_in.bad_message", 0) - before.get("udp_in.bad_message", 0) >= 2:
            break
        time.sleep(0.05)
    delta = {k: v - before.get(k, 0) for k, v in c.items() if v != before.get(k, 0)}
    assert delta.get("rx.drop.not_wireguard") == 3 and delta.get("rx.drop.bad_index") == 1
    assert delta.get("rx.drop.bad_length") == 1 and delta.get("rx.drop.disco_bad_box") == 2
    assert delta.get("rx.drop.disco_bad_key") == 1 and delta.get("udp_in.bad_message") == 2
    assert delta.get("tx.drop.bad_dst") == 1
    assert h.proc.poll() is None and h.health().state == "running"
    h.assert_quiet("wg-0-in", "wg-1-in", "derp-in")


def test_bad_port_setting_is_one_line_exit_2(h):
    env = dict(h.env, SUNBEAM_UDP_PORT="70000", SUNBEAM_RUNTIME_DIR=str(h.base / "run2"), SUNBEAM_LOG_LEVEL="info")
    res = subprocess.run(["sunbeam-udp"], env=env, capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0 and "SUNBEAM_UDP_PORT" in res.stderr
    # the port is taken (by our running service): one line, non-zero, no traceback
    env = dict(h.env, SUNBEAM_RUNTIME_DIR=str(h.base / "run3"), SUNBEAM_LOG_LEVEL="info")
    res = subprocess.run(["sunbeam-udp"], env=env, capture_output=True, text=True, timeout=30)
    assert res.returncode == 1 and res.stderr.strip().count("\n") == 0, res.stderr
    assert f"UDP port {h.port}" in res.stderr


def _gso_train(h, packets: list[bytes]) -> str:
    """Send ``packets`` as one GSO sendmsg from a fresh socket; returns its address text."""
    twin = UdpSocket(0, Counters(), offload=True)
    try:
        assert twin.gso
        twin.send(packets, f"127.0.0.1:{h.port}")
        return f"127.0.0.1:{twin.port}"
    finally:
        twin.close()


def test_a_gro_burst_of_one_session_goes_to_its_worker_whole(h):
    before = h.counters()
    index = le(make_index(1, 77))
    pkts = [le(4) + index + i.to_bytes(8, "little") + bytes([i]) * 1200 for i in range(30)]
    pkts.append(le(4) + index + (30).to_bytes(8, "little") + b"tail" * 10)
    src = _gso_train(h, pkts)
    msgs, got = [], []
    while len(got) < len(pkts):  # the kernel may hand the train over in more than one burst
        msgs += h.recv("wg-1-in", WG_IN_CODEC)
        got = [d for m in msgs for p, size in zip(m.packets, m.segments or [0] * len(m.packets), strict=True)
               for d in split_segments(p, size)]
    assert got == pkts and all(m.src == src for m in msgs)
    assert any(size == len(pkts[0]) for m in msgs for size in m.segments), "no burst passed on whole"
    after = h.counters()
    assert after["rx.to_wg"] - before.get("rx.to_wg", 0) == len(pkts)
    assert after["rx.gro_batches"] > before.get("rx.gro_batches", 0)
    h.assert_quiet("wg-0-in", "wg-1-in")


def test_a_gro_burst_for_two_workers_is_split_by_receiver_index(h):
    pkts = [le(4) + le(make_index(i % 2, 5)) + i.to_bytes(8, "little") + b"m" * 1000 for i in range(10)]
    _gso_train(h, pkts)
    to0 = h.recv("wg-0-in", WG_IN_CODEC, want_packets=5)
    to1 = h.recv("wg-1-in", WG_IN_CODEC, want_packets=5)
    assert [p for m in to0 for p in m.packets] == pkts[0::2]
    assert [p for m in to1 for p in m.packets] == pkts[1::2]
    assert not any(m.segments for m in to0 + to1)
    h.assert_quiet("wg-0-in", "wg-1-in")
