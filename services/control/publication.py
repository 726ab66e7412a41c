"""What the control service tells the others: state, status and the netmap (with seq).

Holds the control state machine's current state and turns builder changes into
`NetmapSnapshot`/`NetmapDelta` messages with consecutive ``seq``. The first netmap of the
process goes out as a snapshot, later ones as deltas; the publisher keeps the latest
snapshot for services that subscribe later. Owned by the control service's loop thread.
"""

from __future__ import annotations

import time

from sunbeam.shared.messages.netmap import ControlStatus, NetmapDelta, NetmapSnapshot
from sunbeam.shared.netmap import Netmap, NetmapBuilder, NetmapChange
from sunbeam.shared.runtime.log import StructLogger

from .expiry import flag_change, flag_netmap
from .pubsocket import NetmapPublisher
from .state import State, check_transition


class Publication:
    def __init__(self, publisher: NetmapPublisher, log: StructLogger) -> None:
        self.publisher = publisher
        self.log = log
        self.state = State.STARTING
        self.reason: str | None = None
        self.auth_url = ""
        self.since = time.time()
        self.seq = 0
        self.home_derp = 0
        self.netmap: Netmap | None = None

    def set_state(self, state: State, reason: str | None = None, *, auth_url: str = "") -> None:
        """``auth_url``: NeedsLogin's pending login URL."""
        check_transition(self.state, state)
        if state is not self.state or reason != self.reason or auth_url != self.auth_url:
            if state is not self.state:
                self.since = time.time()
                self.log.info("control_state", state=state.value, reason=reason)
            self.state, self.reason, self.auth_url = state, reason, auth_url
            self.publisher.publish_status(self.status())

    def set_home_derp(self, region: int) -> None:
        self.home_derp = region
        self.publisher.publish_status(self.status())

    def publish_change(self, change: NetmapChange, builder: NetmapBuilder) -> None:
        """Publish ``change``; peers with an expired key go out unreachable (expiry.py)."""
        now = time.time()
        self.seq += 1
        self.netmap = flag_netmap(builder.snapshot(), now)
        change = flag_change(change, now)
        snapshot = NetmapSnapshot(seq=self.seq, netmap=self.netmap)
        if self.publisher.snapshot is None:
            self.publisher.publish_snapshot(snapshot)
        else:
            self.publisher.publish_delta(NetmapDelta.from_change(self.seq, change), snapshot)
        self.publisher.publish_status(self.status())

    def status(self) -> ControlStatus:
        node = self.netmap.self_node if self.netmap else None
        return ControlStatus(
            state=self.state.value, reason=self.reason, node_id=node.id if node else None,
            addresses=node.addresses if node else (), peers=len(self.netmap.peers) if self.netmap else 0,
            home_derp=self.home_derp, since=self.since, hostname=(node.hostname or "") if node else "",
            name=node.name if node else "", domain=(self.netmap.domain or "") if self.netmap else "",
            auth_url=self.auth_url,
        )
