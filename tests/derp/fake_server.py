"""A test-only DERP server core, sans-IO, written from ts:derp/derpserver (accept, login,
relay), to wire `DerpClientCore`s back to back without a network.

Per connection: ServerKey at once; the first client frame must be ClientInfo, whose box is
opened with the server key and the key the client claims (so a box sealed with any other
key fails here as it would in the real server); then ServerInfo, sealed to that key. After
login SendPacket is relayed as RecvPacket to the destination's connection (or answered with
PeerGone "not here"), Ping is answered with Pong, NotePreferred is recorded.
"""

from __future__ import annotations

import json
import struct

from nacl.public import Box, PrivateKey, PublicKey

from sunbeam.shared.proto.derp import KEY_LEN, MAGIC, FrameDecoder, FrameType, encode_frame


class FakeConn:
    def __init__(self, server: FakeDerpServer) -> None:
        self.server = server
        self.decoder = FrameDecoder()
        self.out = bytearray(encode_frame(FrameType.SERVER_KEY, MAGIC + server.public_key))
        self.client_key: bytes | None = None
        self.client_info: dict | None = None
        self.preferred: list[bool] = []
        self.sent: list[tuple[bytes, bytes]] = []
        self.pongs: list[bytes] = []
        self.closed = False

    def data_to_send(self) -> bytes:
        out = bytes(self.out)
        self.out.clear()
        return out

    def receive_data(self, data: bytes) -> None:
        for t, b in self.decoder.feed(data):
            if self.client_key is None:
                self._login(t, b)
            elif t == FrameType.SEND_PACKET:
                self.sent.append((b[:KEY_LEN], b[KEY_LEN:]))
                self.server.relay(self.client_key, b[:KEY_LEN], b[KEY_LEN:])
            elif t == FrameType.NOTE_PREFERRED:
                self.preferred.append(b == b"\x01")
            elif t == FrameType.PING:
                self.out += encode_frame(FrameType.PONG, b)
            elif t == FrameType.PONG:
                self.pongs.append(b)
        assert self.decoder.error is None

    def _login(self, t: int, b: bytes) -> None:
        assert t == FrameType.CLIENT_INFO, f"first client frame is type {t}, not ClientInfo"
        key, sealed = b[:KEY_LEN], b[KEY_LEN:]
        box = Box(self.server.private, PublicKey(key))
        self.client_info = json.loads(box.decrypt(sealed))  # raises CryptoError for a wrong key
        self.client_key = key
        self.server.conns[key] = self
        info = json.dumps({"version": 2}, separators=(",", ":")).encode()
        self.out += encode_frame(FrameType.SERVER_INFO, bytes(box.encrypt(info, self.server.nonce())))

    def push(self, frame_type: int, payload: bytes = b"") -> None:
        self.out += encode_frame(frame_type, payload)


class FakeDerpServer:
    def __init__(self, private: bytes) -> None:
        self.private = PrivateKey(private)
        self.public_key = bytes(self.private.public_key)
        self.conns: dict[bytes, FakeConn] = {}
        self._nonce = 0

    def nonce(self) -> bytes:
        self._nonce += 1
        return struct.pack(">Q", self._nonce).rjust(24, b"\0")

    def accept(self) -> FakeConn:
        return FakeConn(self)

    def relay(self, src: bytes, dst: bytes, packet: bytes) -> None:
        conn = self.conns.get(dst)
        if conn is None:
            self.conns[src].push(FrameType.PEER_GONE, dst + b"\x01")
        else:
            conn.push(FrameType.RECV_PACKET, src + packet)
