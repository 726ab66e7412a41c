"""Map stream framing: every split of the input, zstd and plain, limits, corrupt bodies."""

import tracemalloc

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from sunbeam.shared.proto.mapframes import (
    MAX_FRAME_BYTES,
    CorruptFrame,
    FrameError,
    MapFrameDecoder,
    encode_frame,
)

KEEPALIVE = b'{"KeepAlive":true}'
BODIES = [KEEPALIVE, b'{"Domain":"headscale.net","PacketFilter":[]}', b"{}" + b" " * 3000]


def feed_split(decoder, data, size):
    """(bodies, drops) from feeding ``data`` in chunks of ``size``."""
    out, drops = [], []
    for i in range(0, len(data), size):
        out += decoder.feed(data[i : i + size])
        drops += decoder.drops
    return out, drops


def test_golden_keepalive_frame_is_little_endian():
    # hs:poll.go writeMap: binary.LittleEndian.PutUint32(len) + json (18 bytes here).
    assert encode_frame(KEEPALIVE) == b"\x12\x00\x00\x00" + KEEPALIVE
    assert MapFrameDecoder().feed(b"\x12\x00\x00\x00" + KEEPALIVE) == [KEEPALIVE]


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "zstd"])
@pytest.mark.parametrize("chunk", [1, 3, 4, 5, 1000, 1 << 20], ids=lambda c: f"chunk{c}")
def test_frames_any_split(compress, chunk):
    stream = b"".join(encode_frame(b, compress=compress) for b in BODIES)
    decoder = MapFrameDecoder()
    assert feed_split(decoder, stream, chunk) == (BODIES, [])
    assert decoder.buffered == 0


def test_mixed_plain_and_zstd_and_trailing_partial():
    stream = encode_frame(BODIES[0], compress=True) + encode_frame(BODIES[1]) + b"\x05\x00"
    decoder = MapFrameDecoder()
    assert decoder.feed(stream) == BODIES[:2]
    assert decoder.buffered == 2
    assert decoder.feed(b"\x00\x00{}") == []
    assert decoder.feed(b"   ") == [b"{}   "]


def test_oversize_length_is_fatal():
    decoder = MapFrameDecoder()
    assert decoder.feed(encode_frame(KEEPALIVE)) == [KEEPALIVE]
    with pytest.raises(FrameError):  # refused from the header alone, before the body arrives
        decoder.feed((MAX_FRAME_BYTES + 1).to_bytes(4, "little"))
    assert decoder.failed
    with pytest.raises(FrameError):
        decoder.feed(encode_frame(KEEPALIVE))


def test_length_at_the_limit_is_accepted():
    decoder = MapFrameDecoder(max_frame=100)
    body = b"{" + b" " * 98 + b"}"
    assert decoder.feed(encode_frame(body)) == [body]
    with pytest.raises(FrameError):
        decoder.feed(encode_frame(body + b" "))


def test_byte_at_a_time_oversize_detected_at_fourth_byte():
    decoder = MapFrameDecoder(max_frame=10)
    for b in b"\x0b\x00\x00":
        assert decoder.feed(bytes([b])) == []
    with pytest.raises(FrameError):
        decoder.feed(b"\x00")


def test_corrupt_bodies_are_dropped_and_the_stream_continues():
    good = zstandard.ZstdCompressor().compress(KEEPALIVE * 10)
    bad = [
        b"\x28\xb5\x2f\xfd" + b"\x00" * 10,  # magic + garbage
        b"\x28\xb5\x2f\xfd",  # magic only
        good[:-4],  # truncated
        good[:20] + bytes(b ^ 0xFF for b in good[20:]),  # flipped bits
        b"",  # zero-length frame
    ]
    stream = b"".join(encode_frame(b) for b in bad) + encode_frame(KEEPALIVE)
    for chunk in (1, 7, len(stream)):
        out, drops = feed_split(MapFrameDecoder(), stream, chunk)
        assert out == [KEEPALIVE]
        assert all(isinstance(d, CorruptFrame) and d.reason for d in drops)
        assert [d.size for d in drops] == [len(b) for b in bad]
    decoder = MapFrameDecoder()
    assert decoder.feed(encode_frame(bad[0])) == [] and len(decoder.drops) == 1
    assert decoder.feed(encode_frame(KEEPALIVE)) == [KEEPALIVE] and decoder.drops == []  # per call


def zeros_zstd(total, *, declare_size):
    cctx = zstandard.ZstdCompressor(write_content_size=declare_size)
    if declare_size:
        return cctx.compress(bytes(total))
    obj = cctx.compressobj()
    chunk = bytes(1 << 20)
    return b"".join(obj.compress(chunk) for _ in range(total >> 20)) + obj.flush()


@pytest.mark.parametrize("declare_size", [True, False], ids=["declared", "undeclared"])
def test_zstd_bomb_is_bounded(declare_size):
    bomb = zeros_zstd(64 << 20, declare_size=declare_size)
    assert len(bomb) < 64 << 10
    decoder = MapFrameDecoder(max_decoded=1 << 20)
    tracemalloc.start()
    try:
        out = decoder.feed(encode_frame(bomb))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out == [] and len(decoder.drops) == 1
    assert peak < 4 << 20, peak
    # the same decoder keeps working, and a body at the limit passes
    ok = zeros_zstd(1 << 20, declare_size=declare_size)
    assert decoder.feed(encode_frame(ok)) == [bytes(1 << 20)]


@settings(max_examples=200, deadline=None)
@given(
    bodies=st.lists(st.binary(min_size=1, max_size=300).filter(lambda b: b[:1] != b"\x28"),
                    max_size=6),
    compress=st.lists(st.booleans(), min_size=6, max_size=6),
    cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=10),
)
def test_any_split_yields_the_same_frames(bodies, compress, cuts):
    stream = b"".join(encode_frame(b, compress=c) for b, c in zip(bodies, compress))
    decoder = MapFrameDecoder()
    out, last = [], 0
    for cut in sorted(c % (len(stream) + 1) for c in cuts) + [len(stream)]:
        out += decoder.feed(stream[last:cut])
        last = cut
    assert out == bodies and decoder.buffered == 0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_garbage_only_frame_error_or_entries(chunks):
    decoder = MapFrameDecoder(max_frame=1 << 16)
    for chunk in chunks:
        try:
            assert all(isinstance(body, bytes) and body for body in decoder.feed(chunk))
            assert all(isinstance(d, CorruptFrame) for d in decoder.drops)
        except FrameError:
            assert decoder.failed
            return
