"""Batcher thresholds and round-trips; bounded sends count drops instead of blocking."""

import time

import pytest
import zmq

from sunbeam.shared.messages.dataplane import DERP_IN_CODEC, PROXY_IN_CODEC, DerpSend, FromPeer
from sunbeam.shared.runtime import Batcher, Counters, send_bounded

pytestmark = pytest.mark.timeout(20)


K = bytes(32)


def derp_batcher(**kw) -> Batcher[bytes]:
    return Batcher(DERP_IN_CODEC, lambda key, packets: DerpSend(peer_key=key, region=1, packets=packets), **kw)


def proxy_batcher(**kw) -> Batcher[int]:
    return Batcher(PROXY_IN_CODEC, lambda _dest, packets: FromPeer(peer_key=K, packets=packets), **kw)


def test_flush_on_packet_count():
    batcher = proxy_batcher(max_packets=3, max_bytes=10_000)
    assert batcher.add(0, b"a") is None
    assert batcher.add(0, b"b") is None
    full = batcher.add(0, b"c")
    assert full is not None and full.dest == 0 and full.packets == 3
    assert PROXY_IN_CODEC.decode(full.data) == FromPeer(peer_key=K, packets=[b"a", b"b", b"c"])
    assert batcher.pending_packets == 0
    assert batcher.flush() == []


def test_flush_on_bytes():
    batcher = derp_batcher(max_packets=100, max_bytes=1000)
    key = b"k" * 32
    assert batcher.add(key, bytes(600)) is None
    full = batcher.add(key, bytes(400))
    assert full is not None and full.packets == 2
    assert batcher.add(key, bytes(2000)) is not None  # one oversized packet goes alone


def test_explicit_flush_per_destination_keeps_order():
    batcher = derp_batcher(max_packets=100)
    a, b = b"a" * 32, b"b" * 32
    batcher.add(b, b"b1")
    batcher.add(a, b"a1")
    batcher.add(b, b"b2")
    assert batcher.pending_packets == 3
    out = batcher.flush()
    assert [x.dest for x in out] == [b, a]
    assert [DERP_IN_CODEC.decode(x.data) for x in out] == [
        DerpSend(peer_key=b, region=1, packets=[b"b1", b"b2"]),
        DerpSend(peer_key=a, region=1, packets=[b"a1"]),
    ]
    assert batcher.flush() == []


def test_many_packets_become_few_messages_and_round_trip():
    batcher = proxy_batcher(max_packets=64)
    packets = [i.to_bytes(2, "big") * 50 for i in range(1000)]
    messages = [m for p in packets if (m := batcher.add("w0", p)) is not None]
    messages += batcher.flush()
    assert len(messages) == 16  # ceil(1000 / 64)
    received = [p for m in messages for p in PROXY_IN_CODEC.decode(m.data).packets]
    assert received == packets


def test_bad_limits_rejected():
    with pytest.raises(ValueError):
        derp_batcher(max_packets=0)
    with pytest.raises(ValueError):
        derp_batcher(max_packets=100_000)
    with pytest.raises(ValueError):
        derp_batcher(max_bytes=0)


def test_bounded_send_without_reader_counts_drops():
    ctx = zmq.Context()
    try:
        push = ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.SNDHWM, 1)
        push.bind("inproc://nobody")
        counters = Counters()
        start = time.monotonic()
        results = [send_bounded(push, b"x", counters, counter="tx_dropped", weight=5) for _ in range(10)]
        assert time.monotonic() - start < 1.0  # never blocks
        assert results == [False] * 10
        assert counters["tx_dropped"] == 50
        push.close(linger=0)
    finally:
        ctx.term()


def test_bounded_send_with_stalled_reader_drops_when_hwm_full(tmp_path):
    ctx = zmq.Context()
    try:
        push = ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.SNDHWM, 1)
        pull = ctx.socket(zmq.PULL)
        pull.setsockopt(zmq.RCVHWM, 1)
        pull.bind(f"ipc://{tmp_path}/stalled.sock")
        push.connect(f"ipc://{tmp_path}/stalled.sock")
        # Wait until the connection is up (first send succeeds).
        counters = Counters()
        deadline = time.monotonic() + 5
        while not send_bounded(push, b"first", counters) and time.monotonic() < deadline:
            time.sleep(0.005)
        counters = Counters()
        sent = sum(send_bounded(push, b"p" * 100, counters) for _ in range(1000))
        assert counters["send_dropped"] == 1000 - sent
        assert counters["send_dropped"] > 900  # a handful fit in the HWM/kernel buffers
        assert pull.recv() == b"first"
        push.close(linger=0)
        pull.close(linger=0)
    finally:
        ctx.term()


def test_segmented_batcher_counts_datagrams_and_passes_segment_sizes():
    from sunbeam.shared.messages.dataplane import WG_IN_CODEC, UdpReceived

    batcher = Batcher(WG_IN_CODEC, lambda src, p, seg: UdpReceived(src=src, packets=p, segments=seg),
                      segmented=True, max_packets=100, max_bytes=10_000)
    assert batcher.add("1.2.3.4:5", b"a" * 10) is None
    assert batcher.add("1.2.3.4:5", b"b" * 40, 16, 3) is None  # a burst: 16 + 16 + 8 bytes
    assert batcher.pending_packets == 4
    (batch,) = batcher.flush()
    assert batch.packets == 4
    assert WG_IN_CODEC.decode(batch.data) == UdpReceived(src="1.2.3.4:5", packets=[b"a" * 10, b"b" * 40],
                                                         segments=[0, 16])


def test_add_many_is_add_for_each_packet():
    packets = [bytes([i]) * (100 + i) for i in range(50)]
    one, many = (proxy_batcher(max_packets=7, max_bytes=2000) for _ in range(2))
    assert many.add(0, b"first") is None and one.add(0, b"first") is None
    singly = [b for b in (one.add(0, p) for p in packets) if b is not None]
    assert many.add_many(0, packets) == singly and len(singly) > 3
    assert many.pending_packets == one.pending_packets and many.flush() == one.flush()
    assert many.add_many(1, []) == [] and many.flush() == []


def test_add_many_in_a_segmented_batcher_adds_single_packets():
    from sunbeam.shared.messages.dataplane import WG_IN_CODEC, UdpReceived

    batcher = Batcher(WG_IN_CODEC, lambda src, p, seg: UdpReceived(src=src, packets=p, segments=seg),
                      segmented=True, max_packets=3)
    assert batcher.add("h:1", b"b" * 40, 16, 3) is None
    (full,) = batcher.add_many("h:1", [b"x", b"yy", b"zzz"])
    assert full.packets == 5 and batcher.pending_packets == 1
    assert WG_IN_CODEC.decode(full.data) == UdpReceived(src="h:1", packets=[b"b" * 40, b"x", b"yy"],
                                                         segments=[16, 0, 0])
    (rest,) = batcher.flush()
    assert WG_IN_CODEC.decode(rest.data) == UdpReceived(src="h:1", packets=[b"zzz"], segments=[0])
