"""Disco over UDP between sunbeam-udp and a real tailscaled, in the reference namespace.

Our endpoints are not advertised to control yet, so the real peer cannot find us on its
own. We make the first move, as magicsock does: a disco Ping sealed with our disco key
(the one control registered) is sent from sunbeam-udp's socket (UdpSend into udp-in) to
the peer's advertised endpoints. tailscaled opens it, answers with a Pong that sunbeam-udp
must open and parse, and records our address as a candidate endpoint; `tailscale ping`
then pings that address and gets sunbeam-udp's Pong back ("pong from ... via <our addr>").
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import time

import pytest
import zmq

from sunbeam.shared.keys import from_text, public_from_private
from sunbeam.shared.messages.dataplane import UDP_IN_CODEC, UdpSend
from sunbeam.shared.proto import disco
from sunbeam.shared.runtime.rundir import endpoint

from .sunbeam_node import SunbeamNode

pytestmark = pytest.mark.realnet


@pytest.fixture(scope="module")
def node(refnet):
    port = random.randint(20000, 30000)
    n = SunbeamNode(refnet, hostname="sunbeam-udp", extra_env={"SUNBEAM_UDP_PORT": str(port)})
    n.udp_port = port
    n.start("control")
    n.wait_state("Running", timeout=30)
    n.start("udp")
    yield n
    n.close()


def wait_counter(node: SunbeamNode, name: str, want: int, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    counters: dict = {}
    while time.monotonic() < deadline:
        counters = node.counters("udp")
        if counters.get(name, 0) >= want:
            return counters
        time.sleep(0.1)
    raise AssertionError(f"{name} < {want}: {counters}\n{node.log('udp')[-3000:]}")


def test_real_tailscaled_answers_our_ping_and_we_answer_its_pings(refnet, node):
    deadline = time.monotonic() + 15
    while "offload.gro" not in node.counters("udp"):  # set once the socket is open
        assert time.monotonic() < deadline, node.log("udp")[-3000:]
        time.sleep(0.1)
    listening = [json.loads(x) for x in node.log("udp").splitlines() if '"udp_listening"' in x]
    assert listening and listening[0]["port"] == node.udp_port

    watch = node.watch()
    try:
        netmap = watch.wait_for(lambda nm: any(p.hostname == "peer-1" and p.endpoints for p in nm.peers), 15)
    finally:
        watch.close()
    peer = next(p for p in netmap.peers if p.hostname == "peer-1")
    keys = json.loads((node.statedir / "keys.json").read_text())
    our_disco = from_text("privkey:", keys["disco"])
    our_node_pub = public_from_private(from_text("privkey:", keys["node"]))
    peer_disco = from_text("discokey:", peer.disco_key)
    txid = os.urandom(12)
    ping = disco.seal(our_disco, peer_disco, disco.Ping(txid, our_node_pub), os.urandom(24))

    ctx = zmq.Context()
    try:
        push = ctx.socket(zmq.PUSH)
        push.connect(endpoint(node.rundir, "udp-in"))
        push.send(UDP_IN_CODEC.encode(UdpSend(dsts=list(peer.endpoints)[:16], packets=[ping])))
        counters = wait_counter(node, "disco.pong_rx", 1)
    finally:
        ctx.destroy(linger=1000)
    assert not any(k.startswith("rx.drop.disco") for k in counters), counters

    # tailscaled now knows our address as a candidate endpoint and pings it.
    ours = node.control()["addresses"][0].split("/")[0]
    res = subprocess.run(refnet["peers"][0]["tailscale_cli"] + ["ping", "--c", "10", "--until-direct", ours],
                         capture_output=True, text=True, timeout=60)
    assert f":{node.udp_port}" in res.stdout and "pong from sunbeam-udp" in res.stdout, (res.stdout, res.stderr)
    counters = wait_counter(node, "disco.ping_rx", 1)
    assert counters["disco.pong_tx"] >= 1
