"""`DerpClientCore`: login against upstream's golden frames, the HTTP upgrade without losing
the first frame, every server message, and two cores relaying through a test server."""

from __future__ import annotations

import json

import nacl.exceptions
import pytest
from nacl.public import Box, PrivateKey, PublicKey
from sunbeam.shared.proto.derp import (
    MAX_EARLY_BYTES,
    MAX_FRAME_LEN,
    Closed,
    Connected,
    DerpClientCore,
    Dropped,
    FrameType,
    Health,
    KeepAlive,
    PeerGone,
    PeerPresent,
    Phase,
    Ping,
    Pong,
    Received,
    Restarting,
    encode_frame,
)

from .fake_server import FakeDerpServer
from .test_derp_frames import (
    CLIENT_INFO_NONCE,
    DST,
    GOLDEN_CLIENT_INFO,
    GOLDEN_SERVER_INFO,
    GOLDEN_SERVER_KEY,
    NODE_PRIVATE,
    NODE_PUBLIC,
    SERVER_PRIVATE,
    SERVER_PUBLIC,
)

UPGRADE_101 = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n"
               b"Derp-Version: 2\r\nDerp-Public-Key: nodekey:" + SERVER_PUBLIC.hex().encode() + b"\r\n\r\n")


def core(**kw) -> DerpClientCore:
    return DerpClientCore(NODE_PRIVATE, nonce=CLIENT_INFO_NONCE, **kw)


def connected_core() -> DerpClientCore:
    c = core()
    assert c.receive_data(GOLDEN_SERVER_KEY + GOLDEN_SERVER_INFO) == [Connected(SERVER_PUBLIC, 2)]
    c.data_to_send()
    return c


def test_public_key_is_the_node_key():
    assert core().public_key == NODE_PUBLIC


def test_login_matches_upstream_bytes():
    c = core()
    assert c.receive_data(GOLDEN_SERVER_KEY) == []
    assert c.data_to_send() == GOLDEN_CLIENT_INFO  # sealed with the long-term node key
    assert c.receive_data(GOLDEN_SERVER_INFO) == [Connected(SERVER_PUBLIC, 2)]
    assert c.connected and c.server_key == SERVER_PUBLIC


def test_client_info_opens_with_the_node_key_and_says_version_2():
    c = core(can_ack_pings=False)
    c.receive_data(GOLDEN_SERVER_KEY)
    frame = c.data_to_send()
    assert frame[:1] == b"\x02" and int.from_bytes(frame[1:5], "big") == len(frame) - 5
    claimed, sealed = frame[5:37], frame[37:]
    assert claimed == NODE_PUBLIC
    assert sealed[:24] == CLIENT_INFO_NONCE
    info = json.loads(Box(PrivateKey(SERVER_PRIVATE), PublicKey(NODE_PUBLIC)).decrypt(sealed))
    assert info == {"version": 2, "CanAckPings": False}


def test_upgrade_request():
    c = core()
    req = c.upgrade_request("derp.example.com")
    assert req == b"GET /derp HTTP/1.1\r\nHost: derp.example.com\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n"
    assert c.phase is Phase.UPGRADE
    with pytest.raises(RuntimeError):
        c.upgrade_request("again")


@pytest.mark.parametrize("chunk", [None, 1, 7, 100])
def test_upgrade_response_and_first_frames_in_one_segment(chunk):
    """Headscale writes the 101 head and the ServerKey frame back to back; the frame must
    not be swallowed with the HTTP head (the original client's bug)."""
    c = core()
    c.upgrade_request("127.0.0.1")
    stream = UPGRADE_101 + GOLDEN_SERVER_KEY + GOLDEN_SERVER_INFO + encode_frame(FrameType.RECV_PACKET, DST + b"p")
    pieces = [stream] if chunk is None else [stream[i:i + chunk] for i in range(0, len(stream), chunk)]
    events = [ev for piece in pieces for ev in c.receive_data(piece)]
    assert events == [Connected(SERVER_PUBLIC, 2), Received(DST, b"p")]
    assert c.data_to_send() == GOLDEN_CLIENT_INFO


def test_upgrade_refused():
    c = core()
    c.upgrade_request("h")
    body = b"DERP requires connection upgrade"
    events = c.receive_data(b"HTTP/1.1 426 Upgrade Required\r\nContent-Type: text/plain\r\nContent-Length: "
                            + str(len(body)).encode() + b"\r\n\r\n" + body)
    assert events == [Closed("server refused the DERP upgrade: HTTP 426 Upgrade Required "
                              "(body: 'DERP requires connection upgrade')")]
    assert c.closed and c.receive_data(b"more") == []


