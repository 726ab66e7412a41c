"""NetmapBuilder delta semantics (ts:control/controlclient/map.go), the PUB messages, and
builder + follower back to back."""

import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sunbeam.shared.messages.codec import BadMessage
from sunbeam.shared.messages.netmap import (
    CONTROL_EVENT_CODEC,
    ControlStatus,
    NetmapDelta,
    NetmapSnapshot,
)
from sunbeam.shared.netmap import Netmap, NetmapBuilder, NetmapChange, apply_change
from sunbeam.shared.netmap.follow import NetmapFollower
from sunbeam.shared.proto import tailcfg as t


def nk(i):
    return f"nodekey:{i:064x}"


def dk(i):
    return f"discokey:{i:064x}"


def node(i, **kw):
    fields = dict(id=i, stable_id=str(i), name=f"n{i}.headscale.net.", user=1, key=nk(i),
                  disco_key=dk(i), addresses=[f"100.64.0.{i}/32", f"fd7a:115c:a1e0::{i:x}/128"],
                  endpoints=[f"192.0.2.{i}:41641"], home_derp=999, online=True)
    fields.update(kw)
    return t.Node(**fields)


ALLOW_ALL = t.FilterRule(src_ips=["*"], dst_ports=[t.NetPortRange(ip="*", ports=t.PortRange(first=0, last=65535))])
RULE_A = t.FilterRule(src_ips=["100.64.0.2"], dst_ports=[t.NetPortRange(ip="*", ports=t.PortRange(first=22, last=22))])
REGION = t.DERPRegion(region_id=999, region_code="headscale", nodes=[
    t.DERPNode(name="999", region_id=999, host_name="127.0.0.1", stun_port=3478, derp_port=8080)])


def full_map(*peers):
    return t.MapResponse(
        node=node(1), peers=list(peers), derp_map=t.DERPMap(regions={999: REGION}),
        packet_filters={"base": [ALLOW_ALL]}, domain="headscale.net",
        user_profiles=[t.UserProfile(id=1, login_name="odin")],
        dns_config=t.DNSConfig(resolvers=[t.Resolver(addr="1.1.1.1")]),
        control_time="2026-05-07T08:09:10Z")


@pytest.fixture
def builder():
    b = NetmapBuilder()
    assert b.apply(full_map(node(2), node(3))) is not None
    return b


def test_full_map(builder):
    nm = builder.snapshot()
    assert nm.self_node.id == 1 and nm.self_node.key == nk(1)
    assert [p.id for p in nm.peers] == [2, 3]
    assert nm.peers[0].allowed_ips == ("100.64.0.2/32", "fd7a:115c:a1e0::2/128")  # nil = Addresses
    assert nm.derp_map.regions[999] == REGION and nm.packet_filter == (ALLOW_ALL,)
    assert nm.domain == "headscale.net" and nm.user_profiles[0].login_name == "odin"
    assert builder.control_time == "2026-05-07T08:09:10Z"


def test_keepalive_ignores_everything_else(builder):
    before = builder.snapshot()
    assert builder.apply(t.MapResponse(keep_alive=True, peers_removed=[2], domain="x")) is None
    assert builder.snapshot() is before and builder.counters["keepalives"] == 1


def test_peers_is_a_full_replace_and_ignores_other_peer_deltas(builder):
    change = builder.apply(t.MapResponse(peers=[node(3), node(4)], peers_removed=[3],
                                         peers_changed_patch=[t.PeerChange(node_id=4, online=False)]))
    assert change.removed == (2,) and [p.id for p in change.upserted] == [4]
    assert [p.id for p in builder.snapshot().peers] == [3, 4]
    assert builder.snapshot().peer(4).online is True


def test_empty_peers_is_not_a_full_replace(builder):
    assert builder.apply(t.MapResponse(peers=[])) is None
    assert len(builder.snapshot().peers) == 2


