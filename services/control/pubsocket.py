"""`NetmapPublisher`, the control service's ``control-pub`` socket (what goes out on it is
`publication.Publication`'s): netmap and status for every other service.

Socket: XPUB bound at ``ipc://<rundir>/control-pub.sock``; messages are `ControlEvent`
(one frame each, `CONTROL_EVENT_CODEC`): `NetmapSnapshot`, `NetmapDelta`, `ControlStatus`.
Subscribers subscribe to the empty prefix.

Slow joiners: a service that (re)starts must get the current netmap at once. With
``XPUB_VERBOSE`` every subscription message reaches us, even a repeat of a prefix others
already hold; each one triggers a re-send of the latest `NetmapSnapshot` and `ControlStatus`
to all subscribers (a snapshot replaces state, so the others just see a no-op refresh).
Deltas carry consecutive ``seq`` numbers; a subscriber that sees a gap re-subscribes and
gets a snapshot.

Owned by the control service's loop thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import zmq
from sunbeam.shared.channels import CONTROL_PUB
from sunbeam.shared.messages.netmap import (
    CONTROL_EVENT_CODEC,
    ControlStatus,
    NetmapDelta,
    NetmapSnapshot,
)
from sunbeam.shared.runtime import Counters, ServiceLoop


class NetmapPublisher:
    def __init__(self, loop: ServiceLoop, rundir: Path, counters: Counters) -> None:
        self.counters = counters
        self.sock: zmq.Socket[Any] = CONTROL_PUB.bind(loop, rundir)
        loop.on_readable(self.sock, self._on_subscription)
        self.snapshot: NetmapSnapshot | None = None
        self.status: ControlStatus | None = None

    def _on_subscription(self, sock: zmq.Socket[Any]) -> None:
        while True:
            try:
                msg = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if msg[:1] == b"\x01":
                self.counters.incr("subscriptions")
                self._resend()

    def _resend(self) -> None:
        if self.status is not None:
            self._send(self.status)
        if self.snapshot is not None:
            self._send(self.snapshot)

    def _send(self, event: Any) -> None:
        try:
            self.sock.send(CONTROL_EVENT_CODEC.encode(event), zmq.NOBLOCK)
            self.counters.incr("published")
        except zmq.Again:
            self.counters.incr("publish_dropped")

    def publish_snapshot(self, snapshot: NetmapSnapshot) -> None:
        self.snapshot = snapshot
        self._send(snapshot)

    def publish_delta(self, delta: NetmapDelta, snapshot: NetmapSnapshot) -> None:
        """Send ``delta``; ``snapshot`` is the state after it, kept for late subscribers."""
        self.snapshot = snapshot
        self._send(delta)

    def publish_status(self, status: ControlStatus) -> None:
        self.status = status
        self._send(status)
