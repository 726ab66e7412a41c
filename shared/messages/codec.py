"""`Codec`: msgpack encoding of one socket's closed message union.

Every ZeroMQ socket carries exactly one union of frozen, tagged msgspec Structs (see
`packets` and `ctl`). The tag (field ``"t"``, the class name) comes first, so a receiver
knows which Struct it is decoding. On the wire each ZeroMQ message is one frame holding
one msgpack-encoded Struct.

- `Codec.decode` raises `BadMessage` and nothing else for any input that is not a valid
  member of the union (bad msgpack, unknown tag, wrong field types, violated length
  limits, invalid UTF-8): the caller counts it as a drop; peer input never crashes a
  service.
- `Codec.encode` of a message outside the union raises `TypeError`: that is our bug.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Generic, TypeVar

import msgspec

__all__ = ["BadMessage", "Codec"]

T = TypeVar("T")


class BadMessage(ValueError):
    """Received bytes are not a valid message for this socket (a counted drop)."""


def _members(message_type: Any) -> tuple[type, ...]:
    if typing.get_origin(message_type) in (typing.Union, types.UnionType):
        return tuple(typing.get_args(message_type))
    return (message_type,)


class Codec(Generic[T]):
    """Encoder/decoder for the union ``message_type`` (a Struct or ``A | B | ...``)."""

    def __init__(self, message_type: Any) -> None:
        self.message_type = message_type
        self.members = _members(message_type)
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder: msgspec.msgpack.Decoder[T] = msgspec.msgpack.Decoder(message_type)

    def encode(self, message: T) -> bytes:
        if not isinstance(message, self.members):
            raise TypeError(f"{type(message).__name__} is not a member of {self.message_type}")
        return self._encoder.encode(message)

    def decode(self, data: bytes | bytearray | memoryview) -> T:
        try:
            return self._decoder.decode(data)
        except msgspec.DecodeError as exc:  # includes ValidationError
            raise BadMessage(str(exc)) from None
        except UnicodeDecodeError as exc:
            # Invalid UTF-8 in a msgpack str escapes msgspec unwrapped
            # (msgspec/msgspec#714); found by the Hypothesis test.
            raise BadMessage(f"invalid UTF-8 in a string: {exc.reason}") from None
        except RecursionError:
            # msgspec recurses per nesting level, even inside fields it skips.
            raise BadMessage("nesting too deep") from None

    def __repr__(self) -> str:
        return f"Codec({self.message_type})"