def test_peers_changed_upsert_and_removed(builder):
    change = builder.apply(t.MapResponse(peers_changed=[node(3, endpoints=[]), node(5)],
                                         peers_removed=[2, 77]))
    assert change.removed == (2,) and [p.id for p in change.upserted] == [3, 5]
    assert builder.snapshot().peer(3).endpoints == ()
    assert builder.counters["remove_unknown_peer"] == 1
    assert builder.apply(t.MapResponse(peers_removed=[77])) is None  # unknown only: no change
    assert builder.apply(t.MapResponse(peers_changed=[node(3, endpoints=[])])) is None  # same


def test_patch_changes_only_the_fields_present(builder):
    old = builder.snapshot().peer(2)
    change = builder.apply(t.MapResponse(peers_changed_patch=[
        t.PeerChange(node_id=2, derp_region=7, endpoints=["[2001:db8::1]:41641"]),
        t.PeerChange(node_id=3, online=False, last_seen="2026-05-07T08:00:00Z",
                     key_expiry=t.ZERO_TIME, disco_key=dk(33), key=nk(33), cap=131,
                     cap_map={"x": [1, {"a": "b"}], "y": None}),
        t.PeerChange(node_id=99, online=True),
    ]))
    p2, p3 = change.upserted
    assert p2 == msgspec.structs.replace(old, home_derp=7, endpoints=("[2001:db8::1]:41641",))
    assert (p3.online, p3.last_seen, p3.key_expiry) == (False, "2026-05-07T08:00:00Z", None)
    assert (p3.key, p3.disco_key, p3.cap) == (nk(33), dk(33), 131)
    assert p3.cap_map == {"x": ("1", '{"a":"b"}'), "y": ()}
    assert p3.addresses == ("100.64.0.3/32", "fd7a:115c:a1e0::3/128")
    assert builder.counters["patch_unknown_peer"] == 1


def test_patch_empty_endpoints_clears_them(builder):
    builder.apply(t.MapResponse(peers_changed_patch=[t.PeerChange(node_id=2, endpoints=[])]))
    assert builder.snapshot().peer(2).endpoints == ()


def test_online_and_seen_change(builder):
    change = builder.apply(t.MapResponse(online_change={2: False, 9: True}, peer_seen_change={3: True}),
                           now=1778141350.5)
    assert builder.snapshot().peer(2).online is False
    assert builder.snapshot().peer(3).last_seen == "2026-05-07T08:09:10.500000Z"
    assert len(change.upserted) == 2 and builder.counters["online_unknown_peer"] == 1
    builder.apply(t.MapResponse(peer_seen_change={3: False}))
    assert builder.snapshot().peer(3).last_seen is None


def test_legacy_derp_and_capabilities():
    b = NetmapBuilder()
    b.apply(t.MapResponse(node=node(1, capabilities=["https://tailscale.com/cap/is-admin"],
                                    cap_map={"default-auto-update": [False]}),
                          peers=[node(2, home_derp=0, legacy_derp="127.3.3.40:12"),
                                 node(3, home_derp=0, legacy_derp="10.0.0.1:12"),
                                 node(4, home_derp=5, legacy_derp="127.3.3.40:12")]))
    nm = b.snapshot()
    assert [p.home_derp for p in nm.peers] == [12, 0, 5]
    assert nm.self_node.cap_map == {"default-auto-update": ("false",),
                                    "https://tailscale.com/cap/is-admin": ()}


@pytest.mark.parametrize(("bad", "reason"), [
    (dict(key="nodekey:1234"), "bad_key"), (dict(key=""), "bad_key"),
    (dict(key=nk(0)), "zero_key"), (dict(disco_key="discokey:zz"), "bad_disco_key"),
    (dict(addresses=["100.64.0.9"]), "bad_address"), (dict(allowed_ips=["nope/8"]), "bad_address"),
    (dict(endpoints=["1.2.3.4"]), "bad_endpoint"), (dict(endpoints=["1.2.3.4:70000"]), "bad_endpoint"),
    (dict(endpoints=["::1:5"]), "bad_endpoint"), (dict(endpoints=["[1.2.3.4]:5"]), "bad_endpoint"),
])
def test_malformed_peer_is_dropped_and_counted(builder, bad, reason):
    change = builder.apply(t.MapResponse(peers_changed=[node(2, **bad), node(6)]))
    assert change.removed == (2,) and [p.id for p in change.upserted] == [6]
    assert builder.counters[f"drop_{reason}"] == 1 and builder.drops == [(2, reason)]
    assert builder.snapshot().peer(2) is None


