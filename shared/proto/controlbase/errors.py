"""Errors raised by the TS2021 control-channel core.

Split the h11 way: the first two are *remote* problems (the server, or whatever sits on the
path to it, sent something we cannot accept; log it, count it, drop the connection and
dial again), the third is a *local* limit of a long-lived connection (replace it).
Bugs in the caller (wrong key length, a version out of range, using a spent Initiator)
are plain ``ValueError`` / ``RuntimeError`` and should crash loudly.
"""

from __future__ import annotations


class HandshakeError(Exception):
    """The server's handshake answer is unusable.

    Raised for a wrong message type or length, a failed authentication tag (wrong server
    key, tampering), a degenerate Diffie-Hellman result, or a type-0x03 error message.
    """

    def __init__(self, reason: str, *, server_message: str | None = None) -> None:
        super().__init__(reason)
        #: The text of a type-0x03 error message, if the server sent one. It is neither
        #: encrypted nor authenticated: a public hint only, never to be trusted.
        self.server_message = server_message


class RecordError(Exception):
    """The server's transport stream is unusable (bad record type, oversize record,
    authentication failure, exhausted receive nonce, malformed early payload).

    Once raised by ``Transport.receive_data`` the receive side stays failed: every later
    call raises again, because the stream can no longer be trusted to be in sync.
    """

    def __init__(self, reason: str, *, plaintext: bytes = b"") -> None:
        super().__init__(reason)
        #: Plaintext of the records that did authenticate in the same ``receive_data``
        #: call, before the failing one. Usually discarded with the connection.
        self.plaintext = plaintext


class CipherExhaustedError(Exception):
    """Our send nonce would pass the last valid value (2**64 - 2): the connection must be
    replaced. Raised before any of the refused plaintext is encrypted."""
