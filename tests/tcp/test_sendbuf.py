"""The send buffer (shared/proto/tcp/sendbuf.py) against a bytearray doing the same: appends
of every type and size, acknowledgements of every size, reads that cross chunk boundaries."""

from __future__ import annotations

import random

import pytest

from sunbeam.shared.proto.tcp.sendbuf import SendBuffer


def _check(buf: SendBuffer, model: bytearray, rng: random.Random) -> None:
    assert len(buf) == len(model) and bool(buf) == bool(model)
    for _ in range(4):
        off = rng.randrange(len(model) + 1)
        n = rng.randrange(len(model) - off + 1)
        assert buf.get(off, n) == model[off:off + n], (off, n)
        a, b = rng.randrange(-3, len(model) + 4), rng.randrange(-3, len(model) + 4)
        assert buf[a:b] == model[a:b], (a, b)
    assert buf[:] == model


@pytest.mark.parametrize("seed", range(20))
def test_it_reads_as_a_bytearray_would(seed):
    rng = random.Random(seed)
    buf, model = SendBuffer(), bytearray()
    for _ in range(300):
        if rng.random() < 0.55:
            data = rng.randbytes(rng.choice([0, 1, 7, 1240, 5000, rng.randrange(1, 70_000)]))
            form = rng.choice([bytes, bytearray, memoryview])
            buf.append(form(data))
            model += data
        else:
            n = rng.choice([0, len(model), rng.randrange(len(model) + 1)])
            buf.consume(n)
            del model[:n]
        _check(buf, model, rng)
    assert len(buf.chunks) == len(buf.starts) <= 300


def test_a_mutable_source_is_copied_and_acknowledged_chunks_are_dropped():
    buf = SendBuffer()
    src = bytearray(b"abcdef")
    buf.append(src)
    src[:] = b"XXXXXX"  # the caller reuses its buffer
    buf.append(memoryview(b"ghij")[1:3])
    assert buf[:] == b"abcdefhi"
    buf.consume(6)
    assert buf.chunks == [b"hi"] and buf.starts == [6] and buf.get(0, 2) == b"hi"
    buf.consume(2)
    assert buf.chunks == [] and buf.starts == [] and not buf and buf[0:5] == b""
    buf.append(b"k")
    assert buf.starts == [8] and buf.get(0, 1) == b"k"


def test_bytes_are_kept_without_a_copy():
    buf = SendBuffer()
    chunk = bytes(range(256)) * 4
    buf.append(chunk)
    assert buf.chunks[0] is chunk
