"""Codec round-trips for every message, and garbage -> BadMessage only."""

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sunbeam.shared.messages import (
    CTL_REPLY_CODEC,
    CTL_REQUEST_CODEC,
    MAX_PACKET_BYTES,
    MAX_PACKETS_PER_BATCH,
    Ack,
    BadMessage,
    Codec,
    ErrorReply,
    HealthRequest,
    ServiceHealth,
    StatusRequest,
    StopRequest,
)
from sunbeam.shared.messages.dataplane import (
    DERP_IN_CODEC,
    PROXY_IN_CODEC,
    WG_IN_CODEC,
    DerpReceived,
    DerpSend,
    FromPeer,
    ToPeer,
    UdpReceived,
)

K = bytes(range(32))
ALL_CODECS = [PROXY_IN_CODEC, DERP_IN_CODEC, WG_IN_CODEC, CTL_REQUEST_CODEC, CTL_REPLY_CODEC]

SAMPLES = [
    (PROXY_IN_CODEC, FromPeer(peer_key=K, packets=[])),
    (PROXY_IN_CODEC, FromPeer(peer_key=K, packets=[b"\x45" + bytes(19), b"\x60" + bytes(39)])),
    (DERP_IN_CODEC, DerpSend(peer_key=K, region=999, packets=[b"\x04\0\0\0" + bytes(28)])),
    (WG_IN_CODEC, ToPeer(peer_key=K, packets=[b"a"])),
    (WG_IN_CODEC, DerpReceived(peer_key=b"k" * 32, region=1, packets=[b"a", b"b"])),
    (WG_IN_CODEC, UdpReceived(src="127.0.0.1:41641", packets=[b"ab" * 10], segments=[8])),
    (CTL_REQUEST_CODEC, StatusRequest()),
    (CTL_REQUEST_CODEC, HealthRequest()),
    (CTL_REQUEST_CODEC, StopRequest(reason="sunbeam-ctl stop")),
    (CTL_REPLY_CODEC, Ack()),
    (CTL_REPLY_CODEC, ErrorReply(message="unknown request")),
    (
        CTL_REPLY_CODEC,
        ServiceHealth(
            service="wg-1", pid=4242, state="running", started_at=1.7e9,
            counters={"bad_message": 3, "send_dropped": 0},
        ),
    ),
]


@pytest.mark.parametrize(("codec", "message"), SAMPLES, ids=lambda x: type(x).__name__)
def test_round_trip(codec, message):
    data = codec.encode(message)
    decoded = codec.decode(data)
    assert decoded == message and type(decoded) is type(message)
    assert codec.decode(memoryview(data)) == message


def test_messages_are_frozen():
    batch = FromPeer(peer_key=K, packets=[b"x"])
    with pytest.raises(AttributeError):
        batch.packets = []  # type: ignore[misc]


def test_ctl_wire_form_is_a_tagged_map():
    assert msgspec.msgpack.decode(CTL_REQUEST_CODEC.encode(StopRequest(reason="r"))) == {
        "t": "StopRequest", "reason": "r",
    }
    assert msgspec.msgpack.decode(DERP_IN_CODEC.encode(DerpSend(peer_key=b"k" * 32, region=7, packets=[b"p"]))) == [
        "DerpSend", b"k" * 32, 7, [b"p"],
    ]


@pytest.mark.parametrize(
    ("codec", "data"),
    [
        (PROXY_IN_CODEC, b""),
        (PROXY_IN_CODEC, b"\xc1"),  # never-used msgpack byte
        (PROXY_IN_CODEC, b"\x93\xa8DerpSend"),  # truncated
        (PROXY_IN_CODEC, DERP_IN_CODEC.encode(DerpSend(peer_key=K, region=1, packets=[]))),  # wrong union
        (DERP_IN_CODEC, msgspec.msgpack.encode(["DerpSend", b"short", 1, []])),  # key length
        (DERP_IN_CODEC, msgspec.msgpack.encode(["DerpSend", K, -1, []])),  # region out of range
        (PROXY_IN_CODEC, msgspec.msgpack.encode(["FromPeer", K, [b"x"] * (MAX_PACKETS_PER_BATCH + 1)])),
        (PROXY_IN_CODEC, msgspec.msgpack.encode(["FromPeer", K, [bytes(MAX_PACKET_BYTES + 1)]])),
        (PROXY_IN_CODEC, msgspec.msgpack.encode(["FromPeer", K, ["not bytes"]])),
        (CTL_REQUEST_CODEC, CTL_REPLY_CODEC.encode(Ack())),  # a reply is not a request
        (CTL_REQUEST_CODEC, msgspec.msgpack.encode({"t": "StopRequest"})),  # missing field
        (CTL_REQUEST_CODEC, msgspec.msgpack.encode({"t": "Nope"})),
        (CTL_REQUEST_CODEC, b"\x91" * 100_000),  # deeply nested arrays
        # Invalid UTF-8 in the tag: msgspec raises UnicodeDecodeError (msgspec#714).
        (PROXY_IN_CODEC, b"\x93\xa8\x00\x00\x00\x00\x00\x00\x00\x80"),
        (CTL_REQUEST_CODEC, b"\x82\xa1t\xa2\xff\xfe\xa6reason\xa1x"),
    ],
)
def test_garbage_is_bad_message(codec, data):
    with pytest.raises(BadMessage):
        codec.decode(data)


