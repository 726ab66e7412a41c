"""The optional early payload at the start of the server's decrypted stream
(ts:control/ts2021/conn.go ``readHeader``; hs:hscontrol/noise.go ``earlyNoise``).

The first 9 plaintext bytes from the server are either the header of an HTTP/2 frame
(normally its SETTINGS frame, the usual start of HTTP/2) or an early-payload header of
the same size::

    0                 5              9
    +-----------------+--------------+-------------------------------+
    | ff ff ff 'T' 'S'| u32 BE len   | len bytes of JSON, e.g.       |
    | magic           |              | {"nodeKeyChallenge":"chalpub:<64 hex>"} |
    +-----------------+--------------+-------------------------------+

The magic cannot start an HTTP/2 frame header that a server would send first. Without the
magic, nothing is consumed and the bytes are all HTTP/2. Headscale always sends one.

Upstream rules mirrored: a length over 10 MiB (``10 << 20``) is refused; the JSON must
decode into the ``tailcfg.EarlyNoise`` object, so an object or ``null`` (Go leaves the
pointer nil, and so do we: ``(None, consumed)`` with ``consumed > 0``). Field contents
(the ``chalpub:`` key) are the caller's to parse.
"""

from __future__ import annotations

import json

from .errors import RecordError

EARLY_PAYLOAD_MAGIC = b"\xff\xff\xffTS"
EARLY_PAYLOAD_HEADER_LEN = 9  # magic(5) + u32 length; also an HTTP/2 frame header's size
EARLY_PAYLOAD_MAX_LEN = 10 << 20  # ts:control/ts2021/conn.go


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def parse_early_payload(buf: bytes) -> tuple[dict | None, int] | None:
    """Look for the early payload at the start of ``buf`` (decrypted server bytes).

    None: need more bytes to decide or to complete it. ``(None, 0)``: ``buf`` does not
    start with the magic, no early payload, consume nothing. ``(payload, consumed)``:
    the parsed JSON object (None for JSON ``null``) and the bytes it took.
    Raises RecordError on a length over 10 MiB, bad JSON, or JSON that is not an object.
    """
    head = bytes(buf[: len(EARLY_PAYLOAD_MAGIC)])
    if head != EARLY_PAYLOAD_MAGIC[: len(head)]:
        return (None, 0)
    if len(buf) < EARLY_PAYLOAD_HEADER_LEN:
        return None
    length = int.from_bytes(buf[len(EARLY_PAYLOAD_MAGIC) : EARLY_PAYLOAD_HEADER_LEN], "big")
    if length > EARLY_PAYLOAD_MAX_LEN:
        raise RecordError(f"invalid early payload length {length}")
    end = EARLY_PAYLOAD_HEADER_LEN + length
    if len(buf) < end:
        return None
    raw = bytes(buf[EARLY_PAYLOAD_HEADER_LEN:end])
    try:
        # Go's decoder replaces invalid UTF-8 rather than failing; so do we. Decoding
        # first also stops json from guessing UTF-16/32 from the byte pattern.
        payload = json.loads(raw.decode("utf-8", errors="replace"), parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise RecordError(f"early payload is not valid JSON: {exc}") from None
    if payload is not None and not isinstance(payload, dict):
        raise RecordError(f"early payload is JSON {type(payload).__name__}, want an object")
    return (payload, end)
