"""The control service's account socket: ``sunbeam-ctl login`` and ``sunbeam-ctl logout``.

Socket: ``control-account`` (shared/channels.py), ROUTER bound by the control service
(clients use REQ); the requests and replies are in shared/messages/account.py. After an ok
logout the node is logged out at the server and the service sends nothing until the next
login.

ROUTER rather than REP: a logout is answered after a round trip to the server, and the
loop must neither block nor stop reading meanwhile.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import zmq
from sunbeam.shared.channels import CONTROL_ACCOUNT
from sunbeam.shared.messages.account import (
    ACCOUNT_REPLY_CODEC,
    ACCOUNT_REQUEST_CODEC,
    AccountReply,
    AccountRequest,
    LoginRequest,
)
from sunbeam.shared.messages.codec import BadMessage
from sunbeam.shared.runtime.service import Service

__all__ = ["AccountReply", "AccountRequest", "AccountServer", "LoginRequest", "Respond"]



Respond = Callable[[AccountReply], None]


class AccountServer:
    """Reads requests and hands each to ``handle(request, respond)``; ``respond`` may be
    called later, once."""

    def __init__(self, svc: Service, handle: Callable[[AccountRequest, Respond], None]) -> None:
        self.svc = svc
        self.handle = handle
        self.sock = CONTROL_ACCOUNT.bind(svc.loop, svc.context.runtime_dir)
        svc.loop.on_readable(self.sock, self._on_readable)

    def _on_readable(self, _source: Any) -> None:
        while True:
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 3 or frames[1]:
                self.svc.counters.incr("account_bad_envelope")
                continue
            route = frames[0]
            try:
                req = ACCOUNT_REQUEST_CODEC.decode(frames[2])
            except BadMessage as exc:
                self.svc.counters.incr("account_bad_request")
                self._send(route, AccountReply(ok=False, message=f"bad request: {exc}"))
                continue
            self.handle(req, functools.partial(self._send, route))

    def _send(self, route: bytes, reply: AccountReply) -> None:
        try:
            self.sock.send_multipart([route, b"", ACCOUNT_REPLY_CODEC.encode(reply)], zmq.NOBLOCK)
        except zmq.ZMQError:  # the client went away: nobody to tell
            self.svc.counters.incr("account_reply_dropped")