def test_malformed_patch_drops_the_peer(builder):
    change = builder.apply(t.MapResponse(peers_changed_patch=[t.PeerChange(node_id=3, key="x")]))
    assert change.removed == (3,) and builder.counters["drop_bad_key"] == 1


def test_zero_or_missing_disco_key_is_none(builder):
    builder.apply(t.MapResponse(peers_changed=[node(2, disco_key=f"discokey:{0:064x}"),
                                               node(3, disco_key=None)]))
    assert [p.disco_key for p in builder.snapshot().peers] == [None, None]


def test_upper_case_hex_is_normalised(builder):
    builder.apply(t.MapResponse(peers_changed=[node(2, key="nodekey:" + "AB" * 32)]))
    assert builder.snapshot().peer(2).key == "nodekey:" + "ab" * 32


def test_packet_filter_nil_empty_and_named(builder):
    assert builder.apply(t.MapResponse(packet_filter=None)) is None
    change = builder.apply(t.MapResponse(packet_filter=[]))  # replaces the named filter "base"
    assert change.packet_filter == ()  # empty = deny all
    assert builder.apply(t.MapResponse(packet_filters={"base": []})) is None  # same thing
    change = builder.apply(t.MapResponse(packet_filters={"zz": [RULE_A], "aa": [ALLOW_ALL]}))
    assert change.packet_filter == (ALLOW_ALL, RULE_A)  # concatenated in key order
    change = builder.apply(t.MapResponse(packet_filter=[RULE_A], packet_filters={"*": None, "b": [ALLOW_ALL]}))
    assert change.packet_filter == (ALLOW_ALL,)  # "*" cleared "base" too
    assert builder.apply(t.MapResponse(packet_filters={"b": None})).packet_filter == ()
    assert builder.apply(t.MapResponse(packet_filters={"*": [RULE_A]})) is None  # never a name


def test_packet_filter_none_until_received():
    b = NetmapBuilder()
    b.apply(t.MapResponse(node=node(1)))
    assert b.snapshot().packet_filter is None
    assert b.apply(t.MapResponse(packet_filter=[])).packet_filter == ()


def test_cap_grants_are_not_in_the_netmap_filter():
    b = NetmapBuilder()
    rule = t.FilterRule(src_ips=["*"], cap_grant=[t.CapGrant(dsts=["100.64.0.1/32"],
                                                            cap_map={"x": [10**30]})])
    b.apply(t.MapResponse(packet_filter=[rule]))
    assert b.snapshot().packet_filter == (t.FilterRule(src_ips=["*"]),)


def test_nil_fields_unchanged_and_derp_merge(builder):
    assert builder.apply(t.MapResponse(node=None, derp_map=None, dns_config=None, domain="")) is None
    assert builder.apply(t.MapResponse(derp_map=t.DERPMap(home_params=t.DERPHomeParams(
        region_score={999: 1.5})))).derp_map.regions == {999: REGION}  # nil Regions = keep
    other = msgspec.structs.replace(REGION, region_id=7)
    change = builder.apply(t.MapResponse(derp_map=t.DERPMap(regions={7: other, 8: None})))
    assert change.derp_map.regions == {7: other} and builder.counters["derp_null_region"] == 1
    assert change.derp_map.home_params.region_score == {999: 1.5}  # nil HomeParams = keep
    change = builder.apply(t.MapResponse(dns_config=t.DNSConfig(domains=["x"]), domain="other"))
    assert change.dns == t.DNSConfig(domains=["x"]) and change.domain == "other"


