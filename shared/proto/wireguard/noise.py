"""WireGuard's Noise_IKpsk2 handshake (whitepaper section 5.4.2-5.4.5; wireguard-go
``device/noise-protocol.go`` and ``noise-helpers.go``).

    HASH    BLAKE2s-256                   h, ck: 32 bytes
    KDFn    HKDF over HMAC-BLAKE2s        T0 = HMAC(ck, ikm); Ti = HMAC(T0, T(i-1) || i)
    DH      X25519                        an all-zero result (low-order point) is refused
    AEAD    ChaCha20-Poly1305             every handshake key is used once, nonce 0

    ck0 = HASH("Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s")
    h0  = HASH(ck0 || "WireGuard v1 zx2c4 Jason@zx2c4.com")

    initiation   -> e, es, s, ss   payload: TAI64N timestamp (12 bytes)
    response     <- e, ee, se, psk payload: empty
    keys         initiator: (send, recv) = KDF2(ck, ""); the responder swaps them

TAI64N: u64 big-endian (2^62 + 10 + unix seconds) || u32 big-endian nanoseconds, with the
low 24 bits of the nanoseconds cleared (wireguard-go's whitening), from the ``now`` given.

The functions here split each message into "compute" and "commit" halves so the device can
check replay / flood before touching state, and so ``open_initiation`` alone (mac1 already
checked by the caller) yields the initiator's static key without any state change.
The pre-shared key is 32 zero bytes (Tailscale uses none).
"""

from __future__ import annotations

from _blake2 import blake2s  # = hashlib.blake2s; hashlib and hmac would load OpenSSL's libcrypto
import math
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from .messages import INITIATION_LEN, MESSAGE_INITIATION, MESSAGE_RESPONSE, RESPONSE_LEN

CONSTRUCTION = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
IDENTIFIER = b"WireGuard v1 zx2c4 Jason@zx2c4.com"
KEY_LEN = 32
TAI64N_LEN = 12
TAI64_BASE = 0x400000000000000A
_WHITENER_MASK = 0xFFFFFF
_ZERO_NONCE = bytes(12)
ZERO_PSK = bytes(32)

# Handshake states (wireguard-go's handshakeState).
ZEROED = 0
INITIATION_CREATED = 1
INITIATION_CONSUMED = 2
RESPONSE_CREATED = 3
RESPONSE_CONSUMED = 4

_II = struct.Struct("<II")
_III = struct.Struct("<III")
_TAI = struct.Struct(">QI")


def hash_(*parts: bytes) -> bytes:
    h = blake2s()
    for p in parts:
        h.update(p)
    return h.digest()


_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


def _hmac(key: bytes, data: bytes) -> bytes:
    """HMAC-BLAKE2s (RFC 2104, 64-byte blocks): what ``hmac.digest(key, data, hashlib.blake2s)``
    computes, the same way (with a hash constructor it takes this pure-Python path too)."""
    if len(key) > 64:
        key = blake2s(key).digest()
    key = key.ljust(64, b"\0")
    inner = blake2s(key.translate(_IPAD) + data).digest()
    return blake2s(key.translate(_OPAD) + inner).digest()


def kdf1(ck: bytes, ikm: bytes) -> bytes:
    return _hmac(_hmac(ck, ikm), b"\x01")


def kdf2(ck: bytes, ikm: bytes) -> tuple[bytes, bytes]:
    prk = _hmac(ck, ikm)
    t0 = _hmac(prk, b"\x01")
    return t0, _hmac(prk, t0 + b"\x02")


def kdf3(ck: bytes, ikm: bytes) -> tuple[bytes, bytes, bytes]:
    prk = _hmac(ck, ikm)
    t0 = _hmac(prk, b"\x01")
    t1 = _hmac(prk, t0 + b"\x02")
    return t0, t1, _hmac(prk, t1 + b"\x03")


INITIAL_CK = hash_(CONSTRUCTION)
INITIAL_H = hash_(INITIAL_CK, IDENTIFIER)


def tai64n(now: float) -> bytes:
    secs = math.floor(now)
    nanos = min(int((now - secs) * 1e9), 999_999_999) & ~_WHITENER_MASK
    return _TAI.pack(TAI64_BASE + secs, nanos)


