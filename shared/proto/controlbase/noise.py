"""The Noise symmetric state for ``Noise_IK_25519_ChaChaPoly_BLAKE2s`` (Noise spec rev. 34,
sections 4 and 5.2), specialised the way TS2021 uses it.

    HASH    BLAKE2s-256                 h, ck: 32 bytes each
    HKDF    HMAC-BLAKE2s, 2 outputs     out1 = HMAC(HMAC(ck, ikm), 0x01)
                                        out2 = HMAC(HMAC(ck, ikm), out1 || 0x02)
    DH      X25519                      an all-zero result (low-order point) is refused
    CIPHER  ChaCha20-Poly1305           handshake keys are used once, with nonce 0

Each ``mix_dh`` returns the fresh key k that the spec's CipherState would hold; since
every handshake key in IK encrypts at most one thing, its nonce is always zero and
``encrypt_and_hash`` / ``decrypt_and_hash`` take k explicitly rather than keeping a
CipherState (the same shape as tailscale's ``singleUseCHP``).

Owned by one ``Initiator``; discarded after ``split``.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

PROTOCOL_NAME = b"Noise_IK_25519_ChaChaPoly_BLAKE2s"
KEY_LEN = 32  # X25519 keys, ChaCha20 keys, BLAKE2s digests
TAG_LEN = 16  # Poly1305
_ZERO_NONCE = bytes(12)


class DHError(Exception):
    """X25519 produced the all-zero output (the peer's key is a low-order point)."""


def blake2s(data: bytes) -> bytes:
    return hashlib.blake2s(data).digest()


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.blake2s).digest()


def hkdf2(chaining_key: bytes, ikm: bytes) -> tuple[bytes, bytes]:
    """Noise HKDF with two outputs (identical to RFC 5869 with salt=ck and empty info)."""
    temp = _hmac(chaining_key, ikm)
    out1 = _hmac(temp, b"\x01")
    out2 = _hmac(temp, out1 + b"\x02")
    return out1, out2


def x25519(private: bytes, public: bytes) -> bytes:
    try:
        return X25519PrivateKey.from_private_bytes(private).exchange(
            X25519PublicKey.from_public_bytes(public)
        )
    except ValueError as exc:  # OpenSSL refuses the all-zero shared secret
        raise DHError(str(exc)) from None


def x25519_public(private: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


class SymmetricState:
    """h (the running transcript hash) and ck (the chaining key)."""

    def __init__(self) -> None:
        # InitializeSymmetric: the name is longer than HASHLEN, so h = HASH(name).
        self.h = blake2s(PROTOCOL_NAME)
        self.ck = self.h

    def mix_hash(self, data: bytes) -> None:
        self.h = blake2s(self.h + data)

    def mix_dh(self, private: bytes, public: bytes) -> bytes:
        """MixKey(DH(private, public)); returns the new single-use cipher key."""
        self.ck, key = hkdf2(self.ck, x25519(private, public))
        return key

    def encrypt_and_hash(self, key: bytes, plaintext: bytes) -> bytes:
        ciphertext = ChaCha20Poly1305(key).encrypt(_ZERO_NONCE, plaintext, self.h)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, key: bytes, ciphertext: bytes) -> bytes | None:
        """The plaintext, or None when the tag does not authenticate (h is then unchanged)."""
        try:
            plaintext = ChaCha20Poly1305(key).decrypt(_ZERO_NONCE, ciphertext, self.h)
        except InvalidTag:
            return None
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[bytes, bytes]:
        """(k1, k2): the initiator sends with k1 and receives with k2."""
        return hkdf2(self.ck, b"")
