"""SOCKS5 server core: golden byte exchanges (RFC 1928), whole and byte at a time."""

from __future__ import annotations

import pytest
from sunbeam.services.proxy.socks5 import (
    AddressType,
    ConnectRequest,
    ProtocolError,
    Reply,
    Socks5Server,
    State,
    encode_reply,
)

GREETING = b"\x05\x01\x00"  # VER 5, one method: no auth
SELECT = b"\x05\x00"
REQ_V4 = b"\x05\x01\x00\x01" + bytes([100, 64, 0, 2]) + b"\x1f\x40"  # 100.64.0.2:8000
REQ_V6 = b"\x05\x01\x00\x04" + bytes.fromhex("fd7a115ca1e000000000000000000002") + b"\x00\x16"  # [..::2]:22
REQ_NAME = b"\x05\x01\x00\x03\x13peer-1.tailnet.test\x1f\x40"  # peer-1.tailnet.test:8000
OK_ZERO = b"\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00"  # succeeded, BND 0.0.0.0:0


def run(chunks: list[bytes], server: Socks5Server | None = None) -> tuple[Socks5Server, list, bytes]:
    server = server or Socks5Server()
    events, out = [], b""
    for chunk in chunks:
        events += server.receive_data(chunk)
        out += server.data_to_send()
    return server, events, out


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


@pytest.mark.parametrize(
    ("request_bytes", "expected"),
    [
        (REQ_V4, ConnectRequest("100.64.0.2", 8000, AddressType.IPV4)),
        (REQ_V6, ConnectRequest("fd7a:115c:a1e0::2", 22, AddressType.IPV6)),
        (REQ_NAME, ConnectRequest("peer-1.tailnet.test", 8000, AddressType.DOMAIN)),
    ],
)
@pytest.mark.parametrize("split", ["whole", "two_writes", "bytewise"])
def test_connect_each_address_type(request_bytes, expected, split):
    wire = GREETING + request_bytes
    chunks = {"whole": [wire], "two_writes": [GREETING, request_bytes], "bytewise": bytewise(wire)}[split]
    server, events, out = run(chunks)
    assert events == [expected]
    assert out == SELECT
    assert server.state is State.PENDING and server.request == expected
    server.reply(Reply.SUCCEEDED)
    assert server.data_to_send() == OK_ZERO
    assert server.state is State.ESTABLISHED
    assert server.leftover() == b""


def test_greeting_alone_only_selects_the_method():
    server, events, out = run([b"\x05\x03\x02\x01\x00"])  # user/pass, GSSAPI, no auth
    assert (events, out, server.state) == ([], SELECT, State.REQUEST)


@pytest.mark.parametrize(
    ("bound", "wire"),
    [
        (("100.64.0.1", 40000), b"\x05\x00\x00\x01\x64\x40\x00\x01\x9c\x40"),
        (("fd7a:115c:a1e0::1", 443),
         b"\x05\x00\x00\x04" + bytes.fromhex("fd7a115ca1e000000000000000000001") + b"\x01\xbb"),
    ],
)
def test_success_reply_carries_the_bound_address(bound, wire):
    server, _, _ = run([GREETING + REQ_V4])
    server.reply(0, bound)
    assert server.data_to_send() == wire


@pytest.mark.parametrize("code", [1, 2, 3, 4, 5, 6])
def test_failure_replies(code):
    server, _, _ = run([GREETING + REQ_NAME])
    server.reply(code)
    assert server.data_to_send() == bytes([5, code, 0, 1, 0, 0, 0, 0, 0, 0])
    assert server.state is State.CLOSED
    assert server.receive_data(b"more") == [] and server.data_to_send() == b""
    with pytest.raises(RuntimeError):
        server.leftover()


def test_early_data_pipelined_with_the_request_and_while_pending():
    server, events, out = run([GREETING + REQ_NAME + b"GET / HTTP/1.1\r\n", b"Host: x\r\n\r\n"])
    assert len(events) == 1 and out == SELECT
    server.reply(0)
    assert server.leftover() == b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    assert server.leftover() == b""  # handed out once


def test_early_data_bytewise():
    early = b"\x16\x03\x01 tls client hello"
    server, events, _ = run(bytewise(GREETING + REQ_V4 + early))
    assert len(events) == 1
    server.reply(0)
    assert server.leftover() == early


def test_eof_after_the_request_is_remembered():
    server, events, _ = run([GREETING + REQ_V4 + b"last words", b""])
    assert len(events) == 1 and server.eof_received
    server.reply(0)
    assert server.leftover() == b"last words"


def test_early_data_pipelined_beyond_the_bound():
    server = Socks5Server(max_early_data=64)
    assert server.receive_data(GREETING + REQ_V4 + b"x" * 65) == [ProtocolError("early_data_overflow")]
    assert server.data_to_send() == SELECT + bytes([5, 1, 0, 1, 0, 0, 0, 0, 0, 0])
    assert server.state is State.CLOSED


