"""Framing of the ``/machine/map`` response stream, sans-IO.

Wire layout (writer: hs:hscontrol/poll.go ``writeMap``; reader: ts:control/tsp/map.go)::

    +---------------------+------------------------------------------------+
    | length: u32 LITTLE- | body: `length` bytes                           |
    | endian (not BE!)    |   zstd frame (28 B5 2F FD ...) if the request  |
    |                     |   had "Compress": "zstd", else JSON            |
    +---------------------+------------------------------------------------+

One frame = one ``MapResponse`` JSON object. Headscale compresses each message on its own
(one zstd frame per body, content size in the header), so bodies are decompressed
independently. The body kind is sniffed from the zstd magic (JSON never starts with
0x28), so plain and compressed streams both work.

Limits (a malicious or broken server must not make us allocate gigabytes):

- `MAX_FRAME_BYTES` (4 MiB, tsp's ``DefaultMaxMessageSize``) on the length field. A
  bigger length raises `FrameError` as soon as the 4 header bytes are in; the stream's
  framing is then lost: the decoder stays failed (every later `feed` raises) and the
  caller must close the HTTP stream and start a new map poll.
- `MAX_DECODED_BYTES` (16 MiB) on a body's decompressed size: a zstd frame declaring more
  is refused before any allocation; one without a declared size is decompressed into a
  buffer of at most that size. (tsp bounds the decoded size by the same 4 MiB as the
  compressed size; tailscaled's own client reads frames unbounded. 16 MiB leaves room for
  a big tailnet's full netmap.)

A body that cannot be decoded (corrupt or truncated zstd, decoded size over the limit,
empty frame) does not break the framing: `feed` leaves it out, records a `CorruptFrame`
in ``drops`` (the drops of the last call) and carries on with the next frame. The control
service counts and logs ``drops`` after each `feed`. (tsp treats a zero-length frame as a
fatal stream error; we only drop it.)
"""

from __future__ import annotations

import struct

import msgspec
import zstandard

__all__ = [
    "CorruptFrame",
    "FrameError",
    "MAX_DECODED_BYTES",
    "MAX_FRAME_BYTES",
    "MapFrameDecoder",
    "ZSTD_MAGIC",
    "encode_frame",
]

MAX_FRAME_BYTES = 4 << 20
MAX_DECODED_BYTES = 16 << 20
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_HEADER = struct.Struct("<I")


class FrameError(ValueError):
    """The stream's framing is broken (length over the limit): the stream is unusable."""


class CorruptFrame(msgspec.Struct, frozen=True):
    """A well-framed body that could not be decoded (left out of `feed`'s result)."""

    reason: str
    """Short human-readable cause, for the drop log line."""
    size: int
    """The body's length on the wire, in bytes."""


class MapFrameDecoder:
    """Splits the map stream into frame bodies and decompresses them.

    ``feed(data)`` appends bytes (any split: whole frames, one byte at a time, several
    frames per chunk) and returns the bodies completed by them: the JSON bytes of one
    MapResponse each. Bodies that could not be decoded are in ``drops`` instead. Owned by
    the control service's map poll; one decoder per HTTP response stream.
    """

    def __init__(
        self, *, max_frame: int = MAX_FRAME_BYTES, max_decoded: int = MAX_DECODED_BYTES
    ) -> None:
        self.max_frame = max_frame
        self.max_decoded = max_decoded
        self.drops: list[CorruptFrame] = []
        """The bodies the last `feed` call dropped, in stream order."""
        self._buf = bytearray()
        self._failed: str | None = None
        self._dctx = zstandard.ZstdDecompressor()

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return len(self._buf)

    @property
    def failed(self) -> bool:
        """True once `FrameError` was raised: the stream must be abandoned."""
        return self._failed is not None

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Add received bytes; return the frame bodies they complete, in order.

        Raises `FrameError` (now and on every later call) if a length field exceeds
        ``max_frame``; bodies completed earlier in the same call are lost with it.
        """
        if self._failed is not None:
            raise FrameError(f"map stream already failed: {self._failed}")
        self.drops = []
        buf = self._buf
        buf += data
        out: list[bytes] = []
        pos = 0
        while len(buf) - pos >= _HEADER.size:
            (length,) = _HEADER.unpack_from(buf, pos)
            if length > self.max_frame:
                self._failed = f"frame length {length} exceeds the limit {self.max_frame}"
                buf.clear()
                raise FrameError(self._failed)
            end = pos + _HEADER.size + length
            if len(buf) < end:
                break
            body = self._body(bytes(buf[pos + _HEADER.size : end]))
            if isinstance(body, CorruptFrame):
                self.drops.append(body)
            else:
                out.append(body)
            pos = end
        del buf[:pos]
        return out

    def _body(self, body: bytes) -> bytes | CorruptFrame:
        if not body:
            return CorruptFrame("empty frame", 0)
        if not body.startswith(ZSTD_MAGIC):
            return body
        try:
            declared = zstandard.frame_content_size(body)  # -1: not in the header
        except zstandard.ZstdError as exc:
            return CorruptFrame(f"zstd: {exc}", len(body))
        if declared > self.max_decoded:
            return CorruptFrame(
                f"zstd frame declares {declared} bytes, over the limit {self.max_decoded}",
                len(body),
            )
        try:
            # With a declared size, libzstd refuses output beyond it; without one, the
            # output buffer is max_output_size and overflowing it is an error.
            decoded = self._dctx.decompress(body, max_output_size=self.max_decoded)
        except zstandard.ZstdError as exc:
            self._dctx = zstandard.ZstdDecompressor()  # do not reuse a context mid-error
            return CorruptFrame(f"zstd: {exc}", len(body))
        if not decoded:
            return CorruptFrame("empty zstd body", len(body))
        return decoded


def encode_frame(body: bytes, *, compress: bool = False) -> bytes:
    """One frame as Headscale writes it (for tests and fakes): u32 LE length + body."""
    if compress:
        body = zstandard.ZstdCompressor().compress(body)
    return _HEADER.pack(len(body)) + body
