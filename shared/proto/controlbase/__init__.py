"""Sans-IO core of the TS2021 control channel: the Noise IK initiator and the record layer.

docs/protocol.md "TS2021 control channel"; ts:control/controlbase, ts:control/ts2021.

    client                                              server
      | POST /ts2021, Upgrade: tailscale-control-protocol |
      | X-Tailscale-Handshake: base64(initiation, 101 B) -->   -> e, es, s, ss
      |<-- HTTP 101, then on the raw stream:              |
      |<-- response 0x02 (51 B) or error 0x03 + text      |   <- e, ee, se
      |<-> records 0x04 | u16 len | ciphertext  (<= 4096 B each)
      |<-- first plaintext: optional early payload ff ff ff 'T' 'S' | u32 len | JSON
      |<-> HTTP/2 with prior knowledge

Modules, one concern each:

- ``noise``      BLAKE2s / HKDF / X25519 / ChaCha20-Poly1305 symmetric state
- ``messages``   wire layouts (byte diagrams) and handshake framing
- ``handshake``  ``Initiator``: builds the initiation, consumes the response
- ``transport``  ``Transport``: record encryption, splitting, reassembly
- ``early``      ``parse_early_payload``
- ``errors``     HandshakeError, RecordError (remote problems), CipherExhaustedError

Nothing here opens a socket, reads a clock or draws randomness: the ephemeral private
key is a parameter.
"""

from __future__ import annotations

from .early import EARLY_PAYLOAD_MAGIC, EARLY_PAYLOAD_MAX_LEN, parse_early_payload
from .errors import CipherExhaustedError, HandshakeError, RecordError
from .handshake import Initiator, protocol_prologue
from .messages import INITIATION_LEN, MAX_PLAINTEXT, MAX_RECORD, RESPONSE_LEN
from .noise import PROTOCOL_NAME
from .transport import Transport

__all__ = [
    "EARLY_PAYLOAD_MAGIC",
    "EARLY_PAYLOAD_MAX_LEN",
    "INITIATION_LEN",
    "MAX_PLAINTEXT",
    "MAX_RECORD",
    "PROTOCOL_NAME",
    "RESPONSE_LEN",
    "CipherExhaustedError",
    "HandshakeError",
    "Initiator",
    "RecordError",
    "Transport",
    "parse_early_payload",
    "protocol_prologue",
]
