"""Two sunbeam-wg worker processes: ownership, forwarding of initiations, AllowedIPs.

No network: the test plays the control service (XPUB ``control-pub`` answering each
subscription with a snapshot), the udp/derp/proxy services (PULL sockets), and a remote
WireGuard peer (our own `Device`, whose key is chosen so that worker 1 owns it).
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest
import zmq

from sunbeam.ctl.client import request
from sunbeam.shared.keys import load_or_create, public_from_private
from sunbeam.shared.messages.ctl import HealthRequest, PeersReply, PeersRequest
from sunbeam.shared.messages.dataplane import (
    DERP_IN_CODEC,
    PROXY_IN_CODEC,
    UDP_IN_CODEC,
    WG_IN_CODEC,
    DerpReceived,
    PathWanted,
    PeerPath,
    ToPeer,
    UdpReceived,
)
from sunbeam.shared.messages.netmap import CONTROL_EVENT_CODEC, NetmapSnapshot
from sunbeam.shared.netmap import Netmap, Peer, SelfNode
from sunbeam.shared.proto.ip.icmp import build_echo_request
from sunbeam.shared.proto.wireguard import Device, receiver_index
from sunbeam.services.wg.peerroute import UDP_FRESH, PeerRoute
from sunbeam.shared.sharding import owner, worker_of_index

OURS, PEER_IP, OUTSIDER = "100.64.0.5", "100.64.0.9", "100.64.0.77"
SRC = "127.0.0.1:40000"


@pytest.fixture()
def harness(tmp_path):
    base = tmp_path
    rundir, state = base / "run", base / "state"
    rundir.mkdir(mode=0o700)
    keys, _ = load_or_create(state)
    while True:  # a peer key that worker 1 owns
        peer_priv = os.urandom(32)
        if owner(public_from_private(peer_priv), 2) == 1:
            break
    peer_pub = public_from_private(peer_priv)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUNBEAM_")}
    env.update(SUNBEAM_RUNTIME_DIR=str(rundir), SUNBEAM_STATE_DIR=str(state), SUNBEAM_WG_WORKERS="2",
               SUNBEAM_CONTROL_URL="http://127.0.0.1:9", SUNBEAM_AUTH_KEY="k", XDG_CONFIG_HOME=str(base / "cfg"))
    ctx = zmq.Context()
    socks = {}
    for name, kind in (("control-pub", zmq.XPUB), ("udp-in", zmq.PULL), ("derp-in", zmq.PULL), ("proxy-in", zmq.PULL)):
        s = ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        if kind == zmq.XPUB:
            s.setsockopt(zmq.XPUB_VERBOSE, 1)
        s.bind(f"ipc://{rundir}/{name}.sock")
        socks[name] = s
    netmap = Netmap(
        self_node=SelfNode(id=1, key="nodekey:" + keys.node.public.hex(), addresses=(f"{OURS}/32",)),
        peers=(Peer(id=2, key="nodekey:" + peer_pub.hex(), addresses=(f"{PEER_IP}/32",),
                    allowed_ips=(f"{PEER_IP}/32",), home_derp=999),),
    )
    procs = [subprocess.Popen(["sunbeam-wg", "--worker", str(k)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for k in (0, 1)]
    subscribed = 0
    deadline = time.monotonic() + 15
    while subscribed < 2 and time.monotonic() < deadline:
        if socks["control-pub"].poll(200) and socks["control-pub"].recv()[:1] == b"\x01":
            subscribed += 1
            socks["control-pub"].send(CONTROL_EVENT_CODEC.encode(NetmapSnapshot(seq=1, netmap=netmap)))
    assert subscribed == 2
    push = {}
    for k in (0, 1):
        push[k] = ctx.socket(zmq.PUSH)
        push[k].setsockopt(zmq.LINGER, 0)
        push[k].connect(f"ipc://{rundir}/wg-{k}-in.sock")
    peer = Device(private_key=peer_priv, worker=0, random_bytes=os.urandom)
    peer.set_peer(keys.node.public, [f"{OURS}/32"])

    def counters(k):
        return request(rundir / f"wg-{k}-ctl.sock", HealthRequest(), timeout=5.0, context=ctx).counters

    deadline = time.monotonic() + 10
    while not (counters(0).get("netmap_updates") and counters(1).get("netmap_updates")):
        assert time.monotonic() < deadline, "workers never applied the netmap"
        time.sleep(0.05)
    yield dict(socks=socks, push=push, peer=peer, our_pub=keys.node.public, peer_pub=peer_pub, counters=counters,
               rundir=rundir)
    for p in procs:
        p.terminate()
        assert p.wait(timeout=10) == 0
    ctx.destroy(linger=0)


def _recv(sock, codec, timeout=5.0):
    assert sock.poll(int(timeout * 1000)), "nothing arrived"
    return codec.decode(sock.recv())


def _icmp(src: str, seq: int = 1) -> bytes:
    return build_echo_request(src, OURS, 7, seq, b"sunbeam")


def test_initiation_reaches_owner_and_data_flows(harness):
    h = harness
    c0, c1 = h["counters"](0), h["counters"](1)
    assert (c0["peers"], c1["peers"]) == (0, 1)  # worker 1 alone owns the peer
    init = h["peer"].encapsulate(h["our_pub"], [_icmp(PEER_IP)], time.time())
    assert len(init) == 1 and init[0][0] == 1
    # the udp service may hand a type-1 from an unknown address to any worker: give it to 0
    h["push"][0].send(WG_IN_CODEC.encode(UdpReceived(src=SRC, packets=init)))
    udp = _recv(h["socks"]["udp-in"], UDP_IN_CODEC)
    assert udp.dsts == [SRC] and udp.packets[0][0] == 2  # the owner answered, to where it came from
    assert not h["socks"]["derp-in"].poll(300)  # and only there: two copies can fork the session
    assert h["counters"](0)["initiation_forwarded"] == 1
    assert worker_of_index(receiver_index(udp.packets[0]) or 0) == 0  # the response names the peer's index
    # the peer completes the handshake and sends its staged echo request
    out = []
    for m in udp.packets:
        out += h["peer"].decapsulate(m, time.time()).to_peer
    assert out and all(m[0] == 4 for m in out)
    assert worker_of_index(receiver_index(out[0])) == 1  # our index names worker 1
    h["push"][1].send(WG_IN_CODEC.encode(DerpReceived(peer_key=h["peer_pub"], region=999, packets=out)))
    got = _recv(h["socks"]["proxy-in"], PROXY_IN_CODEC)
    assert got.peer_key == h["peer_pub"] and got.packets == [_icmp(PEER_IP)]
    assert got.relayed  # it came over DERP: the TCP engine keeps its window small
    # a packet whose source is outside the peer's AllowedIPs is dropped and counted
    bad = h["peer"].encapsulate(h["our_pub"], [_icmp(OUTSIDER)], time.time())
    h["push"][1].send(WG_IN_CODEC.encode(UdpReceived(src=SRC, packets=bad)))
    deadline = time.monotonic() + 5
    while h["counters"](1).get("wg_allowed_ips_drop", 0) < 1:
        assert time.monotonic() < deadline, h["counters"](1)
        time.sleep(0.05)
    assert not h["socks"]["proxy-in"].poll(200)
    good = h["peer"].encapsulate(h["our_pub"], [_icmp(PEER_IP, 2)], time.time())
    h["push"][1].send(WG_IN_CODEC.encode(UdpReceived(src=SRC, packets=good)))
    got = _recv(h["socks"]["proxy-in"], PROXY_IN_CODEC)
    assert got.packets == [_icmp(PEER_IP, 2)] and not got.relayed  # over UDP
    # a duplicate (as 'send on every path' produces) is dropped by the replay window
    h["push"][1].send(WG_IN_CODEC.encode(UdpReceived(src=SRC, packets=out)))
    deadline = time.monotonic() + 5
    while h["counters"](1).get("wg_replay", 0) < 1:
        assert time.monotonic() < deadline, h["counters"](1)
        time.sleep(0.05)
    assert not h["socks"]["proxy-in"].poll(200)
    # a GRO burst (equal-size messages back to back) after a lone message, in one batch
    pings = [_icmp(PEER_IP, seq) for seq in range(12)]
    lone, *burst = h["peer"].encapsulate(h["our_pub"], pings, time.time())
    assert len({len(m) for m in burst}) == 1
    h["push"][1].send(WG_IN_CODEC.encode(UdpReceived(src=SRC, packets=[lone, b"".join(burst)],
                                                     segments=[0, len(burst[0])])))
    got = []
    while len(got) < len(pings):
        got += _recv(h["socks"]["proxy-in"], PROXY_IN_CODEC).packets
    assert got == pings
    # a batch whose segment sizes do not match its entries is refused whole, and counted
    h["push"][1].send(WG_IN_CODEC.encode(UdpReceived(src=SRC, packets=[lone], segments=[0, 5])))
    deadline = time.monotonic() + 5
    while h["counters"](1).get("inbox_bad_message", 0) < 1:
        assert time.monotonic() < deadline, h["counters"](1)
        time.sleep(0.05)


def test_handshakes_take_one_path_data_follows_the_disco_path(harness):
    """A peer sent two copies of one handshake message may answer both and keep a session we
    never installed; so an initiation goes one way (DERP, or the peer's fresh UDP source),
    a response back the way its initiation came. Data goes over DERP until the udp
    service's disco trusts a direct address (PeerPath), then there only, until it lapses."""
    h = harness
    # our initiation, to a peer never heard from over UDP: DERP alone
    h["push"][1].send(WG_IN_CODEC.encode(ToPeer(peer_key=h["peer_pub"], packets=[_icmp(OURS)])))
    derp = _recv(h["socks"]["derp-in"], DERP_IN_CODEC)
    assert derp.region == 999 and [m[0] for m in derp.packets] == [1]
    assert not h["socks"]["udp-in"].poll(300)
    # the peer answers over UDP; our staged packet goes over DERP (no trusted direct path),
    # and the udp service is asked to find one
    resp = h["peer"].decapsulate(derp.packets[0], time.time()).to_peer
    assert [m[0] for m in resp] == [2]
    h["push"][1].send(WG_IN_CODEC.encode(UdpReceived(src=SRC, packets=resp)))
    derp = _recv(h["socks"]["derp-in"], DERP_IN_CODEC)
    assert {m[0] for m in derp.packets} == {4}
    assert _recv(h["socks"]["udp-in"], UDP_IN_CODEC) == PathWanted(peer_key=h["peer_pub"])
    # disco trusts SRC: data goes there only
    h["push"][1].send(WG_IN_CODEC.encode(PeerPath(peer_key=h["peer_pub"], addr=SRC, until=time.time() + 30)))
    h["push"][1].send(WG_IN_CODEC.encode(ToPeer(peer_key=h["peer_pub"], packets=[_icmp(OURS)])))
    udp = _recv(h["socks"]["udp-in"], UDP_IN_CODEC)
    assert udp.dsts == [SRC] and {m[0] for m in udp.packets} == {4}
    assert not h["socks"]["derp-in"].poll(300)
    # trust lapses (or the udp service says DERP only): back to DERP
    h["push"][1].send(WG_IN_CODEC.encode(PeerPath(peer_key=h["peer_pub"], addr="", until=0.0)))
    h["push"][1].send(WG_IN_CODEC.encode(ToPeer(peer_key=h["peer_pub"], packets=[_icmp(OURS)])))
    assert {m[0] for m in _recv(h["socks"]["derp-in"], DERP_IN_CODEC).packets} == {4}
    # an initiation arriving over DERP is answered over DERP only
    h["peer"].remove_peer(h["our_pub"])
    h["peer"].set_peer(h["our_pub"], [f"{OURS}/32"])
    init = h["peer"].encapsulate(h["our_pub"], [_icmp(PEER_IP)], time.time())
    h["push"][1].send(WG_IN_CODEC.encode(DerpReceived(peer_key=h["peer_pub"], region=999, packets=init)))
    derp = _recv(h["socks"]["derp-in"], DERP_IN_CODEC)
    assert [m[0] for m in derp.packets] == [2]
    assert not h["socks"]["udp-in"].poll(300)
    out = h["peer"].decapsulate(derp.packets[0], time.time()).to_peer
    h["push"][1].send(WG_IN_CODEC.encode(UdpReceived(src=SRC, packets=out)))
    assert _recv(h["socks"]["proxy-in"], PROXY_IN_CODEC).packets == [_icmp(PEER_IP)]


def test_initiation_goes_to_a_fresh_udp_source_only():
    route = PeerRoute(endpoints=("10.0.0.1:41641",), home_derp=999)
    assert route.handshake_udp(100.0) is None  # never heard over UDP: DERP
    route.heard_over_udp(SRC, 100.0)
    assert route.handshake_udp(100.0 + UDP_FRESH - 1) == SRC
    assert route.handshake_udp(100.0 + UDP_FRESH) is None  # gone quiet: back to DERP
    route.direct, route.direct_until = "10.0.0.1:41641", 200.0  # disco trusts an address
    assert route.handshake_udp(150.0) == "10.0.0.1:41641" and route.handshake_udp(200.0) is None


def _peers(h, k):
    reply = request(h["rundir"] / f"wg-{k}-ctl.sock", PeersRequest(), timeout=5.0)
    assert isinstance(reply, PeersReply) and reply.service == f"wg-{k}"
    return reply.peers


def test_peers_request_reports_a_direct_path(harness):
    h = harness
    key = "nodekey:" + h["peer_pub"].hex()
    [before] = _peers(h, 1)
    assert (before.key, before.worker, before.path, before.endpoint, before.last_handshake) == (key, 1, "", "", 0.0)
    assert _peers(h, 0) == []  # worker 0 owns no peer
    # the peer handshakes with us over UDP from SRC, then sends data; we send data back
    init = h["peer"].encapsulate(h["our_pub"], [_icmp(PEER_IP)], time.time())
    h["push"][1].send(WG_IN_CODEC.encode(UdpReceived(src=SRC, packets=init)))
    resp = _recv(h["socks"]["udp-in"], UDP_IN_CODEC).packets
    out = []
    for m in resp:
        out += h["peer"].decapsulate(m, time.time()).to_peer
    h["push"][1].send(WG_IN_CODEC.encode(UdpReceived(src=SRC, packets=out)))
    assert _recv(h["socks"]["proxy-in"], PROXY_IN_CODEC).packets == [_icmp(PEER_IP)]
    [stats] = _peers(h, 1)
    assert (stats.path, stats.derp_region) == ("derp", 999)  # no disco-trusted address yet
    h["push"][1].send(WG_IN_CODEC.encode(PeerPath(peer_key=h["peer_pub"], addr=SRC, until=time.time() + 30)))
    h["push"][1].send(WG_IN_CODEC.encode(ToPeer(peer_key=h["peer_pub"], packets=[_icmp(OURS)])))
    assert _recv(h["socks"]["udp-in"], UDP_IN_CODEC).dsts == [SRC]
    [stats] = _peers(h, 1)
    assert (stats.key, stats.worker, stats.path, stats.endpoint, stats.derp_region) == (key, 1, "direct", SRC, 0)
    assert time.time() - 10 < stats.last_handshake <= time.time()
    assert stats.rx_bytes >= len(init[0]) + sum(map(len, out)) and stats.tx_bytes > 0


def test_peers_request_reports_a_derp_path(harness):
    h = harness
    # the whole exchange over DERP: our initiation, the peer's response, data both ways
    h["push"][1].send(WG_IN_CODEC.encode(ToPeer(peer_key=h["peer_pub"], packets=[_icmp(OURS)])))
    init = _recv(h["socks"]["derp-in"], DERP_IN_CODEC).packets
    resp = h["peer"].decapsulate(init[0], time.time()).to_peer
    h["push"][1].send(WG_IN_CODEC.encode(DerpReceived(peer_key=h["peer_pub"], region=999, packets=resp)))
    data = _recv(h["socks"]["derp-in"], DERP_IN_CODEC).packets  # our staged echo request
    got = []
    for m in data:
        got += h["peer"].decapsulate(m, time.time()).to_tunnel
    assert got == [_icmp(OURS)]
    reply = h["peer"].encapsulate(h["our_pub"], [_icmp(PEER_IP)], time.time())
    h["push"][1].send(WG_IN_CODEC.encode(DerpReceived(peer_key=h["peer_pub"], region=999, packets=reply)))
    assert _recv(h["socks"]["proxy-in"], PROXY_IN_CODEC).packets == [_icmp(PEER_IP)]
    [stats] = _peers(h, 1)
    assert (stats.path, stats.endpoint, stats.derp_region) == ("derp", "", 999)
    assert time.time() - 10 < stats.last_handshake <= time.time()
    assert stats.rx_bytes == len(resp[0]) + len(reply[0]) and stats.tx_bytes == sum(map(len, data))
    # a UDP message that fails authentication does not make the path direct
    h["push"][1].send(WG_IN_CODEC.encode(UdpReceived(src=SRC, packets=reply)))  # a replay
    deadline = time.monotonic() + 5
    while h["counters"](1).get("wg_replay", 0) < 1:
        assert time.monotonic() < deadline, h["counters"](1)
        time.sleep(0.05)
    [stats] = _peers(h, 1)
    assert (stats.path, stats.endpoint, stats.derp_region) == ("derp", "", 999)


def test_runs_of_packets_go_out_as_the_packets_in_them(harness):
    """A `ToPeer` entry with a segment size (the TCP engine's bulk run) is its packets:
    staged while there is no session, encrypted one by one once there is; an entry
    without one is a packet, and a batch whose segments do not match is dropped, counted."""
    h = harness
    run = [_icmp(OURS, seq) for seq in range(3)]
    size = len(run[0])
    tail = build_echo_request(OURS, OURS, 7, 9, b"sun")  # a shorter last packet of a run
    h["push"][1].send(WG_IN_CODEC.encode(ToPeer(peer_key=h["peer_pub"], packets=[b"".join(run) + tail, run[0]],
                                                segments=[size, 0])))
    init = _recv(h["socks"]["derp-in"], DERP_IN_CODEC).packets
    resp = h["peer"].decapsulate(init[0], time.time()).to_peer
    h["push"][1].send(WG_IN_CODEC.encode(DerpReceived(peer_key=h["peer_pub"], region=999, packets=resp)))
    staged = _recv(h["socks"]["derp-in"], DERP_IN_CODEC).packets
    h["push"][1].send(WG_IN_CODEC.encode(ToPeer(peer_key=h["peer_pub"], packets=[run[2], b"".join(run)],
                                                segments=[0, size])))
    live = _recv(h["socks"]["derp-in"], DERP_IN_CODEC).packets
    got = []
    for m in staged + live:
        got += h["peer"].decapsulate(m, time.time()).to_tunnel
    assert got == run + [tail, run[0], run[2]] + run
    h["push"][1].send(WG_IN_CODEC.encode(ToPeer(peer_key=h["peer_pub"], packets=run, segments=[size])))
    deadline = time.monotonic() + 5
    while h["counters"](1).get("inbox_bad_message", 0) < 1:
        assert time.monotonic() < deadline, h["counters"](1)
        time.sleep(0.05)
    assert not h["socks"]["derp-in"].poll(300)


def test_peer_route_path():
    route = PeerRoute(endpoints=("10.0.0.1:41641",), home_derp=7)
    assert route.path(100.0) == ("", "", 0)  # nothing authenticated received yet
    route.heard_over_derp(999, 100.0)
    assert route.path(100.0) == ("derp", "", 999)
    route.heard_over_udp(SRC, 101.0)
    assert route.path(101.0) == ("derp", "", 999)  # heard over UDP, but disco trusts nothing
    route.direct, route.direct_until = SRC, 110.0
    assert route.path(109.0) == ("direct", SRC, 0)
    assert route.path(110.0) == ("derp", "", 999)  # trust lapsed: DERP
    assert PeerRoute(home_derp=7, last_derp_at=1.0).path(2.0) == ("derp", "", 7)  # region unknown: home
