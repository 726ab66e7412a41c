"""shared/channels.py: every socket declared once, one binder each, every message type of
a channel's union encodes and decodes with its codec, and no socket name written anywhere
else in the code."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from sunbeam.shared import channels
from sunbeam.shared.messages.account import AccountReply, LoginRequest, LogoutRequest
from sunbeam.shared.messages.ctl import (
    Ack,
    ErrorReply,
    HealthRequest,
    PeersReply,
    PeersRequest,
    PeerStats,
    RoutingSettings,
    ServiceHealth,
    StatusReply,
    StatusRequest,
    StopRequest,
)
from sunbeam.shared.messages.dataplane import (
    DerpReceived,
    DerpSend,
    DerpStatus,
    DiscoReceived,
    FromPeer,
    PathWanted,
    PeerPath,
    ToPeer,
    UdpForwarded,
    UdpReceived,
    UdpSend,
    UdpStatus,
)
from sunbeam.shared.messages.netmap import ControlStatus, NetmapDelta, NetmapSnapshot
from sunbeam.shared.messages.ping import PingPeer, PingResult
from sunbeam.shared.netmap import Netmap

ROOT = Path(__file__).resolve().parents[2]
KEY = b"k" * 32
HEALTH = ServiceHealth(service="udp", pid=7, state="running", started_at=1.0, counters={"x": 1})

# one of each message type, per channel and direction
SAMPLES: dict[str, list[object]] = {
    "wg-{k}-in": [ToPeer(peer_key=KEY, packets=[b"ip"]), UdpReceived(src="10.0.0.1:41641", packets=[b"wg"]),
                  DerpReceived(peer_key=KEY, region=999, packets=[b"wg"]),
                  PeerPath(peer_key=KEY, addr="10.0.0.1:41641", until=12.5, port=41641)],
    "udp-in": [UdpSend(dsts=["10.0.0.1:41641"], packets=[b"wg"]), DiscoReceived(peer_key=KEY, region=1, packets=[b"d"]),
               PathWanted(peer_key=KEY), UdpForwarded(src="10.0.0.1:41641", packets=[b"disco"])],
    "derp-in": [DerpSend(peer_key=KEY, region=999, packets=[b"wg"])],
    "proxy-in": [FromPeer(peer_key=KEY, packets=[b"ip"])],
    "udp-pub": [UdpStatus(port=41641, endpoints=("10.0.0.1:41641",))],
    "derp-pub": [DerpStatus(home_region=999, connected=(999,), state="connected")],
    "control-pub": [ControlStatus(state="Running"), NetmapSnapshot(seq=1, netmap=Netmap()),
                    NetmapDelta(seq=2)],
    "control-account": [LoginRequest(), LogoutRequest()],
    "proxy-ping": [PingPeer(dst_ip="100.64.0.1", count=2)],
    "{service}-ctl": [StatusRequest(), HealthRequest(), PeersRequest(), StopRequest(reason="test")],
}
REPLIES: dict[str, list[object]] = {
    "control-account": [AccountReply(ok=True, state="Running")],
    "proxy-ping": [PingResult(dst_ip="100.64.0.1", rtts=[0.001, None])],
    "{service}-ctl": [Ack(), ErrorReply(message="no"), HEALTH, StatusReply(health=HEALTH),
                      StatusReply(health=HEALTH, routing=RoutingSettings(accept_routes=True, exit_node="gw")),
                      PeersReply(service="wg-0", peers=[PeerStats(key="nodekey:" + "ab" * 32)])],
}


def _members(codec: object) -> set[type]:
    return set(codec.members)  # type: ignore[attr-defined]


def test_each_socket_is_declared_once_with_one_binder():
    names = [c.name for c in channels.ALL]
    assert len(names) == len(set(names))
    for c in channels.ALL:
        assert c.binder and c.binder not in c.connectors, c
        assert c.connectors, c
        assert (c.reply_codec is not None) == c.pattern.startswith("req-"), c
        assert c.drop_counter or c.pattern.startswith("req-"), f"{c.name}: a sender's drops must be counted"


@pytest.mark.parametrize("channel", channels.ALL, ids=lambda c: c.name)
def test_every_message_of_a_channel_round_trips_with_its_codec(channel):
    for codec, samples in ((channel.codec, SAMPLES[channel.name]), (channel.reply_codec, REPLIES.get(channel.name))):
        if codec is None:
            continue
        assert {type(m) for m in samples} == _members(codec), f"{channel.name}: a sample for each message type"
        for msg in samples:
            assert codec.decode(codec.encode(msg)) == msg


def test_a_message_of_another_channel_is_refused_both_ways():
    """Codec.encode checks membership, so a shell cannot send on a channel what its
    receiver does not decode; and a frame of another channel does not decode."""
    with pytest.raises(TypeError):
        channels.PROXY_IN.codec.encode(UdpSend(dsts=[], packets=[]))
    from sunbeam.shared.messages.codec import BadMessage

    wrong = msgspec.msgpack.encode(UdpSend(dsts=[], packets=[]))
    with pytest.raises(BadMessage):
        channels.PROXY_IN.codec.decode(wrong)


def test_no_socket_name_is_written_outside_the_channels_module():
    literal = re.compile(r"""["'](wg-\{?\w*\}?-in|udp-in|derp-in|proxy-in|udp-pub|derp-pub|control-pub|"""
                         r"""control-account|proxy-ping|(control|derp|udp|proxy|wg-\d+)-ctl)(\.sock)?["']""")
    found = []
    for folder in ("services", "shared", "ctl"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name == "channels.py":
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if literal.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not found, "\n".join(found)


def test_status_reply_routing_is_optional_both_ways():
    """The proxy's routing settings: a plain map on the wire; a reply from an older service
    (no such field) decodes with routing None."""
    codec = channels.CTL.reply_codec
    assert codec is not None
    reply = StatusReply(health=HEALTH, routing=RoutingSettings(accept_routes=False, exit_node="100.64.0.3"))
    wire = msgspec.msgpack.decode(codec.encode(reply))
    assert wire["routing"] == {"accept_routes": False, "exit_node": "100.64.0.3"}
    del wire["routing"]
    assert codec.decode(msgspec.msgpack.encode(wire)) == StatusReply(health=HEALTH)