def public_key(private: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def dh(private: X25519PrivateKey, public: bytes) -> bytes | None:
    """X25519, or None for a low-order public key (all-zero shared secret)."""
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(bytes(public)))
    except ValueError:
        return None


def _seal(key: bytes, plaintext: bytes, ad: bytes) -> bytes:
    return ChaCha20Poly1305(key).encrypt(_ZERO_NONCE, plaintext, ad)


def _open(key: bytes, ciphertext: bytes, ad: bytes) -> bytes | None:
    try:
        return ChaCha20Poly1305(key).decrypt(_ZERO_NONCE, bytes(ciphertext), ad)
    except InvalidTag:
        return None


class StaticIdentity:
    """The device's own static key pair. Owned by the Device; immutable."""

    __slots__ = ("key", "private", "public")

    def __init__(self, private: bytes) -> None:
        if len(private) != KEY_LEN:
            raise ValueError("a WireGuard private key is 32 bytes")
        self.key = X25519PrivateKey.from_private_bytes(private)
        self.private = bytes(private)
        self.public = self.key.public_key().public_bytes_raw()


class Handshake:
    """One peer's handshake state (wireguard-go's ``Handshake``). Owned by that Peer."""

    __slots__ = (
        "ck",
        "h",
        "last_initiation_consumed",
        "last_sent",
        "last_timestamp",
        "local_ephemeral",
        "local_index",
        "psk",
        "remote_ephemeral",
        "remote_index",
        "remote_static",
        "state",
        "static_static",
    )

    def __init__(self, identity: StaticIdentity, remote_static: bytes) -> None:
        self.remote_static = remote_static
        # None when the peer's key is a low-order point: no handshake is possible.
        self.static_static = dh(identity.key, remote_static)
        self.psk = ZERO_PSK
        self.last_timestamp = bytes(TAI64N_LEN)
        self.last_initiation_consumed = -math.inf
        self.last_sent = -math.inf
        self.local_index: int | None = None
        self.clear()

    def clear(self) -> None:
        """Forget everything of a partial exchange (the caller frees ``local_index``)."""
        self.state = ZEROED
        self.h = self.ck = b""
        self.local_ephemeral: X25519PrivateKey | None = None
        self.remote_ephemeral = b""
        self.remote_index = 0
        self.local_index = None


def create_initiation(identity: StaticIdentity, hs: Handshake, ephemeral: bytes, now: float,
                      sender: int) -> bytearray | None:
    """Message 1 with zero macs; None if the peer's static key is unusable."""
    if hs.static_static is None:
        return None
    eph = X25519PrivateKey.from_private_bytes(ephemeral)
    epub = eph.public_key().public_bytes_raw()
    h = hash_(INITIAL_H, hs.remote_static)
    ck = kdf1(INITIAL_CK, epub)                       # -> e
    h = hash_(h, epub)
    es = dh(eph, hs.remote_static)                    # -> es
    if es is None:
        return None
    ck, key = kdf2(ck, es)
    enc_static = _seal(key, identity.public, h)       # -> s
    h = hash_(h, enc_static)
    ck, key = kdf2(ck, hs.static_static)              # -> ss
    enc_ts = _seal(key, tai64n(now), h)               # payload: timestamp
    h = hash_(h, enc_ts)
    msg = bytearray(INITIATION_LEN)
    _II.pack_into(msg, 0, MESSAGE_INITIATION, sender)
    msg[8:40] = epub
    msg[40:88] = enc_static
    msg[88:116] = enc_ts
    hs.h, hs.ck, hs.local_ephemeral = h, ck, eph
    hs.state = INITIATION_CREATED
    return msg


def open_initiation(identity: StaticIdentity, msg: bytes) -> tuple[bytes, bytes, bytes] | None:
    """The first half of consuming message 1: (ck, h, initiator's static key), or None."""
    epub = bytes(msg[8:40])
    h = hash_(hash_(INITIAL_H, identity.public), epub)
    ck = kdf1(INITIAL_CK, epub)                       # -> e
    es = dh(identity.key, epub)                       # -> es
    if es is None:
        return None
    ck, key = kdf2(ck, es)
    enc_static = bytes(msg[40:88])
    static = _open(key, enc_static, h)                # -> s
    if static is None:
        return None
    return ck, hash_(h, enc_static), static


