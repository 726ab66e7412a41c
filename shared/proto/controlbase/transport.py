"""The TS2021 record layer after the handshake (ts:control/controlbase/conn.go).

Record (layout drawn in ``messages.py``)::

    0x04 | u16 BE len | ChaCha20-Poly1305 ciphertext with its 16-byte tag (len bytes)

- At most 4096 bytes per record including the 3-byte header, so at most 4077 bytes of
  plaintext. Longer writes are split; an empty write sends nothing. Empty records (a
  bare tag) are valid on receive.
- AEAD nonce: 4 zero bytes then the record counter as a **big-endian** u64, no
  associated data. (The Noise spec's ChaChaPoly says little-endian; TS2021 does not
  follow it. Nonce 0 is the same either way, which hides the difference in a one-message
  test.)
- Counter 2**64 - 1 is never used (as in tailscale): encrypting past 2**64 - 2 raises
  CipherExhaustedError, receiving past it raises RecordError.
- Keys from Split: the client sends with k1 and receives with k2.

Receive errors are sticky: after a RecordError the receive side is dead (as tailscale
drops its receive cipher), since the stream can no longer be known to be in sync.

Buffering: ``receive_data`` decrypts every complete record it has; what it keeps between
calls is less than one record (at most 4095 bytes).

A Transport is owned by the single connection it was made for; it is not thread-safe.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from .errors import CipherExhaustedError, RecordError
from .messages import HEADER_LEN, MAX_PLAINTEXT, MAX_RECORD, MSG_RECORD
from .noise import TAG_LEN

INVALID_NONCE = 2**64 - 1  # the one counter value never used
_NONCE_PREFIX = bytes(4)


def record_nonce(counter: int) -> bytes:
    """The 12-byte AEAD nonce for a record counter."""
    return _NONCE_PREFIX + counter.to_bytes(8, "big")


class Transport:
    """Encrypts our plaintext into records and decrypts the server's records."""

    def __init__(
        self,
        *,
        send_key: bytes,
        receive_key: bytes,
        handshake_hash: bytes,
        peer_static: bytes,
    ) -> None:
        self._send_aead = ChaCha20Poly1305(bytes(send_key))  # one AEAD object per key
        self._receive_aead: ChaCha20Poly1305 | None = ChaCha20Poly1305(bytes(receive_key))
        self._send_nonce = 0  # counter of the next record we send
        self._receive_nonce = 0  # counter of the next record we expect
        self._rx_buf = bytearray()  # bytes of a record not complete yet
        self._rx_error: RecordError | None = None
        self._handshake_hash = bytes(handshake_hash)
        self._peer_static = bytes(peer_static)

    @property
    def handshake_hash(self) -> bytes:
        """The Noise handshake hash: binds other messages to this connection."""
        return self._handshake_hash

    @property
    def peer_static(self) -> bytes:
        """The server's static public key (the one we handshook against)."""
        return self._peer_static

    def encrypt(self, plaintext: bytes) -> bytes:
        """Records for ``plaintext``, split at 4077 bytes; b"" for an empty input.

        Raises CipherExhaustedError, without consuming any nonce, if the records would
        need a counter beyond 2**64 - 2.
        """
        size = len(plaintext)
        count = -(-size // MAX_PLAINTEXT)
        if self._send_nonce + count > INVALID_NONCE:
            raise CipherExhaustedError("cipher exhausted, no more nonces available for the current key")
        view = memoryview(plaintext)
        out = bytearray()
        for start in range(0, size, MAX_PLAINTEXT):
            ciphertext = self._send_aead.encrypt(
                record_nonce(self._send_nonce), bytes(view[start : start + MAX_PLAINTEXT]), None
            )
            self._send_nonce += 1
            out.append(MSG_RECORD)
            out += len(ciphertext).to_bytes(2, "big")
            out += ciphertext
        return bytes(out)

    def receive_data(self, data: bytes) -> bytes:
        """Feed bytes from the server; returns the plaintext of every record completed.

        b"" when no record is complete yet. Raises RecordError on a wrong record type,
        a record over 4096 bytes (both detected from the header alone), or a record that
        does not authenticate.
        """
        if self._rx_error is not None:
            raise RecordError(f"receive side already failed: {self._rx_error}")
        buf = self._rx_buf
        buf += data
        out = bytearray()
        pos = 0
        try:
            while pos < len(buf):
                if buf[pos] != MSG_RECORD:
                    raise RecordError(f"received message with unexpected type {buf[pos]}, want {MSG_RECORD}")
                if len(buf) - pos < HEADER_LEN:
                    break
                length = int.from_bytes(buf[pos + 1 : pos + HEADER_LEN], "big")
                if HEADER_LEN + length > MAX_RECORD:
                    raise RecordError(f"record of {HEADER_LEN + length} bytes exceeds the {MAX_RECORD}-byte limit")
                end = pos + HEADER_LEN + length
                if end > len(buf):
                    break
                out += self._open(bytes(buf[pos + HEADER_LEN : end]))
                pos = end
        except RecordError as exc:
            exc.plaintext = bytes(out)
            self._rx_error = exc
            self._receive_aead = None
            self._rx_buf = bytearray()
            raise
        del buf[:pos]
        return bytes(out)

    def _open(self, ciphertext: bytes) -> bytes:
        if len(ciphertext) < TAG_LEN:
            raise RecordError(f"record of {len(ciphertext)} ciphertext bytes is shorter than its tag")
        if self._receive_nonce == INVALID_NONCE:
            raise RecordError("cipher exhausted, no more nonces available for the current key")
        assert self._receive_aead is not None
        try:
            plaintext = self._receive_aead.decrypt(record_nonce(self._receive_nonce), ciphertext, None)
        except InvalidTag:
            raise RecordError(f"record {self._receive_nonce} does not authenticate") from None
        self._receive_nonce += 1
        return plaintext
