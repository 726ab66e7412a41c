"""Golden vectors: fixed keys, randomness and time give pinned bytes for an initiation, a
response and the first transport message; every one is also rebuilt independently with the
``noiseprotocol`` package (Noise_IKpsk2 with WireGuard's prologue and zero PSK) and with
hand-computed BLAKE2s MACs and ChaCha20-Poly1305 records."""

from __future__ import annotations

import hashlib
import struct
import warnings

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from noise.connection import Keypair, NoiseConnection
from sunbeam.shared.proto.wireguard import (
    MESSAGE_COOKIE_REPLY,
    MESSAGE_INITIATION,
    MESSAGE_RESPONSE,
    MESSAGE_TRANSPORT,
    Device,
    message_type,
    public_key,
    receiver_index,
)
from sunbeam.shared.sharding import worker_of_index

from .helpers import DetRandom, key
from .ippackets import icmp_echo

NOW = 1_700_000_000.25
A_PRIV, B_PRIV = key("A static"), key("B static")
A_PUB, B_PUB = public_key(A_PRIV), public_key(B_PRIV)
PING = icmp_echo("10.0.0.1", "10.0.0.2", ident=1, seq=1, payload=b"golden")  # 34 bytes

GOLDEN_INITIATION = (
    "01000000525c3b0138d209ae8a7faf4d2f6145d3b542a99bf35686cf51c7d48f"
    "8b51d38eb4a6a31210d2847a6499283694dbe2dd2fbd975e429ba59c740c9994"
    "1f29e78d9bb14c5bea3e5cd6676c77fd2a6fc7c31cd954dee896fbee4c1f58ba"
    "02c7bbba10d02414e39aca732709e684c9edaaaef7797b2c6f7a27f4a6b47232"
    "577b3a9e00000000000000000000000000000000"
)
GOLDEN_RESPONSE = (
    "020000006c231c02525c3b01845c4b501e8f7634c8b9aea4dba91cb338c97d15"
    "42416381ee61a8d7a83b06170314fff5bcabec1843d2f56028c842573e5ce023"
    "2f52511d3d4fc3cea4a9d72a00000000000000000000000000000000"
)
GOLDEN_TRANSPORT = (
    "040000006c231c020000000000000000862bde06f9b9611b2f60a7ea072eb514"
    "94f7a1f0d717de89ef64608db11a6ab9764dedf21174ba7893280468bfc9588e"
    "154efbf7f42e572433871eb60f11f3c9"
)


def _mac(k: bytes, data: bytes) -> bytes:
    return hashlib.blake2s(data, digest_size=16, key=k).digest()


def _tai64n(now: float) -> bytes:
    secs = int(now)
    nanos = round((now - secs) * 1e9) & ~0xFFFFFF
    return struct.pack(">QI", (1 << 62) + 10 + secs, nanos)


def _noise(initiator: bool, static: bytes, remote: bytes | None, ephemeral: bytes) -> NoiseConnection:
    c = NoiseConnection.from_name(b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s")
    c.set_as_initiator() if initiator else c.set_as_responder()
    c.set_prologue(b"WireGuard v1 zx2c4 Jason@zx2c4.com")
    c.set_psks(psk=bytes(32))
    c.set_keypair_from_private_bytes(Keypair.STATIC, static)
    if remote is not None:
        c.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, remote)
    c.set_keypair_from_private_bytes(Keypair.EPHEMERAL, ephemeral)
    with warnings.catch_warnings():  # "ephemeral preset: OK for testing" -- it is a test
        warnings.simplefilter("ignore", UserWarning)
        c.start_handshake()
    return c


def _run():
    ra, rb = DetRandom(b"A"), DetRandom(b"B")
    a = Device(private_key=A_PRIV, worker=1, random_bytes=ra)
    b = Device(private_key=B_PRIV, worker=2, random_bytes=rb)
    a.set_peer(B_PUB, ["10.0.0.2/32"])
    b.set_peer(A_PUB, ["10.0.0.1/32"])
    [init] = a.encapsulate(B_PUB, [PING], NOW)
    rb_res = b.decapsulate(init, NOW + 0.001)
    [resp] = rb_res.to_peer
    ra_res = a.decapsulate(resp, NOW + 0.002)
    [transport] = ra_res.to_peer
    got = b.decapsulate(transport, NOW + 0.003)
    assert got.to_tunnel == [PING] and got.peer_key == A_PUB
    eph_a = [d for d in ra.draws if len(d) == 32]
    eph_b = [d for d in rb.draws if len(d) == 32]
    return init, resp, transport, eph_a, eph_b


