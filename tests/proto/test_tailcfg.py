"""tailcfg JSON types: Headscale-shaped fixtures, golden requests, upstream field names,
garbage -> BadControlMessage only."""

import json
import re
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sunbeam.shared.proto import tailcfg as t

NK = "nodekey:" + "6060a69a84c14c77debcc6dd1e99eb0355f9c8a236d83ff7ca203a5f05a57329"
NK2 = "nodekey:" + "8cfe26d687e4a33b3f9983dcb803c643159e7fadf61905b7f8910b70930fb75a"
DK = "discokey:" + "dd9d68050a0760526a7bf887f2d0874c9736fc831730f8ca32f7efc617109b7a"
DK2 = "discokey:" + "74a6ef64b2a93b9bae2d42a4952e24ce0be81f7a87cd91d05dcb0c7c94c58703"
MK = "mkey:" + "92d100abbab60eb9661702b555467aefca68af02a987d4f219dc61522afffa59"

# What Headscale 0.29 writes for a full map (hs:hscontrol/mapper/mapper.go fullMapResponse,
# types/node.go TailNode, derp/server GenerateRegion): HomeDERP (no legacy DERP), baseline
# CapMap with [] and [false] values, LastSeen only for offline peers, PacketFilters{"base"},
# CollectServices false, Debug, SSHPolicy (not modelled: ignored), a null DERP region.
HEADSCALE_FULL_MAP = {
    "ControlTime": "2026-05-07T08:09:10.752217112Z",
    "Node": {
        "ID": 1, "StableID": "1", "Name": "sunbeam.headscale.net.", "User": 1,
        "Key": NK, "KeyExpiry": "2026-11-03T08:09:10Z", "Machine": MK, "DiscoKey": DK,
        "Addresses": ["100.64.0.1/32", "fd7a:115c:a1e0::1/128"],
        "AllowedIPs": ["100.64.0.1/32", "fd7a:115c:a1e0::1/128"],
        "Endpoints": ["192.0.2.7:41641", "[2001:db8::7]:41641"],
        "HomeDERP": 999,
        "Hostinfo": {"Hostname": "sunbeam", "OS": "linux", "IPNVersion": "1.98.10",
                     "NetInfo": {"PreferredDERP": 999, "DERPLatency": {"999-v4": 0.001}},
                     "Services": [{"Proto": "peerapi4", "Port": 36186}], "Container": None},
        "Created": "2026-05-07T08:09:16.591521816Z", "Cap": 131,
        "CapMap": {"https://tailscale.com/cap/is-admin": [], "https://tailscale.com/cap/ssh": [],
                   "default-auto-update": [False], "tailnet-display-name": ["odin@example.com"],
                   "funnel": None},
        "MachineAuthorized": True, "Online": True,
    },
    "DERPMap": {"Regions": {"999": {"RegionID": 999, "RegionCode": "headscale",
                                    "RegionName": "Headscale Embedded DERP",
                                    "Nodes": [{"Name": "999", "RegionID": 999,
                                               "HostName": "127.0.0.1", "IPv4": "127.0.0.1",
                                               "STUNPort": 3478, "DERPPort": 8080}]},
                            "7": None}},
    "Domain": "headscale.net",
    "CollectServices": False,
    "Debug": {"DisableLogTail": True},
    "SSHPolicy": {"rules": []},
    "DNSConfig": {"Resolvers": [{"Addr": "1.1.1.1"}], "Domains": ["headscale.net"],
                  "Proxied": True, "Routes": {"corp.example.": None},
                  "ExtraRecords": [{"Name": "grafana.headscale.net", "Type": "A",
                                    "Value": "100.64.0.3"}]},
    "UserProfiles": [{"ID": 1, "LoginName": "odin@example.com", "DisplayName": "odin"}],
    "PacketFilters": {"base": [{"SrcIPs": ["100.64.0.0/10", "fd7a:115c:a1e0::/48"],
                                "DstPorts": [{"IP": "*", "Ports": {"First": 0, "Last": 65535}}],
                                "IPProto": [6, 17, 1, 58]}]},
    "Peers": [{
        "ID": 2, "StableID": "2", "Name": "exit.headscale.net.", "User": 1, "Key": NK2,
        "Machine": MK, "DiscoKey": DK2, "Addresses": ["100.64.0.2/32"],
        "AllowedIPs": ["0.0.0.0/0", "100.64.0.2/32", "::/0"], "PrimaryRoutes": [],
        "Endpoints": ["198.51.100.2:55038"], "HomeDERP": 999,
        "Hostinfo": {"OS": "linux", "Hostname": "exit"}, "Cap": 131, "Tags": ["tag:exit"],
        "Online": False, "LastSeen": "2026-05-07T10:09:17.4394975+02:00",
        "CapMap": {"https://tailscale.com/cap/is-admin": []},
    }],
}