def test_upgrade_eof_and_garbage():
    c = core()
    c.upgrade_request("h")
    assert isinstance(c.receive_data(b"")[0], Closed)
    c = core()
    c.upgrade_request("h")
    assert isinstance(c.receive_data(b"\x00\x01garbage\r\n\r\n")[0], Closed)


def test_bad_greeting_closes():
    assert core().receive_data(encode_frame(FrameType.RECV_PACKET, DST))[0].reason.startswith("invalid server greeting")
    assert isinstance(core().receive_data(encode_frame(FrameType.SERVER_KEY, b"DERP!!!!" + SERVER_PUBLIC))[0], Closed)
    assert isinstance(core().receive_data(encode_frame(FrameType.SERVER_KEY, GOLDEN_SERVER_KEY[5:25]))[0], Closed)
    # an all-zero server key cannot make a box
    assert "unusable server key" in core().receive_data(encode_frame(1, GOLDEN_SERVER_KEY[5:13] + bytes(32)))[0].reason


def test_server_key_with_future_bytes_is_accepted():
    c = core()
    c.receive_data(encode_frame(FrameType.SERVER_KEY, GOLDEN_SERVER_KEY[5:] + b"future"))
    assert c.data_to_send() == GOLDEN_CLIENT_INFO


def test_server_info_that_does_not_open_closes():
    c = core()
    c.receive_data(GOLDEN_SERVER_KEY)
    broken = bytearray(GOLDEN_SERVER_INFO)
    broken[-1] ^= 1
    assert c.receive_data(bytes(broken))[0].reason.startswith("ServerInfo box does not open")
    c = core()
    c.receive_data(GOLDEN_SERVER_KEY)
    assert c.receive_data(encode_frame(FrameType.SERVER_INFO, b"x" * 10))[0].reason.startswith("short ServerInfo")


def test_server_info_not_json_closes():
    c = core()
    c.receive_data(GOLDEN_SERVER_KEY)
    box = Box(PrivateKey(SERVER_PRIVATE), PublicKey(NODE_PUBLIC))
    assert c.receive_data(encode_frame(3, bytes(box.encrypt(b"{nope", bytes(24)))))[0] == Closed("ServerInfo is not JSON")


def test_server_info_rate_fields():
    c = core()
    c.receive_data(GOLDEN_SERVER_KEY)
    box = Box(PrivateKey(SERVER_PRIVATE), PublicKey(NODE_PUBLIC))
    info = b'{"version":2,"TokenBucketBytesPerSecond":1000,"TokenBucketBytesBurst":"x"}'
    assert c.receive_data(encode_frame(3, bytes(box.encrypt(info, bytes(24))))) == [Connected(SERVER_PUBLIC, 2, 1000, 0)]


def test_every_server_message():
    c = connected_core()
    ip = bytes(10) + b"\xff\xff" + bytes([192, 0, 2, 7])
    frames = [
        (FrameType.RECV_PACKET, DST + b"wg", Received(DST, b"wg")),
        (FrameType.RECV_PACKET, DST, Received(DST, b"")),
        (FrameType.KEEP_ALIVE, b"", KeepAlive()),
        (FrameType.PING, b"pingpong", Ping(b"pingpong")),
        (FrameType.PONG, b"12345678", Pong(b"12345678")),
        (FrameType.PEER_GONE, DST, PeerGone(DST, 0)),
        (FrameType.PEER_GONE, DST + b"\x01", PeerGone(DST, 1)),
        (FrameType.PEER_PRESENT, DST, PeerPresent(DST)),
        (FrameType.PEER_PRESENT, DST + ip + b"\x1f\x90", PeerPresent(DST, "192.0.2.7:8080", 0)),
        (FrameType.PEER_PRESENT, DST + bytes(15) + b"\x01" + b"\x00\x50\x09", PeerPresent(DST, "[::1]:80", 9)),
        (FrameType.HEALTH, "duplicate — client".encode(), Health("duplicate — client")),
        (FrameType.HEALTH, b"", Health("")),
        (FrameType.RESTARTING, (1500).to_bytes(4, "big") + (30000).to_bytes(4, "big"), Restarting(1.5, 30.0)),
    ]
    for t, payload, expected in frames:
        assert c.receive_data(encode_frame(t, payload)) == [expected]
    assert c.data_to_send() == encode_frame(FrameType.PONG, b"pingpong")  # the Ping was answered
    assert c.skipped == 0


