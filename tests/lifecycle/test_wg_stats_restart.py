"""A sunbeam-wg worker's per-peer totals outlive the process (services/wg/statsfile.py).

No network: the test plays the control service (XPUB ``control-pub`` answering each
subscription with a snapshot), the udp/derp/proxy services (PULL sockets) and a remote
WireGuard peer (our own `Device`), and restarts the one worker itself as supervisord would:
after a kill -9 (what was saved within the last second comes back) and after a SIGTERM
(everything comes back).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import zmq
from sunbeam.services.wg.statsfile import Totals, decode, encode, stats_path
from sunbeam.ctl.client import request
from sunbeam.shared.keys import load_or_create, public_from_private
from sunbeam.shared.messages.ctl import (
    HealthRequest,
    PeersReply,
    PeersRequest,
    PeerStats,
    ServiceHealth,
)
from sunbeam.shared.messages.dataplane import (
    DERP_IN_CODEC,
    PROXY_IN_CODEC,
    WG_IN_CODEC,
    DerpReceived,
    ToPeer,
)
from sunbeam.shared.messages.netmap import CONTROL_EVENT_CODEC, NetmapSnapshot
from sunbeam.shared.netmap import Netmap, Peer, SelfNode
from sunbeam.shared.proto.ip.icmp import build_echo_request
from sunbeam.shared.proto.wireguard import Device

OURS, PEER_IP, GHOST_IP = "100.64.0.5", "100.64.0.9", "100.64.0.10"
GHOST = b"\x42" * 32  # a peer of the saved file that the first netmap does not hold


class Harness:
    def __init__(self, base) -> None:
        self.rundir, state = base / "run", base / "state"
        self.rundir.mkdir(mode=0o700)
        keys, _ = load_or_create(state)
        self.our_pub = keys.node.public
        peer_priv = os.urandom(32)
        self.peer_pub = public_from_private(peer_priv)
        self.peer = Device(private_key=peer_priv, worker=0, random_bytes=os.urandom)
        self.peer.set_peer(self.our_pub, [f"{OURS}/32"])
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SUNBEAM_")}
        self.env.update(SUNBEAM_RUNTIME_DIR=str(self.rundir), SUNBEAM_STATE_DIR=str(state), SUNBEAM_WG_WORKERS="1",
                        SUNBEAM_CONTROL_URL="http://127.0.0.1:9", SUNBEAM_AUTH_KEY="k",
                        XDG_CONFIG_HOME=str(base / "cfg"))
        self.ctx = zmq.Context()
        self.socks: dict[str, zmq.Socket] = {}
        for name, kind in (("control-pub", zmq.XPUB), ("udp-in", zmq.PULL), ("derp-in", zmq.PULL),
                           ("proxy-in", zmq.PULL)):
            s = self.ctx.socket(kind)
            s.setsockopt(zmq.LINGER, 0)
            if kind == zmq.XPUB:
                s.setsockopt(zmq.XPUB_VERBOSE, 1)
            s.bind(f"ipc://{self.rundir}/{name}.sock")
            self.socks[name] = s
        self.push = self.ctx.socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 0)
        self.push.connect(f"ipc://{self.rundir}/wg-0-in.sock")
        self.seq = 0
        self.netmap = self._netmap(ghost=False)
        self.proc: subprocess.Popen | None = None
        self.file = stats_path(self.rundir, 0)

    def _netmap(self, ghost: bool) -> Netmap:
        peers = [Peer(id=2, key="nodekey:" + self.peer_pub.hex(), addresses=(f"{PEER_IP}/32",),
                      allowed_ips=(f"{PEER_IP}/32",), home_derp=999)]
        if ghost:
            peers.append(Peer(id=3, key="nodekey:" + GHOST.hex(), addresses=(f"{GHOST_IP}/32",),
                              allowed_ips=(f"{GHOST_IP}/32",), home_derp=999))
        return Netmap(self_node=SelfNode(id=1, key="nodekey:" + self.our_pub.hex(), addresses=(f"{OURS}/32",)),
                      peers=tuple(peers))

    def publish(self, ghost: bool) -> None:
        self.netmap = self._netmap(ghost)
        self.seq += 1
        self.socks["control-pub"].send(CONTROL_EVENT_CODEC.encode(NetmapSnapshot(seq=self.seq, netmap=self.netmap)))

    def start(self) -> None:
        self.proc = subprocess.Popen(["sunbeam-wg", "--worker", "0"], env=self.env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 15
        while True:  # answer its subscription with the netmap, as the control service does
            assert time.monotonic() < deadline, "the worker never subscribed"
            pub = self.socks["control-pub"]
            if pub.poll(200) and pub.recv()[:1] == b"\x01":
                self.seq += 1
                pub.send(CONTROL_EVENT_CODEC.encode(NetmapSnapshot(seq=self.seq, netmap=self.netmap)))
                break
        self.wait_for(lambda: self.counters().get("netmap_updates"), "the worker applied the netmap")

    def stop(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=15)
        self.proc = None
        return code

    def counters(self) -> dict[str, int]:
        reply = request(self.rundir / "wg-0-ctl.sock", HealthRequest(), timeout=5.0, context=self.ctx)
        assert isinstance(reply, ServiceHealth)
        return reply.counters

    def peers(self) -> dict[bytes, PeerStats]:
        reply = request(self.rundir / "wg-0-ctl.sock", PeersRequest(), timeout=5.0, context=self.ctx)
        assert isinstance(reply, PeersReply)
        return {bytes.fromhex(p.key.removeprefix("nodekey:")): p for p in reply.peers}

    def saved(self) -> dict[bytes, Totals]:
        try:
            return decode(self.file.read_bytes(), 0, 1)
        except (OSError, ValueError):
            return {}

    @staticmethod
    def wait_for(predicate, what: str, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
            time.sleep(0.05)

    def traffic(self, pings: int = 5) -> None:
        """A fresh handshake (the peer forgets its session, as after our restart), then
        ``pings`` packets each way: from the peer to the proxy, from the proxy to the peer."""
        self.peer.remove_peer(self.our_pub)
        self.peer.set_peer(self.our_pub, [f"{OURS}/32"])
        packets = [build_echo_request(PEER_IP, OURS, 7, i, b"sunbeam" * 20) for i in range(pings)]
        init = self.peer.encapsulate(self.our_pub, packets, time.time())
        assert [m[0] for m in init] == [1]
        self.push.send(WG_IN_CODEC.encode(DerpReceived(peer_key=self.peer_pub, region=999, packets=init)))
        assert self.socks["derp-in"].poll(5000), "no handshake response"
        resp = DERP_IN_CODEC.decode(self.socks["derp-in"].recv())
        out = []
        for m in resp.packets:
            out += self.peer.decapsulate(m, time.time()).to_peer
        assert out and {m[0] for m in out} == {4}
        self.push.send(WG_IN_CODEC.encode(DerpReceived(peer_key=self.peer_pub, region=999, packets=out)))
        got: list[bytes] = []
        while len(got) < pings:
            assert self.socks["proxy-in"].poll(5000), f"{len(got)} of {pings} echo requests reached the proxy"
            got += PROXY_IN_CODEC.decode(self.socks["proxy-in"].recv()).packets
        assert got == packets
        replies = [build_echo_request(OURS, PEER_IP, 8, i, b"reply" * 20) for i in range(pings)]
        self.push.send(WG_IN_CODEC.encode(ToPeer(peer_key=self.peer_pub, packets=replies)))
        back: list[bytes] = []
        while len(back) < pings:
            assert self.socks["derp-in"].poll(5000), f"{len(back)} of {pings} packets sent to the peer"
            for m in DERP_IN_CODEC.decode(self.socks["derp-in"].recv()).packets:
                back += self.peer.decapsulate(m, time.time()).to_tunnel
        assert back == replies

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.ctx.destroy(linger=0)


@pytest.fixture()
def h(tmp_path):
    harness = Harness(tmp_path)
    yield harness
    harness.close()


def _totals(p: PeerStats) -> Totals:
    return Totals(p.rx_bytes, p.tx_bytes, p.last_handshake)


def test_totals_survive_kill9_and_a_clean_restart(h):
    h.start()
    h.traffic()
    first = h.wait_for(lambda: _totals(h.peers()[h.peer_pub]) if h.peers()[h.peer_pub].last_handshake else None,
                       "a handshake counted")
    assert first.rx_bytes > 0 and first.tx_bytes > 0
    # the saver writes within a second; then a kill -9 loses nothing of it
    h.wait_for(lambda: h.saved().get(h.peer_pub) == _totals(h.peers()[h.peer_pub]), "the totals saved")
    before = _totals(h.peers()[h.peer_pub])
    assert h.stop(signal.SIGKILL) == -signal.SIGKILL
    h.start()
    after = _totals(h.peers()[h.peer_pub])
    assert after == before  # no traffic since: exactly what was saved, handshake time included
    assert h.counters().get("stats_file_dropped", 0) == 0
    # the restarted worker counts on from there
    h.traffic()
    grown = h.wait_for(lambda: (t := _totals(h.peers()[h.peer_pub])).last_handshake > before.last_handshake and t,
                       "the new handshake counted")
    assert grown.rx_bytes > before.rx_bytes and grown.tx_bytes > before.tx_bytes
    # a clean stop writes the last counts, so a clean restart loses nothing at all
    assert h.stop(signal.SIGTERM) == 0
    assert h.saved()[h.peer_pub] == grown
    h.start()
    assert _totals(h.peers()[h.peer_pub]) == grown
    assert os.stat(h.file).st_mode & 0o077 == 0


def test_corrupt_file_is_counted_and_ignored(h):
    h.file.write_bytes(b"\x81\xa7version\xc1 not msgpack")
    h.start()
    assert h.counters()["stats_file_dropped"] == 1
    assert _totals(h.peers()[h.peer_pub]) == Totals()  # from zero, running
    h.traffic(pings=1)
    h.wait_for(lambda: h.saved().get(h.peer_pub, Totals()).rx_bytes > 0, "a good file written over the bad one")


def test_saved_peer_absent_from_the_netmap_is_kept_not_reported(h):
    base = {h.peer_pub: Totals(50_000_000, 20_000, 1_718_000_000.5), GHOST: Totals(1234, 5678, 1_718_000_001.0)}
    h.file.write_bytes(encode(0, 1, base))
    h.start()
    assert h.peers() == {h.peer_pub: h.peers()[h.peer_pub]}  # the ghost is not resurrected
    assert _totals(h.peers()[h.peer_pub]) == base[h.peer_pub]
    h.traffic(pings=1)
    h.wait_for(lambda: h.saved().get(h.peer_pub, Totals()).rx_bytes > 50_000_000, "the live peer's totals saved")
    assert h.saved()[GHOST] == base[GHOST]  # kept in the file meanwhile
    h.publish(ghost=True)  # the peer comes back: it continues from its saved totals
    ghost = h.wait_for(lambda: h.peers().get(GHOST), "the ghost back in the netmap")
    assert _totals(ghost) == base[GHOST]
    h.publish(ghost=False)  # and leaves again: its total stays in the file
    h.wait_for(lambda: GHOST not in h.peers(), "the ghost gone")
    assert h.saved()[GHOST] == base[GHOST]
