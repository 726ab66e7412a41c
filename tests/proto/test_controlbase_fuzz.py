"""Property tests: whatever the server sends, the core answers with data, "need more", or
its own HandshakeError / RecordError; never another exception. Plus round-trip and
chunking-independence properties."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sunbeam.shared.proto.controlbase import (
    EARLY_PAYLOAD_MAGIC,
    MAX_RECORD,
    HandshakeError,
    Initiator,
    RecordError,
    parse_early_payload,
)

from .test_controlbase import SERVER, Responder, make_initiator, public_key, split_records

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SERVER_PUBLIC = public_key(SERVER)
RESPONSE = Responder(SERVER).accept(make_initiator().initiation())


def connected():
    server = Responder(SERVER)
    return make_initiator().receive_response(server.accept(make_initiator().initiation())), server


def mutate(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for index, value in edits:
        if out:
            out[index % len(out)] = value
    return bytes(out)


EDITS = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4)


@FAST
@given(st.binary(max_size=120))
def test_response_length_needed_random(data: bytes) -> None:
    try:
        need = Initiator.response_length_needed(data)
    except HandshakeError:
        return
    assert need is None or need >= 3
    if need is None:
        assert len(data) < 3


@FAST
@given(st.one_of(st.binary(max_size=120), EDITS.map(lambda e: mutate(RESPONSE, e))))
def test_receive_response_random(data: bytes) -> None:
    try:
        transport = make_initiator().receive_response(data)
    except HandshakeError:
        return
    assert data == RESPONSE  # the only answer that authenticates
    assert transport.peer_static == SERVER_PUBLIC


@FAST
@given(st.lists(st.binary(max_size=300), max_size=6))
def test_receive_data_random_bytes(chunks: list[bytes]) -> None:
    transport, _ = connected()
    for chunk in chunks:
        try:
            assert transport.receive_data(chunk) == b""  # nothing random authenticates
        except RecordError:
            return


@FAST
@given(
    st.lists(st.binary(max_size=5000), min_size=1, max_size=4),
    EDITS,
    st.lists(st.integers(1, 3000), max_size=10),
)
def test_receive_data_mutated_records(messages: list[bytes], edits: list[tuple[int, int]], cuts: list[int]) -> None:
    transport, server = connected()
    wire = b"".join(server.seal(m[i : i + 4077]) for m in messages for i in range(0, max(len(m), 1), 4077))
    tampered = mutate(wire, edits)
    got = b""
    pos = 0
    try:
        for cut in [*cuts, len(tampered)]:
            got += transport.receive_data(tampered[pos : pos + cut])
            pos += cut
    except RecordError:
        return
    if tampered == wire:
        assert got == b"".join(messages)
    else:  # only a length field that grew can go unnoticed, leaving a record incomplete
        assert b"".join(messages).startswith(got)


@FAST
@given(st.lists(st.binary(max_size=9000), max_size=5), st.lists(st.integers(1, 5000), max_size=12))
def test_round_trip_any_chunking(messages: list[bytes], cuts: list[int]) -> None:
    transport, server = connected()
    wire = b"".join(transport.encrypt(m) for m in messages)
    assert server.open(wire) == b"".join(messages)
    back = b"".join(server.seal(m[i : i + 4077]) for m in messages for i in range(0, len(m), 4077))
    got, pos = b"", 0
    for cut in [*cuts, len(back)]:
        got += transport.receive_data(back[pos : pos + cut])
        pos += cut
    assert got == b"".join(messages)
    assert all(r[0] == 4 and len(r) <= MAX_RECORD for r in split_records(wire))


EARLY_LIKE = st.tuples(st.integers(0, 64), st.binary(max_size=80)).map(
    lambda t: EARLY_PAYLOAD_MAGIC + t[0].to_bytes(4, "big") + t[1]
)
JSONISH = st.lists(st.sampled_from(list('{}[]":,0123 abnultrue') + ['"nodeKeyChallenge"', "\\u00e9", "\xff"]), max_size=30)
EARLY_JSONISH = JSONISH.map(lambda parts: "".join(parts).encode("utf-8", "surrogatepass")).map(
    lambda body: EARLY_PAYLOAD_MAGIC + len(body).to_bytes(4, "big") + body
)


@FAST
@given(st.one_of(st.binary(max_size=100), EARLY_LIKE, EARLY_JSONISH), st.binary(max_size=20))
def test_parse_early_payload_random(data: bytes, more: bytes) -> None:
    try:
        result = parse_early_payload(data)
    except RecordError:
        return
    if result is None:
        return
    payload, consumed = result
    assert payload is None or isinstance(payload, dict)
    assert 0 <= consumed <= len(data)
    assert consumed == 0 or consumed >= 9
    # A decision made on a prefix does not change when more bytes arrive.
    assert parse_early_payload(data + more) == result
