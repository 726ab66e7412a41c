"""The control service's PUB socket: netmap snapshots, deltas and control status.

    control (PUB) -> derp, udp, wg workers, proxy (SUB)     union `ControlEvent`

Each ZeroMQ message is one msgpack map tagged by ``"t"`` (map encoding, so fields added
later with defaults stay compatible):

    `NetmapSnapshot`  seq=N, the whole `Netmap` after the change numbered N
    `NetmapDelta`     seq=N, only what change N altered (None / empty = unchanged)
    `ControlStatus`   the control session's state, for health and ``sunbeam-ctl status``

``seq`` numbers the netmap changes of one control-service process, +1 per delta; a
snapshot carries the seq of the last change it includes. PUB drops messages for slow or
late subscribers, so a follower (shared/netmap/follow.py) applies a delta only if its seq is exactly the next
one; on any gap (or a control-service restart, which restarts seq) it waits for the next
snapshot and sets ``needs_snapshot`` so its service can ask for one.
"""

from __future__ import annotations

import msgspec

from ..netmap import Netmap, NetmapChange
from .codec import Codec

__all__ = [
    "CONTROL_EVENT_CODEC",
    "ControlEvent",
    "ControlStatus",
    "NetmapDelta",
    "NetmapSnapshot",
]


class _ControlEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="t", tag=True):
    pass


class NetmapSnapshot(_ControlEvent, frozen=True):
    """The whole netmap (on start, after a new map poll, and on request)."""

    seq: int
    netmap: Netmap


class NetmapDelta(_ControlEvent, frozen=True):
    """One `NetmapChange` (its fields left None / empty are unchanged)."""

    seq: int
    change: NetmapChange = NetmapChange()

    @classmethod
    def from_change(cls, seq: int, change: NetmapChange) -> NetmapDelta:
        return cls(seq=seq, change=change)

    def to_change(self) -> NetmapChange:
        return self.change


class ControlStatus(_ControlEvent, frozen=True):
    """The control session's state."""

    state: str
    """The control state machine's state: ``Starting``, ``Registering``, ``Running``,
    ``Reconnecting``, ``NeedsLogin``, ``Error`` or ``Stopped`` (services/control/state.py)."""
    reason: str | None = None
    """Why, for a failed or waiting state (e.g. the register Error, an AuthURL)."""
    node_id: int | None = None
    addresses: tuple[str, ...] = ()
    """Our tailnet prefixes."""
    peers: int = 0
    home_derp: int = 0
    since: float = 0.0
    """Unix time the state was entered."""
    hostname: str = ""
    """Our node's ``Hostinfo.Hostname`` as control echoes it ("" = no netmap yet)."""
    name: str = ""
    """Our node's MagicDNS FQDN from the netmap, trailing dot (``"laptop.example.com."``)."""
    domain: str = ""
    """The netmap's ``Domain`` (the tailnet's name as control gives it; "" = not sent)."""
    auth_url: str = ""
    """``NeedsLogin``: the URL where an admin registers this node (Headscale's AuthURL,
    ``<server>/register/<auth id>``); "" = none pending."""


ControlEvent = NetmapSnapshot | NetmapDelta | ControlStatus

CONTROL_EVENT_CODEC: Codec[ControlEvent] = Codec(ControlEvent)
