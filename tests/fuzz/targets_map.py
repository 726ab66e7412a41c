"""Fuzz targets of the map stream and the control JSON: ``MapFrameDecoder`` (u32 LE length
prefix, zstd or plain bodies), ``decode_map_response`` -> ``NetmapBuilder`` -> the control
PUB codec, and ``decode_register_response``.

Contracts (module docstrings): ``MapFrameDecoder.feed`` raises FrameError only (and stays
failed) and reports undecodable bodies as ``CorruptFrame(reason)``; the tailcfg decoders
raise BadControlMessage only; the netmap built from any accepted MapResponse crosses the
control PUB socket intact (``CONTROL_EVENT_CODEC`` round trip).
"""

from __future__ import annotations

import json

import msgspec

from sunbeam.shared.messages.netmap import CONTROL_EVENT_CODEC, NetmapDelta, NetmapSnapshot
from sunbeam.shared.netmap import NetmapBuilder
from sunbeam.shared.proto import tailcfg
from sunbeam.shared.proto.mapframes import MAX_DECODED_BYTES, FrameError, MapFrameDecoder, encode_frame
from tests.proto.test_tailcfg import HEADSCALE_FULL_MAP

from .harness import Seed, Target, check_reason, check_token


def _delta_maps() -> list[dict]:
    peer = HEADSCALE_FULL_MAP["Peers"][0]
    return [
        {"KeepAlive": True, "ControlTime": "2026-05-07T08:09:11Z"},
        {"PeersChanged": [dict(peer, ID=3, Endpoints=[])], "PeersRemoved": [2, 77]},
        {"PeersChangedPatch": [{"NodeID": 2, "Online": True, "DERPRegion": 7, "Endpoints": ["[::1]:9"],
                                "DiscoKey": peer["DiscoKey"], "LastSeen": "2026-05-07T08:09:11Z"}]},
        {"OnlineChange": {"2": False, "9": True}, "PeerSeenChange": {"2": True}},
        {"PacketFilter": [{"SrcIPs": ["*"], "DstPorts": [{"IP": "100.64.0.1/32", "Ports": {"First": 22, "Last": 22}}],
                           "CapGrant": [{"Dsts": ["100.64.0.1/32"], "CapMap": {"x": [1]}}]}]},
        {"DERPMap": {"OmitDefaultRegions": True, "Regions": {"1": {"RegionID": 1, "Nodes": []}}},
         "DNSConfig": None, "Domain": "x"},
    ]


def _map_json_seeds() -> list[bytes]:
    return [json.dumps(HEADSCALE_FULL_MAP).encode(), *(json.dumps(d).encode() for d in _delta_maps())]


_BASE_MAP = tailcfg.decode_map_response(json.dumps(HEADSCALE_FULL_MAP).encode())


def _apply_and_reencode(builder: NetmapBuilder, resp: tailcfg.MapResponse, seq: int) -> None:
    """Everything that reaches the netmap must cross the control PUB socket intact."""
    change = builder.apply(resp, now=1_800_000_000.0)
    for reason in builder.drops:
        check_token(reason[1])
    snap = NetmapSnapshot(seq=seq, netmap=builder.snapshot())
    assert CONTROL_EVENT_CODEC.decode(CONTROL_EVENT_CODEC.encode(snap)) == snap
    if change is not None:
        delta = NetmapDelta.from_change(seq, change)
        assert CONTROL_EVENT_CODEC.decode(CONTROL_EVENT_CODEC.encode(delta)) == delta


def _map_response():
    def run(data: bytes):
        try:
            resp = tailcfg.decode_map_response(data)
        except tailcfg.BadControlMessage as exc:
            return check_reason(str(exc))
        builder = NetmapBuilder()
        _apply_and_reencode(builder, _BASE_MAP, 1)  # a full map first, so deltas meet peers
        _apply_and_reencode(builder, resp, 2)
        assert tailcfg.decode_map_response(tailcfg.encode_json(resp)) == resp
        return None
    return run


def _register_response():
    def run(data: bytes):
        try:
            resp = tailcfg.decode_register_response(data)
        except tailcfg.BadControlMessage as exc:
            return check_reason(str(exc))
        assert tailcfg.decode_register_response(tailcfg.encode_json(resp)) == resp
        return None
    return run


def _register_seeds() -> list[bytes]:
    return [b'{"User":{"ID":1,"LoginName":"odin","DisplayName":"odin"},"Login":{"ID":1},'
            b'"NodeKeyExpired":false,"MachineAuthorized":true,"AuthURL":""}',
            b'{"AuthURL":"https://h/register/abc","Error":""}', b'{"Error":"invalid key"}', b"{}"]


def _mapframes():
    def run(data: bytes):
        dec = MapFrameDecoder()
        bodies, reason = [], None
        cut = len(data) // 2
        try:
            for part in (data[:cut], data[cut:]):
                bodies += dec.feed(part)
                for drop in dec.drops:
                    reason = reason or "drop: " + check_reason(drop.reason)
                    assert 0 <= drop.size <= len(data)
        except FrameError as exc:
            assert dec.failed
            try:
                dec.feed(b"{}")
            except FrameError:
                return check_reason(str(exc))
            raise AssertionError("FrameError is not sticky") from None
        assert dec.buffered <= len(data)
        builder = NetmapBuilder()
        for n, body in enumerate(bodies):
            assert body and len(body) <= MAX_DECODED_BYTES
            try:
                resp = tailcfg.decode_map_response(body)
            except tailcfg.BadControlMessage as exc:
                reason = reason or check_reason(str(exc))
                continue
            _apply_and_reencode(builder, resp, n + 1)
        return reason
    return run


def _mapframes_seeds() -> list[Seed]:
    out = []
    bodies = _map_json_seeds()
    for compress in (False, True):
        for group in (bodies[:1], bodies[1:3], bodies[3:]):
            stream = b""
            fields = []
            for body in group:
                fields.append((len(stream), 4, "little"))
                stream += encode_frame(body, compress=compress)
            out.append(Seed(stream, tuple(fields)))
    return out


_JSON_TOKENS = (b'"', b"{", b"}", b"[", b"]", b":", b",", b"null", b"true", b"false", b"-0", b"1e999",
                b"9223372036854775808", b"-9223372036854775809", b'"\\ud800"', b"\\u0000", b"\xff", b"  ")


def _field_tokens() -> tuple[bytes, ...]:
    names = set()
    for name in tailcfg.__all__:
        obj = getattr(tailcfg, name)
        if isinstance(obj, type) and issubclass(obj, msgspec.Struct):
            names.update(obj.__struct_encode_fields__)
    return tuple(f'"{n}":'.encode() for n in sorted(names))


_FIELD_TOKENS = _field_tokens()

TARGETS = [
    Target("mapframes", _mapframes, _mapframes_seeds,
           "MapFrameDecoder.feed (u32 LE length, zstd, plain) -> decode_map_response -> NetmapBuilder",
           max_len=16_384, tokens=(b"\x28\xb5\x2f\xfd",)),
    Target("map_response", _map_response, _map_json_seeds,
           "tailcfg.decode_map_response -> NetmapBuilder.apply -> CONTROL_EVENT_CODEC round trip",
           max_len=8192, tokens=_JSON_TOKENS + _FIELD_TOKENS),
    Target("register_response", _register_response, _register_seeds, "tailcfg.decode_register_response",
           max_len=2048, tokens=_JSON_TOKENS + _FIELD_TOKENS),
]
