"""mac1, mac2 and cookie replies: WireGuard's DoS mitigation (whitepaper section 5.4.4 and
5.4.7; wireguard-go ``device/cookie.go``).

Every handshake message (types 1 and 2) ends in two 16-byte MACs::

    mac1 = MAC(HASH("mac1----" || receiver's static public), msg[: -32])
    mac2 = MAC(cookie, msg[: -16])      (16 zero bytes when we hold no fresh cookie)
    MAC(key, x) = keyed BLAKE2s-128

mac1 is always checked (it proves the sender knows our public key). Under load, a message
without a valid mac2 is not processed; the sender gets a cookie reply instead::

    cookie    = MAC(secret, source address bytes)     secret: 32 random bytes, renewed
                                                      every COOKIE_REFRESH_TIME (120 s)
    reply     = type 3 || receiver index || nonce(24) || XChaCha20-Poly1305(
                    key = HASH("cookie--" || the replier's static public),
                    nonce, plaintext = cookie, ad = the mac1 of the message answered)

A cookie received is usable for mac2 for COOKIE_REFRESH_TIME. XChaCha20-Poly1305 comes from
libsodium (PyNaCl): ``cryptography`` has no XChaCha, and only cookie replies need it.
"""

from __future__ import annotations

from _blake2 import blake2s  # = hashlib.blake2s; hashlib and hmac would load OpenSSL's libcrypto
from _operator import _compare_digest as compare_digest  # = hmac.compare_digest
import math
import struct
from collections.abc import Callable

from .messages import MESSAGE_COOKIE_REPLY

LABEL_MAC1 = b"mac1----"
LABEL_COOKIE = b"cookie--"
COOKIE_REFRESH_TIME = 120.0
MAC_LEN = 16
COOKIE_NONCE_LEN = 24

_II = struct.Struct("<II")


def _hash(*parts: bytes) -> bytes:
    h = blake2s()
    for p in parts:
        h.update(p)
    return h.digest()


def mac(key: bytes, data: bytes) -> bytes:
    return blake2s(data, digest_size=MAC_LEN, key=key).digest()


def mac1_key(public: bytes) -> bytes:
    return _hash(LABEL_MAC1, public)


def cookie_key(public: bytes) -> bytes:
    return _hash(LABEL_COOKIE, public)


class CookieChecker:
    """Our side: checks the macs of handshake messages sent to us; makes cookie replies.
    Owned by the Device (one per worker)."""

    __slots__ = ("encryption_key", "mac1_key", "secret", "secret_set")

    def __init__(self, public: bytes) -> None:
        self.mac1_key = mac1_key(public)
        self.encryption_key = cookie_key(public)
        self.secret = b""
        self.secret_set = -math.inf

    def check_mac1(self, msg: bytes) -> bool:
        return compare_digest(mac(self.mac1_key, msg[:-32]), msg[-32:-16])

    def check_mac2(self, msg: bytes, src: bytes, now: float) -> bool:
        if now - self.secret_set > COOKIE_REFRESH_TIME:
            return False
        cookie = mac(self.secret, src)
        return compare_digest(mac(cookie, msg[:-16]), msg[-16:])

    def create_reply(self, msg: bytes, receiver: int, src: bytes, now: float,
                     random_bytes: Callable[[int], bytes]) -> bytes:
        if now - self.secret_set > COOKIE_REFRESH_TIME:
            self.secret = random_bytes(32)
            self.secret_set = now
        cookie = mac(self.secret, src)
        nonce = random_bytes(COOKIE_NONCE_LEN)
        # imported here: cookie replies are rare (under load only) and PyNaCl costs every
        # worker process ~1 MB it would otherwise never use
        from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_encrypt

        sealed = crypto_aead_xchacha20poly1305_ietf_encrypt(cookie, bytes(msg[-32:-16]), nonce,
                                                            self.encryption_key)
        return _II.pack(MESSAGE_COOKIE_REPLY, receiver) + nonce + sealed


class CookieGenerator:
    """Their side: the macs we put on handshake messages for one peer, and the cookie that
    peer gave us. Owned by that Peer."""

    __slots__ = ("cookie", "cookie_set", "encryption_key", "last_mac1", "mac1_key")

    def __init__(self, peer_public: bytes) -> None:
        self.mac1_key = mac1_key(peer_public)
        self.encryption_key = cookie_key(peer_public)
        self.cookie = b""
        self.cookie_set = -math.inf
        self.last_mac1: bytes | None = None

    def add_macs(self, msg: bytearray, now: float) -> None:
        m1 = mac(self.mac1_key, bytes(msg[:-32]))
        msg[-32:-16] = m1
        self.last_mac1 = m1
        if now - self.cookie_set <= COOKIE_REFRESH_TIME:
            msg[-16:] = mac(self.cookie, bytes(msg[:-16]))
        else:
            msg[-16:] = bytes(MAC_LEN)

    def consume_reply(self, msg: bytes, now: float) -> bool:
        if self.last_mac1 is None:
            return False
        from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_decrypt
        from nacl.exceptions import CryptoError

        try:
            cookie = crypto_aead_xchacha20poly1305_ietf_decrypt(
                bytes(msg[32:64]), self.last_mac1, bytes(msg[8:32]), self.encryption_key)
        except CryptoError:
            return False
        self.cookie = cookie
        self.cookie_set = now
        return True