def test_malformed_known_frames_are_dropped_not_fatal():
    c = connected_core()
    for t, payload in [(FrameType.RECV_PACKET, DST[:31]), (FrameType.PING, b"short"), (FrameType.PONG, b""),
                       (FrameType.PEER_GONE, b"x"), (FrameType.PEER_PRESENT, b"x"), (FrameType.RESTARTING, b"1234")]:
        [ev] = c.receive_data(encode_frame(t, payload))
        assert isinstance(ev, Dropped) and ev.frame_type == t
    assert c.receive_data(encode_frame(FrameType.RECV_PACKET, DST + b"ok")) == [Received(DST, b"ok")]
    assert c.data_to_send() == b""  # no pong for a short ping


def test_unknown_and_unexpected_frames_are_skipped():
    c = connected_core()
    stream = (encode_frame(0x7F, b"future") + encode_frame(FrameType.FORWARD_PACKET, DST + DST + b"x")
              + encode_frame(FrameType.SERVER_KEY, GOLDEN_SERVER_KEY[5:]) + GOLDEN_SERVER_INFO
              + encode_frame(FrameType.RECV_PACKET, DST + b"after"))
    assert c.receive_data(stream) == [Received(DST, b"after")]
    assert c.skipped == 4 and c.connected


def test_oversize_frame_closes_after_delivering_earlier_events():
    c = connected_core()
    events = c.receive_data(encode_frame(FrameType.KEEP_ALIVE) + b"\x05" + (MAX_FRAME_LEN + 1).to_bytes(4, "big"))
    assert events[0] == KeepAlive() and isinstance(events[1], Closed) and "announces" in events[1].reason
    assert c.receive_data(encode_frame(FrameType.KEEP_ALIVE)) == []


def test_eof_closes():
    c = connected_core()
    assert c.receive_data(b"") == [Closed("server closed the connection")]
    c.send_packet(DST, b"late")
    assert c.data_to_send() == b"" and c.dropped == 1


def test_frames_queued_before_login_follow_client_info():
    c = core()
    c.note_preferred(True)
    c.send_packet(DST, b"early")
    assert c.data_to_send() == b"" and c.bytes_queued > 0
    c.receive_data(GOLDEN_SERVER_KEY)
    assert c.data_to_send() == (GOLDEN_CLIENT_INFO + b"\x07\x00\x00\x00\x01\x01"
                                + b"\x04\x00\x00\x00\x25" + DST + b"early")
    # like upstream, frames go out before ServerInfo arrives
    c.ping(b"abcdefgh")
    assert c.data_to_send() == b"\x12\x00\x00\x00\x08abcdefgh"


def test_early_buffer_is_bounded():
    c = core()
    sent = 0
    while c.dropped == 0:
        c.send_packet(DST, bytes(1000))
        sent += 1
    assert c.bytes_queued <= MAX_EARLY_BYTES and sent * 1037 > MAX_EARLY_BYTES


def test_two_cores_relay_through_a_server():
    server = FakeDerpServer(SERVER_PRIVATE)
    a, b = DerpClientCore(NODE_PRIVATE, nonce=bytes(24)), DerpClientCore(bytes(range(100, 132)), nonce=bytes(24))
    conns = {a: server.accept(), b: server.accept()}
    events: dict[DerpClientCore, list] = {a: [], b: []}

    def pump() -> None:
        for _ in range(4):
            for cl, sc in conns.items():
                sc.receive_data(cl.data_to_send())
                data = sc.data_to_send()
                if data:  # b"" would mean EOF
                    events[cl] += cl.receive_data(data)

    a.note_preferred(True)
    pump()
    assert events[a] == [Connected(server.public_key, 2)] and events[b] == [Connected(server.public_key, 2)]
    assert conns[a].client_key == a.public_key and conns[b].client_key == b.public_key
    assert conns[a].client_info == {"version": 2, "CanAckPings": True}
    assert conns[a].preferred == [True]
    a.send_packet(b.public_key, b"\x04" * 100)
    b.send_packet(a.public_key, b"TS\xf0\x9f\x92\xac disco")
    a.send_packet(DST, b"nobody")
    a.ping(b"\x01" * 8)
    pump()
    assert Received(a.public_key, b"\x04" * 100) in events[b]
    assert Received(b.public_key, b"TS\xf0\x9f\x92\xac disco") in events[a]
    assert PeerGone(DST, 1) in events[a]
    assert Pong(b"\x01" * 8) in events[a]


def test_client_info_sealed_with_another_key_fails_at_the_server():
    """What the original client did wrong: a box from a key other than the claimed node key."""
    server = FakeDerpServer(SERVER_PRIVATE)
    conn = server.accept()
    c = core()
    c.receive_data(conn.data_to_send())
    frame = bytearray(c.data_to_send())
    frame[5:37] = bytes(PrivateKey(bytes(range(32))).public_key)  # claim another key
    with pytest.raises(nacl.exceptions.CryptoError):
        conn.receive_data(bytes(frame))
