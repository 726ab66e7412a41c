"""`PingServer`: the proxy's ``proxy-ping`` REP socket (messages in `ping`).

One request at a time, as REP requires: while a `PingRun` is in progress the socket is
not read (further requests wait in ZeroMQ's queue), and its `PingResult` is the one reply
to that request. A request that cannot start (undecodable, no netmap, no address of ours
in the family, no route) is answered at once with ``error`` set and every rtt None.

The echo requests go out through `IpPlane.send` (routing by AllowedIPs); echo replies
come back from `IpPlane` as `EchoReplied`; the run's timeout is one loop timer.

Ownership: the proxy's loop thread.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

import zmq
from sunbeam.shared.channels import PROXY_PING
from sunbeam.shared.messages.codec import BadMessage
from sunbeam.shared.messages.ping import (
    PING_REPLY_CODEC,
    PING_REQUEST_CODEC,
    PingPeer,
    PingResult,
)
from sunbeam.shared.proto.ip import EchoReplied
from sunbeam.shared.runtime import TimerHandle
from sunbeam.shared.runtime.service import Service

from .pingrun import PingRun
from .plane import IpPlane
from .routing import self_address_for

__all__ = ["PingServer"]


class PingServer:
    def __init__(self, svc: Service, plane: IpPlane) -> None:
        self.svc = svc
        self.loop = svc.loop
        self.plane = plane
        self.run: PingRun | None = None
        self.pending: dict[tuple[int, int], PingRun] = {}
        """The echo awaiting its reply, keyed by (identifier, sequence)."""
        self._timer: TimerHandle | None = None
        self.sock: zmq.Socket[Any] = PROXY_PING.bind(self.loop, svc.context.runtime_dir)
        self.loop.on_readable(self.sock, self._on_request)
        plane.on_echo_reply = self._on_echo_reply

    def _on_request(self, sock: zmq.Socket[Any]) -> None:
        try:
            frame = sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            return
        self.svc.counters.incr("ping_requests")
        try:
            request = PING_REQUEST_CODEC.decode(frame)
        except BadMessage as exc:
            self._reply(PingResult(dst_ip="", rtts=[], error=f"bad request: {exc}"))
            return
        run, error = self._start(request)
        if run is None:
            self._reply(PingResult(dst_ip=request.dst_ip, rtts=[None] * request.count, error=error))
            return
        self.run = run
        self.loop.remove_reader(self.sock)  # REP: no next request before this reply
        self._next()

    def _start(self, request: PingPeer) -> tuple[PingRun | None, str]:
        try:
            dst = str(ipaddress.ip_address(request.dst_ip))
        except ValueError:
            return None, f"not an IP address: {request.dst_ip!r}"
        if self.plane.netmap is None:
            return None, "no netmap yet"
        src = self_address_for(self.plane.netmap, dst)
        if src is None:
            return None, f"no address of ours in the family of {dst}"
        if self.plane.routes.lookup(dst) is None:
            return None, f"no route to {dst}"
        ident = int.from_bytes(os.urandom(2), "big")
        return PingRun(request, src, dst, ident), ""

    def _next(self) -> None:
        run = self.run
        assert run is not None
        packet = run.next_packet(self.loop.now())
        if packet is None:
            self._finish(run.result())
            return
        pending = run.pending
        assert pending is not None and run.deadline is not None
        self.pending[pending] = run
        if not self.plane.send(packet, run.dst_text):
            self.pending.pop(pending, None)
            self._finish(run.abandon(f"no route to {run.dst_text}"))
            return
        self.svc.counters.incr("ping_sent")
        self._timer = self.loop.call_at(run.deadline, self._on_timer)

    def _on_echo_reply(self, reply: EchoReplied) -> None:
        run = self.pending.get((reply.ident, reply.seq))
        if run is None or not run.on_echo_reply(reply.src, reply.ident, reply.seq, self.loop.now()):
            self.svc.counters.incr("ping_unmatched_reply")
            return
        del self.pending[(reply.ident, reply.seq)]
        self._cancel_timer()
        self._next()

    def _on_timer(self) -> None:
        self._timer = None
        run = self.run
        if run is None:
            return
        key = run.pending
        if run.on_timer(self.loop.now()):
            self.pending.pop(key, None)  # type: ignore[arg-type]
            self.svc.counters.incr("ping_timeouts")
            self._next()
        elif run.deadline is not None:  # fired a little early: wait for the rest
            self._timer = self.loop.call_at(run.deadline, self._on_timer)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _finish(self, result: PingResult) -> None:
        self.run = None
        self._cancel_timer()
        self._reply(result)
        self.loop.on_readable(self.sock, self._on_request)

    def _reply(self, result: PingResult) -> None:
        self.sock.send(PING_REPLY_CODEC.encode(result))