def test_headscale_full_map_decodes():
    resp = t.decode_map_response(json.dumps(HEADSCALE_FULL_MAP).encode())
    assert resp.node.id == 1 and resp.node.key == NK and resp.node.disco_key == DK
    assert resp.node.home_derp == 999 and resp.node.legacy_derp is None
    assert resp.node.hostinfo.net_info.preferred_derp == 999
    assert resp.node.cap_map["default-auto-update"] == [False]
    assert resp.node.cap_map["funnel"] is None and resp.node.online is True
    assert resp.derp_map.regions[999].nodes[0].derp_port == 8080
    assert resp.derp_map.regions[7] is None
    assert resp.dns_config.routes == {"corp.example.": None}
    assert resp.packet_filters["base"][0].dst_ports[0].ports == t.PortRange(first=0, last=65535)
    assert resp.packet_filter is None and resp.collect_services is False
    peer = resp.peers[0]
    assert peer.online is False and peer.last_seen.endswith("+02:00")
    assert peer.tags == ["tag:exit"] and peer.primary_routes == []
    assert resp.user_profiles[0].login_name == "odin@example.com"
    assert resp.debug.disable_log_tail and not resp.keep_alive


def test_legacy_derp_and_nil_versus_empty():
    body = b'{"Peers":[{"ID":3,"Key":"%s","DERP":"127.3.3.40:12","AllowedIPs":null}],"PacketFilter":[]}'
    resp = t.decode_map_response(body % NK.encode())
    assert resp.peers[0].legacy_derp == "127.3.3.40:12" and resp.peers[0].home_derp == 0
    assert resp.peers[0].allowed_ips is None and resp.packet_filter == []
    assert t.decode_map_response(b'{"PacketFilter":null}').packet_filter is None
    assert t.decode_map_response(b'{"PacketFilters":{"*":null}}').packet_filters == {"*": None}


def test_keepalive_and_patches():
    assert t.decode_map_response(b'{"KeepAlive":true}') == t.MapResponse(keep_alive=True)
    resp = t.decode_map_response(
        b'{"PeersChangedPatch":[{"NodeID":2,"Online":false},'
        b'{"NodeID":3,"DERPRegion":1,"Endpoints":[],"LastSeen":"2026-05-07T08:09:10Z",'
        b'"KeyExpiry":"0001-01-01T00:00:00Z"}],"OnlineChange":{"2":true},"PeerSeenChange":{"3":false}}'
    )
    p1, p2 = resp.peers_changed_patch
    assert p1 == t.PeerChange(node_id=2, online=False)
    assert p2.derp_region == 1 and p2.endpoints == [] and p2.key_expiry == t.ZERO_TIME
    assert resp.online_change == {2: True} and resp.peer_seen_change == {3: False}


def test_register_response_from_headscale():
    body = (b'{"User":{"ID":1,"DisplayName":"odin","ProfilePicURL":""},"Login":{"ID":1,'
            b'"Provider":"","LoginName":"odin","DisplayName":"odin","ProfilePicURL":""},'
            b'"NodeKeyExpired":false,"MachineAuthorized":true,"AuthURL":"",'
            b'"NodeKeySignature":null,"Error":""}')
    resp = t.decode_register_response(body)
    assert resp.machine_authorized and not resp.node_key_expired and resp.error == ""
    assert resp.user.display_name == "odin" and resp.login.login_name == "odin"
    pending = t.decode_register_response(b'{"AuthURL":"http://127.0.0.1:8080/register/x"}')
    assert pending.auth_url.endswith("/register/x") and not pending.machine_authorized


def test_golden_requests():
    req = t.MapRequest(
        version=113, node_key=NK, disco_key=DK, compress="zstd", keep_alive=True, stream=True,
        hostinfo=t.Hostinfo(ipn_version="1.98.10-sunbeam", os="linux", hostname="sunbeam",
                            net_info=t.NetInfo(preferred_derp=999)),
        endpoints=["192.0.2.7:41641"], endpoint_types=[1],
    )
    assert t.encode_json(req) == (
        b'{"Version":113,"NodeKey":"' + NK.encode() + b'","DiscoKey":"' + DK.encode()
        + b'","Compress":"zstd","KeepAlive":true,"Stream":true,"Hostinfo":{"IPNVersion":'
        b'"1.98.10-sunbeam","OS":"linux","Hostname":"sunbeam","NetInfo":{"PreferredDERP":999}},'
        b'"Endpoints":["192.0.2.7:41641"],"EndpointTypes":[1]}'
    )
    lite = t.MapRequest(version=113, node_key=NK, stream=False, omit_peers=True)
    assert t.encode_json(lite) == b'{"Version":113,"NodeKey":"' + NK.encode() + b'","OmitPeers":true}'
    reg = t.RegisterRequest(version=113, node_key=NK, auth=t.RegisterResponseAuth(auth_key="k"),
                            ephemeral=True, hostinfo=t.Hostinfo(hostname="h"))
    assert json.loads(t.encode_json(reg)) == {
        "Version": 113, "NodeKey": NK, "Auth": {"AuthKey": "k"}, "Ephemeral": True,
        "Hostinfo": {"Hostname": "h"}}
    assert t.encode_json(t.PortRange()) == b'{"First":0,"Last":0}'  # Go always writes both


