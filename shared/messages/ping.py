"""The proxy's ping socket: ICMP echo to a tailnet peer, on request.

Socket: REP bound by the proxy at ``ipc://<rundir>/proxy-ping.sock``; one frame each way,
msgpack maps tagged by ``"t"``:

    request  `PingPeer`    dst_ip, count (1..100), timeout (seconds per echo, 0 < t <= 60)
    reply    `PingResult`  dst_ip, rtts (one per echo: seconds, or None = no reply within
                           timeout), error (None, or why nothing was sent: bad request, no
                           netmap yet, no address of ours in that family, no route)

The proxy sends the echoes one after the other, each as soon as the previous one was
answered or timed out, so a request takes at most ``count * timeout`` seconds; it answers
every request exactly once. The requester is ``sunbeam-ctl ping``.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from .codec import Codec

__all__ = ["PING_REPLY_CODEC", "PING_REQUEST_CODEC", "PingPeer", "PingResult"]

MAX_COUNT = 100
MAX_TIMEOUT = 60.0


class PingPeer(msgspec.Struct, frozen=True, kw_only=True, tag_field="t", tag=True):
    """Send ``count`` ICMP echo requests to ``dst_ip`` and report their round-trip times."""

    dst_ip: Annotated[str, msgspec.Meta(max_length=64)]
    count: Annotated[int, msgspec.Meta(ge=1, le=MAX_COUNT)] = 1
    timeout: Annotated[float, msgspec.Meta(gt=0, le=MAX_TIMEOUT)] = 2.0


class PingResult(msgspec.Struct, frozen=True, kw_only=True, tag_field="t", tag=True):
    dst_ip: str
    rtts: list[float | None]
    """Seconds per echo request, in sequence order; None = no reply within the timeout."""
    error: str | None = None


PING_REQUEST_CODEC: Codec[PingPeer] = Codec(PingPeer)
PING_REPLY_CODEC: Codec[PingResult] = Codec(PingResult)
