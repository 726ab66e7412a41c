"""Following the control service's netmap from another process.

`NetmapFollower` (sans-IO) rebuilds the netmap from the ``control-pub`` stream of
`ControlEvent`s: a snapshot, then deltas with sequence numbers; a gap means waiting for a
new snapshot (the subscriber re-subscribes, and the control service's XPUB sends one).
`NetmapSubscription` is the services' shell around it: a SUB socket on their loop (see
shared/channels.py ``control-pub``); ``sunbeam-ctl`` uses `ctl.watch.NetmapWatch`. On a
seq gap the subscription unsubscribes and subscribes again, which makes control re-send a
snapshot; only a real gap does (the follower already holds a netmap): re-subscribing while
merely waiting for the first snapshot would make control re-send its status, which would
re-trigger us, in a loop. ``on_netmap(netmap)`` runs once per drained batch of events
that changed the netmap.

Each is owned by the one service (or tool) that made it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from ..channels import CONTROL_PUB
from ..messages.codec import BadMessage
from ..messages.netmap import (
    CONTROL_EVENT_CODEC,
    ControlEvent,
    ControlStatus,
    NetmapDelta,
    NetmapSnapshot,
)
from ..runtime.counters import Counters
from ..runtime.loop import ServiceLoop
from . import Netmap, apply_change

__all__ = ["NetmapFollower", "NetmapSubscription"]


class NetmapFollower:
    """Subscriber side: rebuilds the control service's netmap from `ControlEvent`s.

    Owned by each subscribing service (one per SUB socket).
    """

    def __init__(self) -> None:
        self.netmap: Netmap | None = None
        self.seq: int | None = None
        self.needs_snapshot = True
        """True until a snapshot arrives, and from a seq gap until the next one; deltas
        are ignored meanwhile (``netmap`` keeps the last good, now stale, value)."""
        self.status: ControlStatus | None = None
        self.gaps = 0

    def apply(self, event: ControlEvent) -> Netmap | None:
        """The new netmap if ``event`` changed it, else None (status, gap, no base)."""
        if isinstance(event, NetmapSnapshot):
            self.netmap, self.seq, self.needs_snapshot = event.netmap, event.seq, False
            return self.netmap
        if isinstance(event, NetmapDelta):
            if self.needs_snapshot or self.netmap is None or self.seq is None or event.seq != self.seq + 1:
                if not self.needs_snapshot:
                    self.gaps += 1
                self.needs_snapshot = True  # .netmap stays readable, but stale
                return None
            self.netmap = apply_change(self.netmap, event.to_change())
            self.seq = event.seq
            return self.netmap
        self.status = event
        return None


class NetmapSubscription:
    def __init__(self, loop: ServiceLoop, rundir: Path, counters: Counters,
                 on_netmap: Callable[[Netmap], None]) -> None:
        self.counters = counters
        self.on_netmap = on_netmap
        self.follower = NetmapFollower()
        self.sock: zmq.Socket[Any] = CONTROL_PUB.connect(loop, rundir)
        loop.on_readable(self.sock, self._on_readable)

    @property
    def netmap(self) -> Netmap | None:
        return self.follower.netmap

    @property
    def status(self) -> ControlStatus | None:
        return self.follower.status

    def _on_readable(self, sock: zmq.Socket[Any]) -> None:
        changed = False
        while True:
            try:
                frame = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                event = CONTROL_EVENT_CODEC.decode(frame)
            except BadMessage:
                self.counters.incr("control_bad_message")
                continue
            changed |= self.follower.apply(event) is not None
            if self.follower.needs_snapshot and self.follower.netmap is not None:
                self.counters.incr("control_resubscribe")
                sock.setsockopt(zmq.UNSUBSCRIBE, b"")
                sock.setsockopt(zmq.SUBSCRIBE, b"")
        if changed and self.follower.netmap is not None and not self.follower.needs_snapshot:
            self.on_netmap(self.follower.netmap)