def finish_initiation(hs: Handshake, ck: bytes, h: bytes, msg: bytes) -> tuple[bytes, bytes, bytes] | None:
    """The second half: (ck, h, TAI64N timestamp), or None. Changes nothing."""
    if hs.static_static is None:
        return None
    ck, key = kdf2(ck, hs.static_static)              # -> ss
    enc_ts = bytes(msg[88:116])
    ts = _open(key, enc_ts, h)
    if ts is None:
        return None
    return ck, hash_(h, enc_ts), ts


def commit_initiation(hs: Handshake, ck: bytes, h: bytes, msg: bytes, ts: bytes, now: float) -> None:
    hs.h, hs.ck = h, ck
    hs.remote_index = _II.unpack_from(msg, 0)[1]
    hs.remote_ephemeral = bytes(msg[8:40])
    hs.last_timestamp = max(hs.last_timestamp, ts)
    hs.last_initiation_consumed = max(hs.last_initiation_consumed, now)
    hs.state = INITIATION_CONSUMED


def create_response(hs: Handshake, ephemeral: bytes, sender: int) -> bytearray | None:
    """Message 2 with zero macs, after ``commit_initiation``; None on a bad ephemeral."""
    if hs.state != INITIATION_CONSUMED:
        raise RuntimeError("create_response needs a consumed initiation")
    eph = X25519PrivateKey.from_private_bytes(ephemeral)
    epub = eph.public_key().public_bytes_raw()
    h = hash_(hs.h, epub)                             # <- e
    ck = kdf1(hs.ck, epub)
    ee = dh(eph, hs.remote_ephemeral)                 # <- ee
    se = dh(eph, hs.remote_static)                    # <- se
    if ee is None or se is None:
        return None
    ck = kdf1(kdf1(ck, ee), se)
    ck, tau, key = kdf3(ck, hs.psk)                   # <- psk
    h = hash_(h, tau)
    empty = _seal(key, b"", h)
    h = hash_(h, empty)
    msg = bytearray(RESPONSE_LEN)
    _III.pack_into(msg, 0, MESSAGE_RESPONSE, sender, hs.remote_index)
    msg[12:44] = epub
    msg[44:60] = empty
    hs.h, hs.ck, hs.local_ephemeral = h, ck, eph
    hs.state = RESPONSE_CREATED
    return msg


def consume_response(identity: StaticIdentity, hs: Handshake, msg: bytes) -> bool:
    """Check message 2 against our initiation and, if it is authentic, commit it."""
    if hs.state != INITIATION_CREATED or hs.local_ephemeral is None:
        return False
    epub = bytes(msg[12:44])
    h = hash_(hs.h, epub)                             # <- e
    ck = kdf1(hs.ck, epub)
    ee = dh(hs.local_ephemeral, epub)                 # <- ee
    se = dh(identity.key, epub)                       # <- se
    if ee is None or se is None:
        return False
    ck = kdf1(kdf1(ck, ee), se)
    ck, tau, key = kdf3(ck, hs.psk)                   # <- psk
    h = hash_(h, tau)
    empty = bytes(msg[44:60])
    if _open(key, empty, h) is None:
        return False
    hs.h, hs.ck = hash_(h, empty), ck
    hs.remote_index = _III.unpack_from(msg, 0)[1]
    hs.state = RESPONSE_CONSUMED
    return True


def derive_keys(hs: Handshake) -> tuple[bytes, bytes, bool]:
    """(send key, receive key, is_initiator) from a finished handshake; zeroes it."""
    if hs.state == RESPONSE_CONSUMED:
        send, recv = kdf2(hs.ck, b"")
        initiator = True
    elif hs.state == RESPONSE_CREATED:
        recv, send = kdf2(hs.ck, b"")
        initiator = False
    else:
        raise RuntimeError(f"no keys to derive in handshake state {hs.state}")
    hs.h = hs.ck = b""
    hs.local_ephemeral = None
    hs.state = ZEROED
    return send, recv, initiator