def test_early_data_overflow_while_pending():
    server = Socks5Server(max_early_data=10)
    assert len(server.receive_data(GREETING + REQ_V4)) == 1
    assert server.receive_data(b"x" * 10) == []
    assert server.receive_data(b"y") == [ProtocolError("early_data_overflow")]
    assert server.data_to_send() == SELECT + bytes([5, 1, 0, 1, 0, 0, 0, 0, 0, 0])
    assert server.state is State.CLOSED


NO_METHOD = b"\x05\xff"
GENERAL = bytes([5, 1, 0, 1, 0, 0, 0, 0, 0, 0])


@pytest.mark.parametrize(
    ("wire", "reason", "reply"),
    [
        (b"\x04\x01\x00\x50\x7f\x00\x00\x01\x00", "bad_version", NO_METHOD),  # a SOCKS4 client
        (b"GET / HTTP/1.1\r\n", "bad_version", NO_METHOD),
        (b"\x05\x00", "no_methods", NO_METHOD),
        (b"\x05\x02\x02\x01", "no_acceptable_method", NO_METHOD),  # user/pass, GSSAPI only
        (GREETING + b"\x04\x01\x00\x01", "bad_request_version", SELECT + GENERAL),
        (GREETING + b"\x05\x02\x00\x01\x7f\x00\x00\x01\x00\x50", "command_not_supported",
         SELECT + bytes([5, 7, 0, 1, 0, 0, 0, 0, 0, 0])),  # BIND
        (GREETING + b"\x05\x03", "command_not_supported", SELECT + bytes([5, 7, 0, 1, 0, 0, 0, 0, 0, 0])),  # UDP
        (GREETING + b"\x05\x09", "command_not_supported", SELECT + bytes([5, 7, 0, 1, 0, 0, 0, 0, 0, 0])),
        (GREETING + b"\x05\x01\x01\x01", "bad_reserved", SELECT + GENERAL),
        (GREETING + b"\x05\x01\x00\x02\x00", "address_type_not_supported",
         SELECT + bytes([5, 8, 0, 1, 0, 0, 0, 0, 0, 0])),
        (GREETING + b"\x05\x01\x00\x03\x00\x00\x50", "empty_domain", SELECT + GENERAL),
        (GREETING + b"\x05\x01\x00\x03\x05pe\x00r1\x00\x50", "bad_domain", SELECT + GENERAL),
        (GREETING + b"\x05\x01\x00\x03\x05p\xc3\xa9r1\x00\x50", "bad_domain", SELECT + GENERAL),
        (GREETING + b"\x05\x01\x00\x03\x03a b\x00\x50", "bad_domain", SELECT + GENERAL),
        (GREETING + b"\x05\x01\x00\x03\xff" + b"a" * 255 + b"\x00\x50", "bad_domain", SELECT + GENERAL),  # > 253
        (GREETING + b"\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x00", "zero_port", SELECT + GENERAL),
    ],
)
@pytest.mark.parametrize("bytewise_feed", [False, True])
def test_garbage_is_a_protocol_error_with_its_reply(wire, reason, reply, bytewise_feed):
    server, events, out = run(bytewise(wire) if bytewise_feed else [wire])
    assert [type(e) for e in events] == [ProtocolError] and events[0].reason == reason
    assert out == reply
    assert server.state is State.CLOSED
    assert server.receive_data(b"\x05\x01\x00") == []  # ignored once closed
    with pytest.raises(RuntimeError):
        server.reply(0)


def test_a_longest_valid_domain_passes():
    name = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])  # 253 characters
    _, events, _ = run([GREETING + b"\x05\x01\x00\x03" + bytes([len(name)]) + name.encode() + b"\x00\x50"])
    assert events == [ConnectRequest(name, 80, AddressType.DOMAIN)]


@pytest.mark.parametrize("cut", [1, 2, 3, 5, 9, len(GREETING + REQ_NAME) - 1])
def test_truncated_input_waits_then_eof_is_an_error(cut):
    server, events, _ = run([(GREETING + REQ_NAME)[:cut]])
    assert events == []
    assert server.receive_data(b"") == [ProtocolError("eof_before_request")]
    assert server.state is State.CLOSED


def test_buffering_before_the_request_is_bounded():
    """The largest incomplete greeting + request never holds more than 1 KiB."""
    server = Socks5Server()
    server.receive_data(b"\x05\xff" + bytes(range(1, 255)))  # incomplete: 254 of 255 methods
    assert len(server._buf) < 1024
    server.receive_data(b"\x00" + b"\x05\x01\x00\x03\xff" + b"a" * 254)  # incomplete 255-byte name
    assert server.state is State.REQUEST and len(server._buf) < 1024


def test_api_misuse_is_our_bug():
    server = Socks5Server()
    with pytest.raises(RuntimeError):
        server.reply(0)
    server.receive_data(GREETING + REQ_V4)
    with pytest.raises(RuntimeError):
        server.leftover()
    server.reply(0)
    with pytest.raises(RuntimeError):
        server.receive_data(b"more")
    with pytest.raises(RuntimeError):
        server.reply(0)
    with pytest.raises(ValueError):
        encode_reply(0, ("not-an-ip", 1))
