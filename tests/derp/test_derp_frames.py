"""DERP framing: golden bytes from the real upstream code, and the decoder fed whole, one
byte at a time, and with trailing data.

The golden ClientInfo / ServerInfo / ServerKey frames were produced by a Go program built
against tailscale.com v1.98.10 (``derp.WriteFrame``, ``json.Marshal(derp.ClientInfo{...})``,
``golang.org/x/crypto/nacl/box.Seal``) with the keys and nonces below, so they pin our
layout to upstream's, not to our own code.
"""

from __future__ import annotations

import pytest

from sunbeam.shared.proto.derp import (
    MAX_FRAME_LEN,
    MAX_PACKET_SIZE,
    FrameDecoder,
    FrameTooLarge,
    FrameType,
    encode_frame,
)
from sunbeam.shared.proto.derp.frames import note_preferred_frame, ping_frame, pong_frame, send_packet_frame

NODE_PRIVATE = bytes(i + 1 for i in range(32))
NODE_PUBLIC = bytes.fromhex("07a37cbc142093c8b755dc1b10e86cb426374ad16aa853ed0bdfc0b2b86d1c7c")
SERVER_PRIVATE = bytes(0x41 + i for i in range(32))
SERVER_PUBLIC = bytes.fromhex("64b101b1d0be5a8704bd078f9895001fc03e8e9f9522f188dd128d9846d48466")
CLIENT_INFO_NONCE = bytes(0xA0 + i for i in range(24))

# Go: derp.WriteFrame(bw, derp.FrameServerKey, append([]byte(derp.Magic), serverPub...))
GOLDEN_SERVER_KEY = bytes.fromhex(
    "0100000028" "44455250f09f9491"
    "64b101b1d0be5a8704bd078f9895001fc03e8e9f9522f188dd128d9846d48466")
# Go: nodePub | box.Seal(nonce, `{"version":2,"CanAckPings":true}`, nonce, serverPub, nodePriv)
GOLDEN_CLIENT_INFO = bytes.fromhex(
    "0200000068"
    "07a37cbc142093c8b755dc1b10e86cb426374ad16aa853ed0bdfc0b2b86d1c7c"
    "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7"
    "6cffec82736cd2129b825def91dab6667dfbbfe74feceee2842379acdf7acb5bb387740e0e27b6d3d9ab25945f3ffc3f")
# Go: derpserver's sendServerInfo with nonce 10..27: box.Seal(`{"version":2}`) server -> node
GOLDEN_SERVER_INFO = bytes.fromhex(
    "0300000035"
    "101112131415161718191a1b1c1d1e1f2021222324252627"
    "59cd4cd4747bfe0baf229f8481d618404dec7dce278cfb824c4ca54c7b")

DST = bytes(range(0xC0, 0xE0))


def test_send_packet_golden():
    assert send_packet_frame(DST, b"hello") == bytes.fromhex("0400000025") + DST + b"hello"


def test_recv_packet_layout_golden():
    assert encode_frame(FrameType.RECV_PACKET, DST + b"\x01\x02") == b"\x05\x00\x00\x00\x22" + DST + b"\x01\x02"


def test_ping_pong_note_preferred_keepalive_golden():
    assert ping_frame(b"12345678") == b"\x12\x00\x00\x00\x0812345678"
    assert pong_frame(b"abcdefgh") == b"\x13\x00\x00\x00\x08abcdefgh"
    assert note_preferred_frame(True) == b"\x07\x00\x00\x00\x01\x01"
    assert note_preferred_frame(False) == b"\x07\x00\x00\x00\x01\x00"
    assert encode_frame(FrameType.KEEP_ALIVE) == b"\x06\x00\x00\x00\x00"


def test_frame_types_match_upstream():
    assert {t.name: t.value for t in FrameType} == {
        "SERVER_KEY": 1, "CLIENT_INFO": 2, "SERVER_INFO": 3, "SEND_PACKET": 4, "RECV_PACKET": 5, "KEEP_ALIVE": 6,
        "NOTE_PREFERRED": 7, "PEER_GONE": 8, "PEER_PRESENT": 9, "FORWARD_PACKET": 10, "WATCH_CONNS": 0x10,
        "CLOSE_PEER": 0x11, "PING": 0x12, "PONG": 0x13, "HEALTH": 0x14, "RESTARTING": 0x15}


def test_our_own_misuse_raises():
    with pytest.raises(ValueError):
        send_packet_frame(DST[:31], b"x")
    with pytest.raises(ValueError):
        send_packet_frame(DST, bytes(MAX_PACKET_SIZE + 1))
    with pytest.raises(ValueError):
        ping_frame(b"short")
    assert len(send_packet_frame(DST, bytes(MAX_PACKET_SIZE))) == 5 + 32 + MAX_PACKET_SIZE


STREAM = GOLDEN_SERVER_KEY + GOLDEN_SERVER_INFO + encode_frame(FrameType.KEEP_ALIVE) + \
    encode_frame(FrameType.RECV_PACKET, DST + bytes(1400))
EXPECTED = [(1, GOLDEN_SERVER_KEY[5:]), (3, GOLDEN_SERVER_INFO[5:]), (6, b""), (5, DST + bytes(1400))]


def test_decoder_whole():
    d = FrameDecoder()
    assert d.feed(STREAM) == EXPECTED
    assert d.buffered == 0


def test_decoder_byte_at_a_time():
    d = FrameDecoder()
    got = []
    for i in range(len(STREAM)):
        got += d.feed(STREAM[i:i + 1])
    assert got == EXPECTED and d.buffered == 0


def test_decoder_trailing_partial_frame_waits():
    d = FrameDecoder()
    tail = encode_frame(FrameType.RECV_PACKET, DST + b"abc")
    assert d.feed(STREAM + tail[:7]) == EXPECTED
    assert d.buffered == 7
    assert d.feed(tail[7:]) == [(5, DST + b"abc")]


def test_decoder_max_size_accepted():
    frame = encode_frame(FrameType.RECV_PACKET, DST + bytes(MAX_PACKET_SIZE))
    assert FrameDecoder().feed(frame) == [(5, DST + bytes(MAX_PACKET_SIZE))]
    assert FrameDecoder().feed(b"\x42" + MAX_FRAME_LEN.to_bytes(4, "big")) == []  # waits for the body


def test_decoder_oversize_is_fatal_but_keeps_earlier_frames():
    d = FrameDecoder()
    bad = b"\x05" + (MAX_FRAME_LEN + 1).to_bytes(4, "big")
    assert d.feed(GOLDEN_SERVER_KEY + bad) == [(1, GOLDEN_SERVER_KEY[5:])]
    assert isinstance(d.error, FrameTooLarge)
    assert d.feed(GOLDEN_SERVER_KEY) == []  # the stream is lost: nothing more is parsed


def test_decoder_oversize_detected_from_header_alone():
    d = FrameDecoder()
    assert d.feed(b"\x05\xff\xff") == [] and d.error is None
    assert d.feed(b"\xff\xff") == [] and isinstance(d.error, FrameTooLarge)