def test_self_node_and_profiles(builder):
    change = builder.apply(t.MapResponse(node=node(1, home_derp=3), user_profiles=[
        t.UserProfile(id=1, login_name="odin"), t.UserProfile(id=2, login_name="thor")]))
    assert change.self_node.home_derp == 3 and change.upserted == ()
    assert [u.id for u in change.user_profiles] == [2]  # id 1 unchanged
    assert builder.apply(t.MapResponse(node=node(1, key="bad"))) is None
    assert builder.counters["self_bad_key"] == 1 and builder.snapshot().self_node.home_derp == 3


# --- PUB messages and the follower -----------------------------------------------------


def test_codec_round_trip(builder):
    change = builder.apply(t.MapResponse(peers_changed=[node(4)], peers_removed=[2], packet_filter=[]))
    events = [NetmapSnapshot(seq=1, netmap=builder.snapshot()), NetmapDelta.from_change(2, change),
              NetmapDelta(seq=3), ControlStatus(state="running", node_id=1, addresses=("100.64.0.1/32",),
                                                peers=2, home_derp=999, since=1.7e9)]
    for event in events:
        decoded = CONTROL_EVENT_CODEC.decode(CONTROL_EVENT_CODEC.encode(event))
        assert decoded == event and type(decoded) is type(event)
    assert events[1].to_change() == change


def test_follower_gap_needs_snapshot(builder):
    f = NetmapFollower()
    assert f.needs_snapshot and f.apply(NetmapDelta(seq=1)) is None
    assert f.apply(NetmapSnapshot(seq=5, netmap=builder.snapshot())) == builder.snapshot()
    assert not f.needs_snapshot
    nm = f.apply(NetmapDelta.from_change(6, builder.apply(t.MapResponse(peers_removed=[2]))))
    assert nm == builder.snapshot()
    change = builder.apply(t.MapResponse(peers_removed=[3]))
    assert f.apply(NetmapDelta.from_change(8, change)) is None  # 7 was lost
    assert f.needs_snapshot and f.gaps == 1 and f.netmap == nm  # stale but kept
    assert f.apply(NetmapDelta.from_change(9, change)) is None
    assert f.apply(ControlStatus(state="running")) is None and f.status.state == "running"
    assert f.apply(NetmapSnapshot(seq=9, netmap=builder.snapshot())) == builder.snapshot()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_events_raise_bad_message_only(data):
    try:
        CONTROL_EVENT_CODEC.decode(data)
    except BadMessage:
        pass


# --- builder + follower back to back (Hypothesis) -------------------------------------

ids = st.integers(min_value=1, max_value=6)
maybe = lambda s: st.none() | s  # noqa: E731
times = st.sampled_from(["2026-05-07T08:09:10Z", "2026-05-07T10:00:00.5+02:00", t.ZERO_TIME])
keys = st.integers(0, 3).map(nk) | st.sampled_from(["nodekey:bad", "nodekey:" + "A" * 64])
discos = maybe(st.integers(0, 3).map(dk) | st.just("discokey:x"))
prefixes = st.lists(st.sampled_from(["100.64.0.2/32", "fd7a:115c:a1e0::2/128", "10.0.0.0/8", "bad"]),
                    max_size=2)
endpoints = maybe(st.lists(st.sampled_from(["192.0.2.1:1", "[2001:db8::1]:2", "1.2.3.4"]), max_size=2))
cap_maps = maybe(st.dictionaries(st.sampled_from(["a", "b"]), maybe(st.lists(st.integers(), max_size=2)),
                                 max_size=2))
nodes = st.builds(t.Node, id=ids, key=keys, disco_key=discos, addresses=prefixes,
                  allowed_ips=maybe(prefixes), endpoints=endpoints, home_derp=st.integers(0, 2),
                  legacy_derp=maybe(st.just("127.3.3.40:9")), online=maybe(st.booleans()),
                  last_seen=maybe(times), key_expiry=maybe(times), cap_map=cap_maps)