def test_pinned_bytes():
    init, resp, transport, _, _ = _run()
    assert init.hex() == GOLDEN_INITIATION
    assert resp.hex() == GOLDEN_RESPONSE
    assert transport.hex() == GOLDEN_TRANSPORT


def test_layouts_and_indices():
    init, resp, transport, _, _ = _run()
    assert (len(init), len(resp), len(transport)) == (148, 92, 16 + 48 + 16)  # 34 -> padded 48
    assert [message_type(m) for m in (init, resp, transport)] == [MESSAGE_INITIATION, MESSAGE_RESPONSE,
                                                                   MESSAGE_TRANSPORT]
    a_index = struct.unpack_from("<I", init, 4)[0]
    b_index, receiver = struct.unpack_from("<II", resp, 4)
    assert receiver == a_index and receiver_index(resp) == a_index
    assert worker_of_index(a_index) == 1 and worker_of_index(b_index) == 2
    assert receiver_index(transport) == b_index and receiver_index(init) is None
    assert struct.unpack_from("<Q", transport, 8)[0] == 0  # first counter
    assert MESSAGE_COOKIE_REPLY == 3


def test_macs_by_hand():
    init, resp, _, _, _ = _run()
    mac1_key_b = hashlib.blake2s(b"mac1----" + B_PUB).digest()
    mac1_key_a = hashlib.blake2s(b"mac1----" + A_PUB).digest()
    assert init[116:132] == _mac(mac1_key_b, init[:116])
    assert resp[60:76] == _mac(mac1_key_a, resp[:60])
    assert init[132:] == bytes(16) and resp[76:] == bytes(16)  # no cookie: mac2 is zero


def test_against_noiseprotocol_and_hand_computed_transport():
    init, resp, transport, eph_a, eph_b = _run()
    ni = _noise(True, A_PRIV, B_PUB, eph_a[0])
    nr = _noise(False, B_PRIV, None, eph_b[0])
    assert init[8:116] == ni.write_message(_tai64n(NOW))          # e, es, s, ss + timestamp
    assert nr.read_message(init[8:116]) == _tai64n(NOW)
    assert resp[12:60] == nr.write_message(b"")                    # e, ee, se, psk
    ni.read_message(resp[12:60])
    padded = PING + bytes(-len(PING) % 16)
    assert transport[16:] == ni.encrypt(padded)
    # The same record by hand: ChaCha20-Poly1305, nonce = 4 zero bytes || counter (u64 LE).
    k_send = ni.noise_protocol.cipher_state_encrypt.k
    nonce0 = bytes(4) + (0).to_bytes(8, "little")
    assert transport[16:] == ChaCha20Poly1305(k_send).encrypt(nonce0, padded, None)
    assert nr.decrypt(transport[16:]) == padded


def test_counter_nonces_by_hand():
    """Later transport messages use counters 1, 2, ... as their nonces."""
    ra, rb = DetRandom(b"A"), DetRandom(b"B")
    a = Device(private_key=A_PRIV, worker=1, random_bytes=ra)
    b = Device(private_key=B_PRIV, worker=2, random_bytes=rb)
    a.set_peer(B_PUB, ["10.0.0.2/32"])
    b.set_peer(A_PUB, ["10.0.0.1/32"])
    [init] = a.encapsulate(B_PUB, [PING], NOW)
    [resp] = b.decapsulate(init, NOW).to_peer
    a.decapsulate(resp, NOW)
    ni = _noise(True, A_PRIV, B_PUB, next(d for d in ra.draws if len(d) == 32))
    ni.write_message(_tai64n(NOW))
    ni.read_message(resp[12:60])
    k_send = ni.noise_protocol.cipher_state_encrypt.k
    packets = [icmp_echo("10.0.0.1", "10.0.0.2", 1, s, payload=bytes(s * 7)) for s in range(2, 6)]
    out = a.encapsulate(B_PUB, packets, NOW + 1)
    b_index = struct.unpack_from("<I", resp, 4)[0]
    for n, (pkt, msg) in enumerate(zip(packets, out), start=1):
        header = struct.pack("<IIQ", 4, b_index, n)
        nonce = bytes(4) + struct.pack("<Q", n)
        body = ChaCha20Poly1305(k_send).encrypt(nonce, pkt + bytes(-len(pkt) % 16), None)
        assert msg == header + body
