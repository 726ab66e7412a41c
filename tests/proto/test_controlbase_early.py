"""The early payload before HTTP/2 (ts:control/ts2021/conn.go, hs:hscontrol/noise.go)."""

from __future__ import annotations

import json

import pytest

from sunbeam.shared.proto.controlbase import (
    EARLY_PAYLOAD_MAGIC,
    EARLY_PAYLOAD_MAX_LEN,
    RecordError,
    parse_early_payload,
)

from .test_controlbase import Responder, SERVER, chunkings, make_initiator

# Exactly what Headscale writes (json.Marshal of tailcfg.EarlyNoise), then the HTTP/2
# server connection preface: a SETTINGS frame header (length 0x000012, type 4).
CHALLENGE = "chalpub:" + "ab" * 32
HEADSCALE_JSON = b'{"nodeKeyChallenge":"' + CHALLENGE.encode() + b'"}'
HEADSCALE_EARLY = b"\xff\xff\xffTS" + len(HEADSCALE_JSON).to_bytes(4, "big") + HEADSCALE_JSON
H2_SETTINGS = bytes.fromhex("000012040000000000") + bytes(18)


def incremental(stream: bytes) -> tuple[dict | None, int]:
    """Feed growing prefixes until the parser decides, as a shell reading the stream."""
    for n in range(len(stream) + 1):
        result = parse_early_payload(stream[:n])
        if result is not None:
            return result
    raise AssertionError("never decided")


def test_constants() -> None:
    assert EARLY_PAYLOAD_MAGIC == b"\xff\xff\xffTS"
    assert EARLY_PAYLOAD_MAX_LEN == 10 << 20  # tailscale's limit


def test_headscale_payload_whole_incremental_and_with_trailing_http2() -> None:
    expected = ({"nodeKeyChallenge": CHALLENGE}, len(HEADSCALE_EARLY))
    assert parse_early_payload(HEADSCALE_EARLY) == expected
    assert parse_early_payload(HEADSCALE_EARLY + H2_SETTINGS) == expected
    assert incremental(HEADSCALE_EARLY + H2_SETTINGS) == expected
    for n in range(len(HEADSCALE_EARLY)):
        assert parse_early_payload(HEADSCALE_EARLY[:n]) is None  # every proper prefix: need more


def test_no_early_payload_consumes_nothing() -> None:
    assert parse_early_payload(H2_SETTINGS) == (None, 0)
    assert parse_early_payload(H2_SETTINGS[:1]) == (None, 0)  # decided from the first byte
    assert parse_early_payload(b"\xff\xff\x00") == (None, 0)
    assert parse_early_payload(b"\xff\xff\xffTs" + bytes(4)) == (None, 0)
    assert incremental(H2_SETTINGS) == (None, 0)


def test_need_more() -> None:
    assert parse_early_payload(b"") is None
    assert parse_early_payload(b"\xff\xff\xffT") is None
    assert parse_early_payload(b"\xff\xff\xffTS\x00\x00\x00") is None
    assert parse_early_payload(b"\xff\xff\xffTS\x00\x00\x00\x05{}") is None
    # The largest allowed length is accepted from the header: the parser waits for it.
    assert parse_early_payload(EARLY_PAYLOAD_MAGIC + EARLY_PAYLOAD_MAX_LEN.to_bytes(4, "big")) is None


def test_json_null_is_an_empty_early_payload() -> None:
    """Go unmarshals null into the *EarlyNoise pointer and leaves it nil, without error."""
    assert parse_early_payload(EARLY_PAYLOAD_MAGIC + b"\x00\x00\x00\x04null" + H2_SETTINGS) == (None, 13)


def test_other_fields_are_kept() -> None:
    body = json.dumps({"nodeKeyChallenge": CHALLENGE, "future": [1, 2]}).encode()
    got = parse_early_payload(EARLY_PAYLOAD_MAGIC + len(body).to_bytes(4, "big") + body)
    assert got == ({"nodeKeyChallenge": CHALLENGE, "future": [1, 2]}, 9 + len(body))


def test_invalid_utf8_is_replaced_like_go() -> None:
    body = b'{"x":"\xff"}'
    payload, _ = parse_early_payload(EARLY_PAYLOAD_MAGIC + len(body).to_bytes(4, "big") + body)
    assert payload == {"x": "\ufffd"}


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"not json", b"[]", b'"s"', b"1", b"true", b"NaN", b'{"a": Infinity}', b"{}{}", b"[" * 100_000,
     '{"a":1}'.encode("utf-16")],
)
def test_bad_json(body: bytes) -> None:
    with pytest.raises(RecordError):
        parse_early_payload(EARLY_PAYLOAD_MAGIC + len(body).to_bytes(4, "big") + body)


def test_length_over_limit_is_refused_from_the_header() -> None:
    with pytest.raises(RecordError):
        parse_early_payload(EARLY_PAYLOAD_MAGIC + (EARLY_PAYLOAD_MAX_LEN + 1).to_bytes(4, "big"))
    with pytest.raises(RecordError):
        parse_early_payload(EARLY_PAYLOAD_MAGIC + b"\xff\xff\xff\xff")


def test_through_the_noise_stream() -> None:
    """The server writes the early payload and HTTP/2 in records cut anywhere; the shell
    feeds decrypted bytes to the parser until it decides, then hands the rest to HTTP/2."""
    plain = HEADSCALE_EARLY + H2_SETTINGS
    for cut in (1, 5, 9, 20, len(HEADSCALE_EARLY)):
        server = Responder(SERVER)
        response = server.accept(make_initiator().initiation())
        wire = server.seal(plain[:cut]) + server.seal(plain[cut:])
        for pieces in chunkings(wire):
            transport = make_initiator().receive_response(response)  # same keys: same session
            buf, result, i = b"", None, 0
            while result is None:
                buf += transport.receive_data(pieces[i])
                result = parse_early_payload(buf)
                i += 1
            payload, consumed = result
            assert payload == {"nodeKeyChallenge": CHALLENGE}
            rest = buf[consumed:] + b"".join(transport.receive_data(p) for p in pieces[i:])
            assert rest == H2_SETTINGS