patches = st.builds(t.PeerChange, node_id=ids, derp_region=st.integers(0, 2), endpoints=endpoints,
                    key=maybe(keys), disco_key=discos, online=maybe(st.booleans()),
                    last_seen=maybe(times), key_expiry=maybe(times), cap_map=cap_maps)
rules = st.lists(st.sampled_from([ALLOW_ALL, RULE_A]), max_size=2)
regions = st.dictionaries(st.sampled_from([1, 999]), maybe(st.just(REGION)), max_size=2)
responses = st.builds(
    t.MapResponse,
    keep_alive=st.sampled_from([False, False, False, True]),
    node=maybe(nodes), peers=maybe(st.lists(nodes, max_size=4)),
    peers_changed=maybe(st.lists(nodes, max_size=3)), peers_removed=maybe(st.lists(ids, max_size=2)),
    peers_changed_patch=maybe(st.lists(patches, max_size=3)),
    online_change=maybe(st.dictionaries(ids, st.booleans(), max_size=2)),
    peer_seen_change=maybe(st.dictionaries(ids, st.booleans(), max_size=2)),
    packet_filter=maybe(rules),
    packet_filters=maybe(st.dictionaries(st.sampled_from(["*", "base", "x"]), maybe(rules), max_size=2)),
    derp_map=maybe(st.builds(t.DERPMap, regions=maybe(regions))),
    dns_config=maybe(st.builds(t.DNSConfig, domains=maybe(st.lists(st.sampled_from(["a", "b"]), max_size=1)))),
    domain=st.sampled_from(["", "a", "b"]),
    user_profiles=maybe(st.lists(st.builds(t.UserProfile, id=ids, login_name=st.sampled_from(["x", "y"])),
                                 max_size=2)),
    control_time=maybe(times),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(responses, st.booleans()), max_size=12))
def test_follower_tracks_builder(steps):
    builder, follower, seq = NetmapBuilder(), NetmapFollower(), 0
    follower.apply(CONTROL_EVENT_CODEC.decode(CONTROL_EVENT_CODEC.encode(
        NetmapSnapshot(seq=seq, netmap=builder.snapshot()))))
    for resp, lose in steps:
        resp = t.decode_map_response(t.encode_json(resp))  # through the real JSON path
        before = builder.snapshot()
        change = builder.apply(resp, now=1.7e9)
        if change is None:
            assert builder.snapshot() == before
            continue
        assert apply_change(before, change) == builder.snapshot()
        assert change != NetmapChange()
        seq += 1
        if lose:
            continue  # PUB dropped it
        event = CONTROL_EVENT_CODEC.decode(CONTROL_EVENT_CODEC.encode(NetmapDelta.from_change(seq, change)))
        got = follower.apply(event)
        if follower.needs_snapshot:
            assert got is None
            snap = NetmapSnapshot(seq=seq, netmap=builder.snapshot())
            got = follower.apply(CONTROL_EVENT_CODEC.decode(CONTROL_EVENT_CODEC.encode(snap)))
        assert got == builder.snapshot() == follower.netmap
        nm = builder.snapshot()
        assert list(nm.peers) == sorted(nm.peers, key=lambda p: p.id)
        assert all(p.key.startswith("nodekey:") and len(p.key) == 72 for p in nm.peers)


def test_snapshot_of_a_real_headscale_map_encodes():
    from tests.proto.test_tailcfg import HEADSCALE_FULL_MAP

    b = NetmapBuilder()
    b.apply(t.decode_map_response(json.dumps(HEADSCALE_FULL_MAP).encode()))
    nm = b.snapshot()
    assert CONTROL_EVENT_CODEC.decode(CONTROL_EVENT_CODEC.encode(NetmapSnapshot(seq=0, netmap=nm))).netmap == nm
    assert nm.peers[0].allowed_ips == ("0.0.0.0/0", "100.64.0.2/32", "::/0")
    assert nm.peers[0].last_seen == "2026-05-07T10:09:17.4394975+02:00"
    assert list(nm.derp_map.regions) == [999] and nm.self_node.hostname == "sunbeam"
    assert isinstance(nm, Netmap)
