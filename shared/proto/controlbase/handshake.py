"""The Noise IK initiator of the TS2021 control channel (ts:control/controlbase/handshake.go).

    IK:
      <- s                    the server's static key, known beforehand (GET /key)
      ...
      -> e, es, s, ss         the initiation (our machine key travels encrypted)
      <- e, ee, se            the response (an empty, authenticated payload)

Prologue: ``b"Tailscale Control Protocol v" + decimal(version)``, the same version that
the initiation header carries in clear. Both handshake payloads are empty.

Sans-IO: the caller supplies every key, including the ephemeral one; nothing here reads
a clock or a random source. The wire layout is in ``messages.py``.

Usage::

    ini = Initiator(machine_private=mk, server_public=sk, version=capver,
                    ephemeral_private=os.urandom(32))
    send the upgrade request with base64(ini.initiation())
    read until Initiator.response_length_needed(buf) is an int n and len(buf) >= n
    transport = ini.receive_response(buf[:n]); plaintext = transport.receive_data(buf[n:])

An Initiator is owned by the one connection attempt that made it and is single-use:
``receive_response`` may be called once, whatever its outcome.
"""

from __future__ import annotations

from . import messages
from .errors import HandshakeError
from .messages import HEADER_LEN, MSG_ERROR, MSG_RESPONSE, RESPONSE_LEN
from .noise import KEY_LEN, DHError, SymmetricState, x25519_public
from .transport import Transport

PROLOGUE_PREFIX = b"Tailscale Control Protocol v"


def protocol_prologue(version: int) -> bytes:
    """The Noise prologue that binds the cleartext version field into the handshake."""
    return PROLOGUE_PREFIX + str(version).encode("ascii")


def _key(name: str, value: bytes) -> bytes:
    value = bytes(value)
    if len(value) != KEY_LEN:
        raise ValueError(f"{name} must be {KEY_LEN} bytes, got {len(value)}")
    return value


class Initiator:
    """Builds the 101-byte initiation at construction; turns the server's answer into a
    ``Transport``."""

    def __init__(
        self,
        *,
        machine_private: bytes,
        server_public: bytes,
        version: int,
        ephemeral_private: bytes,
    ) -> None:
        if not 0 <= version <= 0xFFFF:
            raise ValueError(f"version {version} does not fit the u16 header field")
        self._machine_private = _key("machine_private", machine_private)
        self._server_public = _key("server_public", server_public)
        self._ephemeral_private = _key("ephemeral_private", ephemeral_private)
        self._spent = False

        s = SymmetricState()
        s.mix_hash(protocol_prologue(version))
        # <- s (pre-message): the server's static key is known in advance.
        s.mix_hash(self._server_public)

        # -> e, es, s, ss
        ephemeral_public = x25519_public(self._ephemeral_private)
        s.mix_hash(ephemeral_public)  # e
        try:
            key = s.mix_dh(self._ephemeral_private, self._server_public)  # es
            encrypted_static = s.encrypt_and_hash(key, x25519_public(self._machine_private))  # s
            key = s.mix_dh(self._machine_private, self._server_public)  # ss
        except DHError:
            # The server key came from the server's /key answer: a remote problem.
            raise HandshakeError("server public key is a low-order point") from None
        tag = s.encrypt_and_hash(key, b"")  # empty payload

        self._state: SymmetricState | None = s
        self._initiation = messages.initiation_header(version) + ephemeral_public + encrypted_static + tag
        assert len(self._initiation) == messages.INITIATION_LEN

    def initiation(self) -> bytes:
        """The 101-byte initiation message (the same bytes on every call)."""
        return self._initiation

    @staticmethod
    def response_length_needed(prefix: bytes) -> int | None:
        """Length of the whole response or error message the server is sending, from its
        first bytes; None while fewer than 3 bytes are known. Raises HandshakeError on a
        wrong type (from the first byte) or a wrong response length."""
        return messages.response_length_needed(prefix)

    def receive_response(self, msg: bytes) -> Transport:
        """Consume exactly one response (51 bytes) and return the transport.

        Raises HandshakeError for anything else: a type-0x03 error message (its text in
        ``server_message``), a wrong type or length, or a tag that does not authenticate
        (wrong server key, tampering).
        """
        if self._spent:
            raise RuntimeError("Initiator.receive_response called twice")
        self._spent = True
        msg = bytes(msg)
        state, self._state = self._state, None  # single use, whatever happens next
        assert state is not None  # _spent guards a second call

        length = messages.response_length_needed(msg)
        if length is None:
            raise HandshakeError(f"truncated handshake response ({len(msg)} bytes)")
        if msg[0] == MSG_ERROR:
            text = msg[HEADER_LEN:length].decode("utf-8", errors="replace")
            if len(msg) != length:
                raise HandshakeError(
                    f"server error message of {len(msg) - HEADER_LEN} bytes, header says {length - HEADER_LEN}: {text!r}",
                    server_message=text,
                )
            raise HandshakeError(f"server error: {text!r}", server_message=text)
        assert msg[0] == MSG_RESPONSE
        if len(msg) != RESPONSE_LEN:
            raise HandshakeError(f"handshake response is {len(msg)} bytes, want {RESPONSE_LEN}")

        # <- e, ee, se
        server_ephemeral = msg[HEADER_LEN : HEADER_LEN + KEY_LEN]
        tag = msg[HEADER_LEN + KEY_LEN :]
        state.mix_hash(server_ephemeral)  # e
        try:
            state.mix_dh(self._ephemeral_private, server_ephemeral)  # ee
            key = state.mix_dh(self._machine_private, server_ephemeral)  # se
        except DHError:
            raise HandshakeError("server ephemeral key is a low-order point") from None
        if state.decrypt_and_hash(key, tag) is None:  # empty payload
            raise HandshakeError("handshake response does not authenticate (wrong server key or tampering)")

        send_key, receive_key = state.split()
        return Transport(
            send_key=send_key,
            receive_key=receive_key,
            handshake_hash=state.h,
            peer_static=self._server_public,
        )
