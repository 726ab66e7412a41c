"""``sunbeam-ctl peers``: the ctl messages, the human formatting, the netmap/stats join."""

from __future__ import annotations

import json

import msgspec
import pytest
from sunbeam.ctl import cli
from sunbeam.ctl.peers import (
    find_peer,
    format_ago,
    format_bytes,
    format_path,
    format_table,
    peer_rows,
    via,
)
from sunbeam.shared.messages.codec import BadMessage
from sunbeam.shared.messages.ctl import (
    CTL_REPLY_CODEC,
    CTL_REQUEST_CODEC,
    PeersReply,
    PeersRequest,
    PeerStats,
)
from sunbeam.shared.netmap import Netmap, Peer

from .ctlenv import env_only_context

K1, K2, K3 = ("nodekey:" + c * 64 for c in "123")
NOW = 1_718_000_000.0


def test_peers_request_round_trip_and_wire_form():
    frame = CTL_REQUEST_CODEC.encode(PeersRequest())
    assert msgspec.msgpack.decode(frame) == {"t": "PeersRequest"}
    assert CTL_REQUEST_CODEC.decode(frame) == PeersRequest()


def test_peers_reply_round_trip_and_wire_form():
    stats = PeerStats(key=K1, worker=1, path="direct", endpoint="127.0.0.1:41641", derp_region=0,
                      last_handshake=NOW - 3.5, rx_bytes=1234, tx_bytes=5678)
    reply = PeersReply(service="wg-1", peers=[stats, PeerStats(key=K2, path="derp", derp_region=999)])
    frame = CTL_REPLY_CODEC.encode(reply)
    assert CTL_REPLY_CODEC.decode(frame) == reply
    raw = msgspec.msgpack.decode(frame)
    assert raw["t"] == "PeersReply" and raw["service"] == "wg-1"
    assert raw["peers"][0] == {"key": K1, "worker": 1, "path": "direct", "endpoint": "127.0.0.1:41641",
                               "derp_region": 0, "last_handshake": NOW - 3.5, "rx_bytes": 1234, "tx_bytes": 5678}


def test_peers_reply_from_an_older_or_newer_peer():
    # missing fields take their defaults; unknown fields are ignored (map encoding)
    frame = msgspec.msgpack.encode({"t": "PeersReply", "service": "wg-0",
                                    "peers": [{"key": K1, "future_field": [1, 2]}]})
    assert CTL_REPLY_CODEC.decode(frame) == PeersReply(service="wg-0", peers=[PeerStats(key=K1)])
    assert CTL_REPLY_CODEC.decode(msgspec.msgpack.encode({"t": "PeersReply", "service": "x"})).peers == []
    with pytest.raises(BadMessage):
        CTL_REPLY_CODEC.decode(msgspec.msgpack.encode({"t": "PeersReply", "service": "x", "peers": [{"worker": 1}]}))


@pytest.mark.parametrize(("then", "text"), [
    (0.0, "never"), (NOW, "0s ago"), (NOW - 12.7, "12s ago"), (NOW - 59.9, "59s ago"), (NOW - 60, "1m ago"),
    (NOW - 200, "3m ago"), (NOW - 3600, "1h ago"), (NOW - 5 * 3600 - 59, "5h ago"), (NOW - 2 * 86400 - 1, "2d ago"),
    (NOW + 30, "0s ago"),  # a clock step backwards
])
def test_format_ago(then, text):
    assert format_ago(then, NOW) == text