def test_encoding_outside_the_union_is_our_bug():
    with pytest.raises(TypeError):
        PROXY_IN_CODEC.encode(DerpSend(peer_key=K, region=1, packets=[]))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        CTL_REQUEST_CODEC.encode(Ack())  # type: ignore[arg-type]


def test_bad_message_is_a_value_error_with_a_reason():
    with pytest.raises(BadMessage, match="Expected `array`"):
        PROXY_IN_CODEC.decode(msgspec.msgpack.encode({"t": "FromPeer"}))
    assert issubclass(BadMessage, ValueError)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=512), codec_index=st.integers(0, len(ALL_CODECS) - 1))
def test_arbitrary_bytes_only_ever_raise_bad_message(data, codec_index):
    codec: Codec = ALL_CODECS[codec_index]
    try:
        codec.decode(data)
    except BadMessage:
        pass


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=20)
    | st.binary(max_size=40) | st.sampled_from(["FromPeer", "DerpSend", "ToPeer", "StopRequest", "t"]),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.sampled_from(["t", "reason", "message", "packets", "x"]) | st.text(max_size=5), children, max_size=5),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(value=msgpack_values, codec_index=st.integers(0, len(ALL_CODECS) - 1))
def test_well_formed_msgpack_of_wrong_shape_only_raises_bad_message(value, codec_index):
    data = msgspec.msgpack.encode(value)
    try:
        ALL_CODECS[codec_index].decode(data)
    except BadMessage:
        pass


def test_deep_nesting_is_a_bad_message_not_a_recursion_error():
    from sunbeam.shared.messages.codec import BadMessage
    from sunbeam.shared.messages.ctl import CTL_REQUEST_CODEC

    # {"t": "StatusRequest", "zzz": [[[[...]]]]} written as raw msgpack (5000 levels)
    deep = b"\x91" * 5000 + b"\x90"
    frame = b"\x82\xa1t\xadStatusRequest\xa3zzz" + deep
    with pytest.raises(BadMessage):
        CTL_REQUEST_CODEC.decode(frame)


def test_join_runs_and_split_runs():
    """The worker's `join_runs` (stretches of >= 16 equal packets carrying data, a shorter
    one after a stretch joined to it, entries of whole packets up to 64 kB) and `split_runs`
    undoing it; the proxy's plane splits a run entry with `split_segments`, which gives the
    same."""
    from sunbeam.shared.messages.dataplane import HEADERS_MAX, JOIN_MIN_RUN, MAX_PACKET_BYTES, join_runs, split_runs
    from sunbeam.shared.proto.tcp.bulk import BULK_MIN
    from sunbeam.shared.proto.wireguard.messages import split_segments

    def pkt(n: int, i: int) -> bytes:
        return bytes([i % 251]) * n

    batch = ([pkt(40, 0)] + [pkt(1280, i) for i in range(60)] + [pkt(300, 1), pkt(300, 2)]
             + [pkt(1280, i) for i in range(5)] + [pkt(200, i) for i in range(16)] + [pkt(20, 3)])
    entries, segments = join_runs(batch)
    assert segments == [0, 1280, 1280, 0, 0, 0, 0, 0, 0, 200]
    assert [len(e) for e in entries] == [40, 51 * 1280, 9 * 1280 + 300, 300] + [1280] * 5 + [16 * 200 + 20]
    assert all(len(e) <= MAX_PACKET_BYTES for e in entries)
    assert [bytes(p) for p in split_runs(entries, segments)] == batch
    assert [p for e, s in zip(entries, segments) for p in (split_segments(e, s) if s else [e])] == batch
    assert join_runs(batch[:16]) == (batch[:16], [])  # 15 of a size: nothing to join
    acks = [pkt(52, i) for i in range(40)] + [pkt(HEADERS_MAX, i) for i in range(20)]
    assert join_runs(acks) == (acks, [])  # an upload's ACKs carry no data: not joined
    assert JOIN_MIN_RUN == BULK_MIN  # what the worker joins is what the engine checks as a run
    assert split_runs(entries, segments[:-1]) is None
