"""Property tests: whatever the server sends (garbage, mutated real streams, any chunking),
`DerpClientCore.receive_data` returns events and never raises; once it reports `Closed`
it stays closed. Chunking never changes the events."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sunbeam.shared.proto.derp import Closed, DerpClientCore, FrameType, encode_frame
from sunbeam.shared.proto.derp.events import (
    Connected,
    Dropped,
    Health,
    KeepAlive,
    PeerGone,
    PeerPresent,
    Ping,
    Pong,
    Received,
    Restarting,
)

from .test_derp_client import UPGRADE_101
from .test_derp_frames import CLIENT_INFO_NONCE, DST, GOLDEN_SERVER_INFO, GOLDEN_SERVER_KEY, NODE_PRIVATE

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EVENT_TYPES = (Connected, Received, PeerGone, PeerPresent, Ping, Pong, KeepAlive, Health, Restarting, Dropped, Closed)

REAL = (UPGRADE_101 + GOLDEN_SERVER_KEY + GOLDEN_SERVER_INFO
        + b"".join(encode_frame(t, p) for t, p in [
            (FrameType.RECV_PACKET, DST + b"packet"), (FrameType.PING, b"12345678"), (FrameType.KEEP_ALIVE, b""),
            (FrameType.PEER_GONE, DST + b"\x00"), (FrameType.PEER_PRESENT, DST + bytes(19)),
            (FrameType.HEALTH, b"dup"), (FrameType.RESTARTING, bytes(8)), (FrameType.PONG, b"abcdefgh")]))


def feed(chunks: list[bytes], upgrade: bool) -> list:
    c = DerpClientCore(NODE_PRIVATE, nonce=CLIENT_INFO_NONCE)
    if upgrade:
        c.upgrade_request("h")
    events = []
    for chunk in chunks:
        got = c.receive_data(chunk)
        assert all(isinstance(ev, EVENT_TYPES) for ev in got)
        if events and isinstance(events[-1], Closed):
            assert got == []
        events += got
        assert sum(isinstance(ev, Closed) for ev in events) <= 1
        c.data_to_send()
    return events


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[i:j] for i, j in zip([0, *points], [*points, len(data)]) if j > i]


@FAST
@given(st.lists(st.binary(max_size=300), max_size=8), st.booleans())
def test_garbage_never_raises(chunks, upgrade):
    feed(chunks, upgrade)


@FAST
@given(st.lists(st.tuples(st.sampled_from(sorted(FrameType) + [0, 0x7F, 0xFF]), st.binary(max_size=80)), max_size=10))
def test_well_framed_garbage_after_login_never_raises(frames):
    stream = GOLDEN_SERVER_KEY + GOLDEN_SERVER_INFO + b"".join(encode_frame(t, p) for t, p in frames)
    events = feed([stream], upgrade=False)
    assert isinstance(events[0], Connected)


@FAST
@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4), st.lists(st.integers(0, 10_000)))
def test_mutated_real_stream_never_raises(edits, cuts):
    data = bytearray(REAL)
    for index, value in edits:
        data[index % len(data)] = value
    feed(split(bytes(data), cuts), upgrade=True)


@FAST
@given(st.lists(st.integers(0, 10_000), max_size=20))
def test_chunking_does_not_change_events(cuts):
    whole = feed([REAL], upgrade=True)
    assert len(whole) == 9 and not any(isinstance(ev, (Closed, Dropped)) for ev in whole)
    assert feed(split(REAL, cuts), upgrade=True) == whole
