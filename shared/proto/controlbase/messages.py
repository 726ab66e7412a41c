"""TS2021 framing: the handshake messages and the transport record header.

docs/protocol.md "TS2021 control channel"; ts:control/controlbase/messages.go.
All integers are big-endian.

Initiation, client -> server, 101 bytes (sent base64-encoded in the HTTP upgrade request's
``X-Tailscale-Handshake`` header, not on the raw stream)::

    0      2    3       5                 37                          85          101
    +------+----+-------+-----------------+---------------------------+-----------+
    | ver  |0x01| 96    | e: client       | s: client machine public  | tag of    |
    | u16  |    | u16   | ephemeral pub   | key, encrypted (32 + 16)  | empty     |
    |      |    |       | (cleartext, 32) |                           | payload   |
    +------+----+-------+-----------------+---------------------------+-----------+
    ver: the protocol version, in practice the client's capability version. It is
    bound into the handshake through the prologue, so a header rewritten on the path
    breaks the handshake. Only the initiation carries it; all other headers are 3 bytes.

Response, server -> client, 51 bytes (the first bytes on the stream after HTTP 101)::

    0    1       3                          35          51
    +----+-------+--------------------------+-----------+
    |0x02| 48    | e: server ephemeral pub  | tag of    |
    |    | u16   | (cleartext, 32)          | empty pl. |
    +----+-------+--------------------------+-----------+

Error, server -> client, in place of the response::

    +----+-------+---------------------------------+
    |0x03| len   | len bytes of text, unencrypted, |
    |    | u16   | unauthenticated: a hint only    |
    +----+-------+---------------------------------+

Record, both ways after the handshake, at most 4096 bytes including the header::

    +----+-------+------------------------------------------+
    |0x04| len   | ChaCha20-Poly1305(plaintext) || tag(16)   |
    |    | u16   | len = ciphertext length incl. tag <= 4093 |
    +----+-------+------------------------------------------+
"""

from __future__ import annotations

from .errors import HandshakeError

MSG_INITIATION = 0x01
MSG_RESPONSE = 0x02
MSG_ERROR = 0x03
MSG_RECORD = 0x04

HEADER_LEN = 3  # type | u16 length, on every message but the initiation
INITIATION_HEADER_LEN = 5  # u16 version | type | u16 length

INITIATION_PAYLOAD_LEN = 96  # e(32) + enc(s)(48) + tag(16)
RESPONSE_PAYLOAD_LEN = 48  # e(32) + tag(16)
INITIATION_LEN = INITIATION_HEADER_LEN + INITIATION_PAYLOAD_LEN  # 101
RESPONSE_LEN = HEADER_LEN + RESPONSE_PAYLOAD_LEN  # 51

MAX_RECORD = 4096  # whole record, header included
MAX_CIPHERTEXT = MAX_RECORD - HEADER_LEN  # 4093
MAX_PLAINTEXT = MAX_CIPHERTEXT - 16  # 4077


def initiation_header(version: int) -> bytes:
    return version.to_bytes(2, "big") + bytes([MSG_INITIATION]) + INITIATION_PAYLOAD_LEN.to_bytes(2, "big")


def response_length_needed(prefix: bytes) -> int | None:
    """How long the server's first message is, judging from its first bytes.

    None: fewer than 3 bytes, cannot tell yet. Raises HandshakeError as soon as the type
    byte is neither response nor error, or a response header announces a length other
    than 48 (tailscale rejects both after reading the 3-byte header).
    """
    if len(prefix) == 0:
        return None
    msg_type = prefix[0]
    if msg_type not in (MSG_RESPONSE, MSG_ERROR):
        raise HandshakeError(f"unexpected handshake message type {msg_type}")
    if len(prefix) < HEADER_LEN:
        return None
    length = int.from_bytes(prefix[1:3], "big")
    if msg_type == MSG_ERROR:
        return HEADER_LEN + length
    if length != RESPONSE_PAYLOAD_LEN:
        raise HandshakeError(f"wrong length {length} in handshake response")
    return RESPONSE_LEN
