"""DERP against Headscale's real embedded DERP server (region 999, plain HTTP, in the
reference namespace, ``verify_clients: true``) and a real tailscaled that may only use DERP.

1. Two `DerpClientCore`s over real TCP, each logged in with the node key of a node our
   control service registered, relay packets to each other through the real server; a
   node key Headscale does not know is turned away (so the login really is checked).
2. sunbeam-derp itself: with sunbeam-control running it reports home region 999 connected
   on derp-pub, and a disco ping sent over DERP by a real tailscaled (``tailscale ping``)
   arrives on udp-in as `DiscoReceived` from that peer's node key, via region 999.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import time

import pytest
import zmq

from sunbeam.refnet import netns
from sunbeam.shared.keys import from_text
from sunbeam.shared.messages.dataplane import DERP_PUB_CODEC, UDP_IN_CODEC, DiscoReceived
from sunbeam.shared.proto.derp import DISCO_MAGIC, Closed, Connected, DerpClientCore, Pong, Received
from sunbeam.shared.runtime.rundir import endpoint, ensure_rundir

from .sunbeam_node import SunbeamNode

pytestmark = pytest.mark.realnet

DERP_HOST, DERP_PORT = "127.0.0.1", 8080


def node_private(node: SunbeamNode) -> bytes:
    return from_text("privkey:", json.loads((node.statedir / "keys.json").read_text())["node"])


class Client:
    """A `DerpClientCore` on a blocking TCP socket opened inside the namespace."""

    def __init__(self, refnet: dict, private: bytes) -> None:
        with netns.entered(refnet["netns"]):
            self.sock = socket.create_connection((DERP_HOST, DERP_PORT), timeout=5)
        self.core = DerpClientCore(private, nonce=os.urandom(24))
        self.sock.sendall(self.core.upgrade_request(DERP_HOST))
        self.events: list = []

    def pump(self, timeout: float = 0.05) -> None:
        out = self.core.data_to_send()
        if out:
            self.sock.sendall(out)
        if select.select([self.sock], [], [], timeout)[0]:
            self.events += self.core.receive_data(self.sock.recv(65536))
        out = self.core.data_to_send()
        if out:
            self.sock.sendall(out)

    def close(self) -> None:
        self.sock.close()


def pump_until(clients: list[Client], predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, [c.events for c in clients]
        for c in clients:
            c.pump()


@pytest.fixture(scope="module")
def registered(refnet_derp):
    nodes = [SunbeamNode(refnet_derp, hostname=f"sb-derp-{x}") for x in "ab"]
    for n in nodes:
        n.start("control")
    for n in nodes:
        n.wait_state("Running", timeout=30)
    yield nodes
    for n in nodes:
        n.close()


def test_two_of_our_nodes_relay_through_the_real_derp(refnet_derp, registered):
    a, b = (Client(refnet_derp, node_private(n)) for n in registered)
    try:
        clients = [a, b]
        pump_until(clients, lambda: any(isinstance(e, Connected) for e in a.events)
                   and any(isinstance(e, Connected) for e in b.events))
        assert not any(isinstance(e, Closed) for e in a.events + b.events)
        a.core.note_preferred(True)
        packet = b"\x04" + os.urandom(200)
        a.core.send_packet(b.core.public_key, packet)
        b.core.send_packet(a.core.public_key, DISCO_MAGIC + b"hello a")
        a.core.ping(b"pingpong")
        pump_until(clients, lambda: Received(a.core.public_key, packet) in b.events
                   and Received(b.core.public_key, DISCO_MAGIC + b"hello a") in a.events
                   and Pong(b"pingpong") in a.events)
    finally:
        a.close()
        b.close()


def test_unregistered_node_key_is_turned_away(refnet_derp, registered):
    stranger = Client(refnet_derp, os.urandom(32))
    try:
        pump_until([stranger], lambda: any(isinstance(e, Closed) for e in stranger.events))
        assert not any(isinstance(e, Connected) for e in stranger.events)
    finally:
        stranger.close()


@pytest.fixture(scope="module")
def service_node(refnet_derp):
    n = SunbeamNode(refnet_derp, hostname="sb-derp-svc")
    ensure_rundir(n.rundir)
    ctx = zmq.Context()
    udp_in = ctx.socket(zmq.PULL)  # stands in for sunbeam-udp
    udp_in.bind(endpoint(n.rundir, "udp-in"))
    status = ctx.socket(zmq.SUB)
    status.setsockopt(zmq.SUBSCRIBE, b"")
    status.connect(endpoint(n.rundir, "derp-pub"))
    n.start("control")
    n.start("derp")
    n.zmq = {"udp_in": udp_in, "status": status}
    yield n
    n.close()
    ctx.destroy(linger=0)


def _ts(peer: dict, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(peer["tailscale_cli"] + list(args), check=False, capture_output=True, text=True, timeout=timeout)


def test_service_connects_home_region_999(service_node):
    service_node.wait_state("Running", timeout=30)
    status = service_node.zmq["status"]
    deadline = time.monotonic() + 20
    last = None
    while time.monotonic() < deadline:
        if status.poll(500):
            last = DERP_PUB_CODEC.decode(status.recv())
            if last.state == "connected":
                break
    assert last is not None and (last.home_region, last.connected, last.state) == (999, (999,), "connected"), \
        f"{last}\n{service_node.log('derp')[-3000:]}"
    assert service_node.control()["home_derp"] == 999


def test_real_peer_disco_ping_arrives_on_udp_in(refnet_derp, service_node):
    service_node.wait_state("Running", timeout=30)
    ours = [a.split("/")[0] for a in service_node.control()["addresses"]]
    peer = refnet_derp["peers"][0]
    deadline = time.monotonic() + 20
    while True:  # the real peer must know us (and our home region) first
        listed = json.loads(_ts(peer, "status", "--json").stdout).get("Peer") or {}
        mine = [p for p in listed.values() if p.get("HostName") == "sb-derp-svc"]
        if mine and mine[0].get("Relay") == "refnet" or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert mine, listed
    self_status = json.loads(_ts(peer, "status", "--json").stdout)["Self"]
    peer_key = from_text("nodekey:", self_status["PublicKey"])
    watch = service_node.watch()
    try:
        netmap = watch.wait_for(lambda nm: any(p.hostname == peer["name"] for p in nm.peers), 10)
    finally:
        watch.close()
    peer_disco = from_text("discokey:", next(p.disco_key for p in netmap.peers if p.hostname == peer["name"]))

    ping = subprocess.Popen(peer["tailscale_cli"] + ["ping", "--until-direct=false", "-c", "5", "--timeout", "2s",
                                                     ours[0]], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        udp_in = service_node.zmq["udp_in"]
        assert udp_in.poll(20_000), f"no disco message reached udp-in\n{service_node.log('derp')[-3000:]}"
        msg = UDP_IN_CODEC.decode(udp_in.recv())
    finally:
        ping.kill()
        ping.wait()
    assert isinstance(msg, DiscoReceived)
    assert msg.peer_key == peer_key and msg.region == 999
    pkt = msg.packets[0]
    assert pkt[:6] == DISCO_MAGIC and pkt[6:38] == peer_disco  # sealed by the peer's disco key
    assert service_node.counters("derp").get("derp_packets_received", 0) >= 1