@pytest.mark.parametrize(("n", "text"), [
    (0, "0 B"), (880, "880 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1229, "1.2 KiB"),
    (int(1.2 * 1024 * 1024), "1.2 MiB"), (1024 ** 2 - 1, "1.0 MiB"), (1024 ** 2 - 60, "1023.9 KiB"), (3 * 1024 ** 3, "3.0 GiB"), (5 * 1024 ** 6, "5120.0 PiB"),
])
def test_format_bytes(n, text):
    assert format_bytes(n) == text


def test_format_path_and_via():
    assert format_path("direct", "127.0.0.1:41641", 0) == "direct 127.0.0.1:41641"
    assert format_path("derp", "", 999) == "DERP(999)"
    assert format_path("", "", 0) == "-"
    assert via("direct", "[fd00::1]:41641", 0) == "[fd00::1]:41641"
    assert via("derp", "", 999) == "DERP(999)"
    assert via("", "", 0) is None


def _netmap() -> Netmap:
    return Netmap(peers=(
        Peer(id=3, key=K3, name="zeta.tail.example.", hostname="zeta", addresses=("100.64.0.3/32",), online=False),
        Peer(id=1, key=K1, name="peer-1.tail.example.", hostname="peer-1",
             addresses=("100.64.0.1/32", "fd7a:115c:a1e0::1/128"), online=True),
        Peer(id=2, key=K2, name="alpha.tail.example.", hostname=None, addresses=("100.64.0.2/32",)),
    ))


def test_peer_rows_join_by_key_and_sort_by_name():
    stats = [
        PeerStats(key=K1, worker=1, path="derp", derp_region=999, last_handshake=NOW - 12, rx_bytes=1229,
                  tx_bytes=880),
        PeerStats(key=K3, worker=0, path="direct", endpoint="10.0.0.3:41641", last_handshake=NOW - 200,
                  rx_bytes=3 * 1024 ** 3, tx_bytes=0),
        PeerStats(key="nodekey:" + "9" * 64, worker=0, path="derp"),  # no longer in the netmap
    ]
    rows = peer_rows(_netmap(), stats, NOW)
    assert [r["name"] for r in rows] == ["alpha.tail.example.", "peer-1", "zeta"]
    alpha, peer1, zeta = rows
    assert peer1 == {"name": "peer-1", "id": 1, "key": K1, "addresses": ["100.64.0.1", "fd7a:115c:a1e0::1"],
                     "online": True, "expired": False, "key_expiry": None, "path": "derp", "endpoint": "",
                     "derp_region": 999, "worker": 1,
                     "last_handshake": NOW - 12, "handshake_age": 12.0, "rx_bytes": 1229, "tx_bytes": 880,
                     "subnet_routes": [], "offers_exit": False, "exit_node": False, "routes_in_use": []}
    assert alpha["worker"] is None and alpha["path"] == "" and alpha["handshake_age"] is None
    assert alpha["online"] is None and alpha["last_handshake"] == 0.0
    assert zeta["path"] == "direct" and zeta["endpoint"] == "10.0.0.3:41641" and zeta["online"] is False
    lines = format_table(rows, NOW).splitlines()
    assert lines[0].split() == ["NAME", "ADDRESSES", "ONLINE", "PATH", "LAST", "HANDSHAKE", "RX", "TX", "ROUTES"]
    assert lines[1].split() == ["alpha.tail.example.", "100.64.0.2", "?", "-", "never", "0", "B", "0", "B", "-"]
    assert lines[2].split() == ["peer-1", "100.64.0.1,", "fd7a:115c:a1e0::1", "yes", "DERP(999)", "12s", "ago",
                                "1.2", "KiB", "880", "B", "-"]
    assert lines[3].split() == ["zeta", "100.64.0.3", "no", "direct", "10.0.0.3:41641", "3m", "ago",
                                "3.0", "GiB", "0", "B", "-"]
    # columns line up: each header starts where its cells start
    col = lines[0].index("PATH")
    assert lines[2][col:].startswith("DERP(999)") and lines[3][col:].startswith("direct 10.0.0.3:41641")


def test_peer_rows_empty():
    assert peer_rows(Netmap(), [PeerStats(key=K1)], NOW) == []
    assert format_table([], NOW).split() == ["NAME", "ADDRESSES", "ONLINE", "PATH", "LAST", "HANDSHAKE", "RX", "TX",
                                             "ROUTES"]


def test_find_peer_by_hostname_dns_name_or_ip():
    nm = _netmap()
    assert find_peer(nm, "peer-1")[0].id == 1 and find_peer(nm, "peer-1")[1] == "100.64.0.1"
    assert find_peer(nm, "ALPHA.tail.example.")[0].id == 2
    assert find_peer(nm, "alpha")[1] == "100.64.0.2"
    assert find_peer(nm, "fd7a:115c:a1e0::1") == (nm.peers[1], "fd7a:115c:a1e0::1")
    assert find_peer(nm, "nobody") is None and find_peer(nm, "100.64.0.9") is None


# -- routes: what each peer offers, and whether the context uses it ------------------------------

def _routing_netmap() -> Netmap:
    def peer(i: int, name: str, *extra: str) -> Peer:
        own = (f"100.64.0.{i}/32",)
        return Peer(id=i, key=f"nodekey:{i:064x}", name=f"{name}.tail.example.", hostname=name, addresses=own,
                    allowed_ips=own + extra, online=True)

    return Netmap(peers=(peer(1, "plain"), peer(2, "router", "192.168.77.0/24"),
                         peer(3, "gateway", "10.9.0.0/16", "0.0.0.0/0", "::/0")))


@pytest.fixture()
def peers_running(monkeypatch, tmp_path):
    """`peers` against a live-looking rundir: the netmap above, no worker stats; config from env."""
    from sunbeam.ctl import peers
    from sunbeam.ctl.client import Found

    env_only_context(monkeypatch, tmp_path)
    monkeypatch.setattr(peers, "discover", lambda rundir: [Found("control", tmp_path / "control-ctl.sock", True)])
    monkeypatch.setattr(peers, "_read_netmap", lambda rundir: _routing_netmap())
    monkeypatch.setattr(peers, "collect_stats", lambda rundir: ([], []))
    return monkeypatch


def test_peers_shows_routes_not_used_by_default(peers_running, capsys):
    assert cli.main(["peers"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[-1] == "ROUTES"
    col = lines[0].index("ROUTES")
    assert [line[col:] for line in lines[1:]] == ["10.9.0.0/16 (not accepted); exit node", "-",
                                                 "192.168.77.0/24 (not accepted)"]


def test_peers_shows_accepted_routes_and_the_exit_node_in_use(peers_running, capsys):
    peers_running.setenv("SUNBEAM_ACCEPT_ROUTES", "true")
    peers_running.setenv("SUNBEAM_EXIT_NODE", "gateway")
    assert cli.main(["peers"]) == 0
    lines = capsys.readouterr().out.splitlines()
    col = lines[0].index("ROUTES")
    assert lines[1][col:] == "10.9.0.0/16 (accepted); exit node (in use)"
    assert lines[3][col:] == "192.168.77.0/24 (accepted)"
    assert cli.main(["peers", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["gateway"]["subnet_routes"] == ["10.9.0.0/16"] and rows["gateway"]["offers_exit"] is True
    assert rows["gateway"]["exit_node"] is True
    assert rows["gateway"]["routes_in_use"] == ["10.9.0.0/16", "0.0.0.0/0", "::/0"]
    assert rows["router"]["routes_in_use"] == ["192.168.77.0/24"] and rows["router"]["exit_node"] is False
    assert rows["plain"]["subnet_routes"] == [] and rows["plain"]["routes_in_use"] == []
    # the keys from before are all still there
    assert {"name", "id", "key", "addresses", "online", "path", "rx_bytes", "tx_bytes"} <= set(rows["plain"])
