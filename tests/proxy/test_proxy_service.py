"""sunbeam-proxy as a process: netmap from a fake control XPUB, packets through its sockets.

No network: the test plays the control service (an XPUB at ``control-pub.sock`` answering
each subscription with a `NetmapSnapshot`, as services/control/pubsocket.py does) and the
single WireGuard worker (PUSH into ``proxy-in``, PULL bound at ``wg-0-in``).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import zmq
from sunbeam.ctl.client import request
from sunbeam.shared.messages.ctl import HealthRequest
from sunbeam.shared.messages.dataplane import (
    PROXY_IN_CODEC,
    WG_IN_CODEC,
    FromPeer,
    ToPeer,
)
from sunbeam.shared.messages.netmap import CONTROL_EVENT_CODEC, NetmapSnapshot
from sunbeam.shared.messages.ping import PING_REPLY_CODEC, PING_REQUEST_CODEC, PingPeer
from sunbeam.shared.netmap import Netmap, Peer, SelfNode
from sunbeam.shared.proto.ip.headers import addr_bytes, parse
from sunbeam.shared.proto.ip.icmp import echo_reply_to, parse_echo

from ..ip.vectors import OURS4, OURS6, PEER4, PEER6, UPSTREAM

PEER_KEY = bytes(range(32))
NETMAP = Netmap(
    self_node=SelfNode(id=1, key="nodekey:" + "11" * 32, addresses=(f"{OURS4}/32", f"{OURS6}/128")),
    peers=(Peer(id=2, key="nodekey:" + PEER_KEY.hex(), addresses=(f"{PEER4}/32",),
                allowed_ips=(f"{PEER4}/32", f"{PEER6}/128")),),
)


class Harness:
    def __init__(self, rundir: Path, env: dict[str, str]) -> None:
        self.rundir = rundir
        self.ctx = zmq.Context()
        self.pub = self._sock(zmq.XPUB)
        self.pub.setsockopt(zmq.XPUB_VERBOSE, 1)
        self.pub.bind(f"ipc://{rundir}/control-pub.sock")
        self.wg = self._sock(zmq.PULL)
        self.wg.bind(f"ipc://{rundir}/wg-0-in.sock")
        self.proc = subprocess.Popen(["sunbeam-proxy"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        self.push = self._sock(zmq.PUSH)
        self.push.connect(f"ipc://{rundir}/proxy-in.sock")

    def _sock(self, kind):
        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        return sock

    def publish_netmap_on_subscription(self, timeout=15.0) -> None:
        assert self.pub.poll(int(timeout * 1000)), "the proxy never subscribed to control-pub"
        assert self.pub.recv()[:1] == b"\x01"
        self.pub.send(CONTROL_EVENT_CODEC.encode(NetmapSnapshot(seq=1, netmap=NETMAP)))
        self.wait_counter("netmap_applied", 1)

    def counters(self) -> dict[str, int]:
        return request(self.rundir / "proxy-ctl.sock", HealthRequest(), timeout=5.0, context=self.ctx).counters

    def wait_counter(self, name: str, at_least: int, timeout: float = 10.0) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        while True:
            counters = self.counters() if (self.rundir / "proxy-ctl.sock").exists() else {}
            if counters.get(name, 0) >= at_least:
                return counters
            assert time.monotonic() < deadline, f"{name} never reached {at_least}: {counters}"
            time.sleep(0.05)

    def from_peer(self, *packets: bytes) -> None:
        self.push.send(PROXY_IN_CODEC.encode(FromPeer(peer_key=PEER_KEY, packets=list(packets))))

    def to_peer(self, timeout: float = 5.0) -> ToPeer:
        assert self.wg.poll(int(timeout * 1000)), "nothing arrived on wg-0-in"
        msg = WG_IN_CODEC.decode(self.wg.recv())
        assert isinstance(msg, ToPeer)
        return msg

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            code = self.proc.wait(timeout=10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.ctx.destroy(linger=0)
        assert code == 0, self.proc.stderr.read()
        assert not (self.rundir / "proxy-in.sock").exists() and not (self.rundir / "proxy-ping.sock").exists()


@pytest.fixture()
def proxy(tmp_path):
    rundir = tmp_path / "run"
    rundir.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUNBEAM_")}
    env.update(SUNBEAM_RUNTIME_DIR=str(rundir), SUNBEAM_WG_WORKERS="1", SUNBEAM_CONTROL_URL="http://127.0.0.1:9",
               SUNBEAM_AUTH_KEY="tskey-unit-test", SUNBEAM_STATE_DIR=str(tmp_path / "state"),
               XDG_CONFIG_HOME=str(tmp_path / "cfg"))
    h = Harness(rundir, env)
    try:
        h.publish_netmap_on_subscription()
        yield h
    finally:
        h.close()


def test_echo_requests_are_answered_to_the_same_peer(proxy):
    proxy.from_peer(UPSTREAM["echo4_req"], UPSTREAM["echo6_req"] + bytes(10))
    msg = proxy.to_peer()
    assert msg.peer_key == PEER_KEY
    assert msg.packets == [UPSTREAM["echo4_rep"], UPSTREAM["echo6_rep"]]  # one batch, in order
    assert proxy.counters()["ip.echo_request"] == 2


def test_tsmp_ping_gets_a_pong_and_garbage_is_counted(proxy):
    proxy.from_peer(b"\x15garbage", UPSTREAM["tsmp4_ping"], UPSTREAM["echo4_req"][:-3], UPSTREAM["tsmp6_ping"])
    msg = proxy.to_peer()
    assert msg.peer_key == PEER_KEY and msg.packets == [UPSTREAM["tsmp4_pong"], UPSTREAM["tsmp6_pong"]]
    counters = proxy.wait_counter("ip.tsmp_ping", 2)
    assert counters["ip.drop.bad_version"] == 1 and counters["ip.drop.truncated"] == 1
    proxy.push.send(b"\x93not a message")
    proxy.wait_counter("proxy_in_bad_message", 1)
    assert proxy.proc.poll() is None


def test_ping_peer_sends_echo_and_matches_the_reply(proxy):
    req = proxy._sock(zmq.REQ)
    req.connect(f"ipc://{proxy.rundir}/proxy-ping.sock")
    req.send(PING_REQUEST_CODEC.encode(PingPeer(dst_ip=PEER4, count=2, timeout=1.0)))
    first = proxy.to_peer()
    assert first.peer_key == PEER_KEY and len(first.packets) == 1
    pkt = parse(first.packets[0])
    echo = parse_echo(pkt)
    assert (pkt.src, pkt.dst, echo.request, echo.seq) == (addr_bytes(OURS4), addr_bytes(PEER4), True, 0)
    proxy.from_peer(echo_reply_to(pkt, echo))  # the peer answers the first ...
    second = proxy.to_peer()
    assert parse_echo(parse(second.packets[0])).seq == 1  # ... and ignores the second
    assert req.poll(5000)
    result = PING_REPLY_CODEC.decode(req.recv())
    assert result.dst_ip == PEER4 and result.error is None
    assert len(result.rtts) == 2 and 0 <= result.rtts[0] < 1.0 and result.rtts[1] is None
    counters = proxy.counters()
    assert counters["ip.echo_reply"] == 1 and counters["ping_timeouts"] == 1

    # no route, and not an address: answered at once, once each
    for dst, error in (("100.64.0.77", "no route"), ("nonsense", "not an IP address")):
        req.send(PING_REQUEST_CODEC.encode(PingPeer(dst_ip=dst, count=2, timeout=1.0)))
        assert req.poll(5000)
        result = PING_REPLY_CODEC.decode(req.recv())
        assert result.rtts == [None, None] and error in result.error
    req.send(b"junk")
    assert req.poll(5000)
    assert "bad request" in PING_REPLY_CODEC.decode(req.recv()).error


def test_netmap_gap_resubscribes_and_new_addresses_apply(proxy):
    from sunbeam.shared.messages.netmap import NetmapDelta

    proxy.pub.send(CONTROL_EVENT_CODEC.encode(NetmapDelta(seq=5)))  # seq 2 expected: a gap
    deadline = time.monotonic() + 10
    while True:  # the proxy re-subscribes (an unsubscribe, then a subscribe)
        assert proxy.pub.poll(int(max(0.0, deadline - time.monotonic()) * 1000)), "no re-subscription"
        if proxy.pub.recv()[:1] == b"\x01":
            break
    moved = Netmap(self_node=SelfNode(id=1, key=NETMAP.self_node.key, addresses=("100.64.0.6/32",)),
                   peers=NETMAP.peers)
    proxy.pub.send(CONTROL_EVENT_CODEC.encode(NetmapSnapshot(seq=9, netmap=moved)))
    proxy.wait_counter("netmap_applied", 2)
    assert proxy.counters()["control_resubscribe"] == 1
    proxy.from_peer(UPSTREAM["echo4_req"])  # to 100.64.0.5: no longer ours
    proxy.wait_counter("ip.not_for_us", 1)
