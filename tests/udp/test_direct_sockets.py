"""sunbeam-udp with SUNBEAM_DIRECT_SOCKETS=1 as a real process (issue 20 item 2): its socket
shares the port with the workers' connected ones, it handles what a worker forwards
(`UdpForwarded`), and it gets a peer's datagrams back as soon as a worker's socket closes
(what a kill -9 of that worker does). Plus the connected socket's ECONNREFUSED handling."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import time

import pytest
from sunbeam.shared.messages.dataplane import (
    UDP_IN_CODEC,
    WG_IN_CODEC,
    UdpForwarded,
    UdpReceived,
)
from sunbeam.shared.proto import disco
from sunbeam.shared.proto.disco import Ping, Pong
from sunbeam.shared.runtime.counters import Counters
from sunbeam.shared.runtime.udpsock import UdpSocket
from sunbeam.shared.sharding import make_index

from .test_service import PEER_DISCO, PEER_NODE_KEY, Harness, le


@pytest.fixture(scope="module")
def hd():
    harness = Harness({"SUNBEAM_DIRECT_SOCKETS": "1"})
    yield harness
    assert harness.close() == 0


def _wait(predicate, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError("not within timeout")


def test_the_port_is_shared_and_a_connected_socket_takes_its_peers_datagrams(hd):
    assert (hd.rundir / "udp.port").read_text().strip() == str(hd.port)
    transport = le(4) + le(make_index(1, 77)) + bytes(8) + b"d" * 48
    direct = UdpSocket.connected(hd.port, hd.peer_text, Counters())  # what a worker opens
    try:
        before = hd.counters().get("rx.datagrams", 0)
        hd.peer.sendto(transport, ("127.0.0.1", hd.port))
        got = _wait(lambda: direct.recv_bursts(8))
        assert got == [(transport, hd.peer_text, 0)]
        hd.assert_quiet("wg-1-in")
        assert hd.counters().get("rx.datagrams", 0) == before  # udp never saw it
        # what the worker sends leaves from the shared port
        direct.send([b"to-peer"], hd.peer_text)
        data, addr = hd.peer.recvfrom(2048)
        assert (data, addr) == (b"to-peer", ("127.0.0.1", hd.port))
    finally:
        direct.close()  # as the kernel does at a worker's kill -9
    hd.peer.sendto(transport, ("127.0.0.1", hd.port))
    assert hd.recv("wg-1-in", WG_IN_CODEC) == [UdpReceived(src=hd.peer_text, packets=[transport])]


def test_disco_forwarded_by_a_worker_is_answered_from_the_shared_port(hd):
    txid = os.urandom(12)
    ping = disco.seal(PEER_DISCO, hd.our_disco, Ping(txid, PEER_NODE_KEY), os.urandom(24))
    transport = le(4) + le(make_index(0, 5)) + bytes(8) + b"f" * 48
    hd.push.send(UDP_IN_CODEC.encode(UdpForwarded(src=hd.peer_text, packets=[ping, transport])))
    data, addr = hd.peer.recvfrom(2048)
    assert addr == ("127.0.0.1", hd.port)
    assert disco.open_packet(PEER_DISCO, data) == (hd.our_disco, Pong(txid, hd.peer_text))
    # another worker's WireGuard that landed on a worker's socket goes where udp routes it
    assert hd.recv("wg-0-in", WG_IN_CODEC) == [UdpReceived(src=hd.peer_text, packets=[transport])]
    counters = _wait(lambda: (c := hd.counters()).get("rx.from_wg", 0) >= 2 and c)
    assert counters["disco.ping_rx"] >= 1 and counters["disco.pong_tx"] >= 1


def test_a_restarted_udp_binds_beside_its_workers_sockets_on_a_fixed_port(hd):
    direct = UdpSocket.connected(hd.port, hd.peer_text, Counters())  # a worker's, outliving udp
    try:
        hd.proc.kill()  # kill -9
        hd.proc.wait(timeout=10)
        hd.start()  # the same fixed port, held by the worker: udp.port says it is ours
        assert '"udp_port_shared"' in hd.logtext()
        other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            other.bind(("127.0.0.1", 0))
            transport = le(4) + le(make_index(1, 9)) + bytes(8) + b"r" * 48
            other.sendto(transport, ("127.0.0.1", hd.port))
            src = f"127.0.0.1:{other.getsockname()[1]}"
            assert hd.recv("wg-1-in", WG_IN_CODEC) == [UdpReceived(src=src, packets=[transport])]
        finally:
            other.close()
    finally:
        direct.close()


def test_without_the_marker_a_taken_port_is_still_an_error(tmp_path):
    taken = UdpSocket(0, Counters(), reuse_port=True)  # e.g. another program's, sharing allowed
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SUNBEAM_")}
        env.update(SUNBEAM_RUNTIME_DIR=str(tmp_path / "run"), SUNBEAM_WG_WORKERS="2",
                   SUNBEAM_CONTROL_URL="http://127.0.0.1:9", SUNBEAM_AUTH_KEY="tskey-unit-test-secret",
                   SUNBEAM_STATE_DIR=str(tmp_path / "state"), XDG_CONFIG_HOME=str(tmp_path / "cfg"),
                   SUNBEAM_UDP_PORT=str(taken.port), SUNBEAM_DIRECT_SOCKETS="1")
        res = subprocess.run(["sunbeam-udp"], env=env, capture_output=True, text=True, timeout=30)
        assert res.returncode == 1 and "cannot bind UDP port" in res.stderr, res.stderr
    finally:
        taken.close()


def test_with_the_switch_off_the_port_is_not_shared():
    h = Harness({"SUNBEAM_DIRECT_SOCKETS": "0"})
    try:
        with pytest.raises(OSError) as err:
            UdpSocket.connected(h.port, h.peer_text, Counters())
        assert err.value.errno == errno.EADDRINUSE
        assert not (h.rundir / "udp.port").exists()
    finally:
        assert h.close() == 0


def test_a_bad_switch_value_is_one_line_exit_2(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUNBEAM_")}
    env.update(SUNBEAM_RUNTIME_DIR=str(tmp_path / "run"), SUNBEAM_STATE_DIR=str(tmp_path / "state"),
               SUNBEAM_CONTROL_URL="http://127.0.0.1:9", SUNBEAM_AUTH_KEY="tskey-unit-test-secret",
               XDG_CONFIG_HOME=str(tmp_path / "cfg"), SUNBEAM_DIRECT_SOCKETS="maybe")
    res = subprocess.run(["sunbeam-udp"], env=env, capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and "SUNBEAM_DIRECT_SOCKETS='maybe'" in res.stderr, res.stderr


def test_econnrefused_on_a_connected_socket_is_counted_and_the_send_retried():
    counters = Counters()
    wild = UdpSocket(0, Counters(), reuse_port=True)
    gone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    gone.bind(("127.0.0.1", 0))
    dst = f"127.0.0.1:{gone.getsockname()[1]}"
    direct = UdpSocket.connected(wild.port, dst, counters)
    try:
        gone.close()  # the peer's port closes: the next datagram draws an ICMP port unreachable
        direct.send([b"one"], dst)
        time.sleep(0.05)
        direct.send([b"two"], dst)  # ECONNREFUSED (about "one"): counted, "two" sent again
        time.sleep(0.05)
        direct.send([b"x" * 100] * 3, dst)  # a GSO run after another refusal
        time.sleep(0.05)
        assert direct.recv_bursts(4) == []  # a pending error on receive: counted, no raise
        snap = counters.snapshot()
        assert snap.get("tx.econnrefused", 0) >= 2, snap
        assert snap.get("tx.datagrams", 0) == 5, snap  # nothing was dropped for the old error
        direct.send([b"three"], dst)
        direct.recv_bursts(4)
        assert all(not k.startswith("tx.drop") or k == "tx.drop.econnrefused" for k in counters.snapshot())
    finally:
        direct.close()
        wild.close()
