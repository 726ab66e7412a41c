"""A service's subscription to the control service's netmap (``control-pub``, SUB).

The control service answers every new subscription with its latest `ControlStatus` and
`NetmapSnapshot`, then publishes `NetmapDelta`s with consecutive seq numbers. On a seq gap
(a dropped delta, or a control restart) we unsubscribe and subscribe again, which makes
control re-send a snapshot. Only a real gap triggers that (the follower already holds a
netmap): re-subscribing while merely waiting for the first snapshot would make control
re-send its status, which would re-trigger us, in a loop.

``on_netmap(netmap)`` is called once per drained batch of events that changed the netmap.
Owned by the subscribing service's loop thread.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from .channels import CONTROL_PUB
from .messages.codec import BadMessage
from .messages.netmap import CONTROL_EVENT_CODEC, ControlStatus, NetmapFollower
from .netmap import Netmap
from .runtime.counters import Counters
from .runtime.loop import ServiceLoop


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