# --- field names against the upstream Go source -------------------------------------

TAILCFG = Path("/root/go/pkg/mod/tailscale.com@v1.98.10/tailcfg")
FIELD = re.compile(r"^\t([A-Z]\w*)\s+[^\s/]+(?:\s+`json:\"([^\"]*)\"`)?")


def go_json_names(go_type: str) -> set[str]:
    src = (TAILCFG / "tailcfg.go").read_text() + (TAILCFG / "derpmap.go").read_text()
    body = re.search(rf"^type {go_type} struct {{\n(.*?)^}}", src, re.M | re.S).group(1)
    names = set()
    for line in body.splitlines():
        if m := FIELD.match(line):
            tag = (m.group(2) or "").split(",")[0]
            if tag != "-":
                names.add(tag or m.group(1))
    return names


WIRE_TYPES = [
    t.NetInfo, t.Hostinfo, t.RegisterRequest, t.RegisterResponseAuth, t.RegisterResponse,
    t.User, t.Login, t.MapRequest, t.Node, t.PeerChange, t.DERPNode, t.DERPRegion,
    t.DERPHomeParams, t.DERPMap, t.PortRange, t.NetPortRange, t.CapGrant, t.FilterRule,
    t.DNSConfig, t.DNSRecord, t.UserProfile, t.PingRequest, t.Debug, t.MapResponse,
]
GO_NAME = {"RegisterResponseAuth": "RegisterResponseAuth", "Resolver": None}


@pytest.mark.skipif(not TAILCFG.exists(), reason="tailscale Go sources not present")
@pytest.mark.parametrize("cls", WIRE_TYPES, ids=lambda c: c.__name__)
def test_json_names_match_upstream(cls):
    ours = set(cls.__struct_encode_fields__)
    missing = ours - go_json_names(cls.__name__)
    assert not missing, f"{cls.__name__}: not tailcfg JSON names: {missing}"


# --- garbage ----------------------------------------------------------------------------


@pytest.mark.parametrize("body", [
    b"", b"null", b"[]", b"{", b'{"KeepAlive":"yes"}', b'{"Peers":[{"Key":"x"}]}',
    b'{"Peers":[{"ID":18446744073709551616,"Key":"x"}]}', b'{"Node":{"ID":1.5}}',
    b'{"Domain":"\xff\xfe"}', b'{"Node":{"ID":1,"CapMap":{"x":[' + b"[" * 5000 + b"]" * 5000 + b"]}}}",
    b'{"DERPMap":{"Regions":{"abc":null}}}', b'{"PacketFilter":[{"DstPorts":[{"Ports":{"First":70000}}]}]}',
])
def test_malformed_bodies(body):
    with pytest.raises(t.BadControlMessage):
        t.decode_map_response(body)


@pytest.mark.parametrize("body", [
    b"", b"[]", b'{"MachineAuthorized":1}', b'{"User":{"ID":"1"}}', b'{"Error":"\xff"}',
    b'{"AuthURL":"\\ud800"}',
])
def test_malformed_register_responses(body):
    with pytest.raises(t.BadControlMessage):
        t.decode_register_response(body)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4),
    max_leaves=20,
)
KEYS = [*t.MapResponse.__struct_encode_fields__, "ID", "Key", "NodeID", "Regions", "First"]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200) | st.dictionaries(st.sampled_from(KEYS), json_values, max_size=5)
       .map(lambda d: json.dumps(d).encode()))
def test_garbage_only_raises_bad_control_message(body):
    for decode in (t.decode_map_response, t.decode_register_response):
        try:
            decode(body)
        except t.BadControlMessage:
            pass


def test_round_trip_full_map():
    resp = t.decode_map_response(json.dumps(HEADSCALE_FULL_MAP).encode())
    assert t.decode_map_response(t.encode_json(resp)) == resp
    assert msgspec.json.decode(t.encode_json(resp))["Node"]["HomeDERP"] == 999
