"""Follow the control service's PUB socket from outside (``sunbeam-ctl netmap``, tests).

Connects a SUB socket to ``ipc://<rundir>/control-pub.sock``; the control service answers
every new subscription with its latest `ControlStatus` and `NetmapSnapshot`, then sends
deltas, which `NetmapFollower` applies.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from ..shared.channels import CONTROL_PUB
from ..shared.messages.codec import BadMessage
from ..shared.messages.netmap import CONTROL_EVENT_CODEC
from ..shared.netmap import Netmap
from ..shared.netmap.follow import NetmapFollower


class NetmapWatch:
    def __init__(self, rundir: Path, context: zmq.Context[Any] | None = None) -> None:
        self.ctx = context or zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(CONTROL_PUB.endpoint(rundir))
        self.follower = NetmapFollower()
        self.bad = 0

    def poll(self, timeout: float) -> bool:
        """Apply what arrives within ``timeout`` seconds; True if anything arrived."""
        got = False
        if not self.sock.poll(int(timeout * 1000)):
            return False
        while True:
            try:
                frame = self.sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return got
            got = True
            try:
                self.follower.apply(CONTROL_EVENT_CODEC.decode(frame))
            except BadMessage:
                self.bad += 1
            if self.follower.needs_snapshot and self.follower.netmap is not None:
                # a gap: re-subscribe, which makes the control service re-send a snapshot
                self.sock.setsockopt(zmq.UNSUBSCRIBE, b"")
                self.sock.setsockopt(zmq.SUBSCRIBE, b"")

    def wait_for(self, predicate: Callable[[Netmap], bool], timeout: float) -> Netmap:
        deadline = time.monotonic() + timeout
        while True:
            netmap = self.follower.netmap
            if netmap is not None and not self.follower.needs_snapshot and predicate(netmap):
                return netmap
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"netmap condition not met within {timeout}s (have: {netmap!r:.300})")
            self.poll(min(left, 0.5))

    def close(self) -> None:
        self.sock.close()


def read_netmap(rundir: Path, timeout: float) -> Netmap | None:
    """The control service's current netmap, or None if none arrives within ``timeout``."""
    watch = NetmapWatch(rundir)
    try:
        return watch.wait_for(lambda nm: True, timeout)
    except TimeoutError:
        return None
    finally:
        watch.close()
