"""The client side of the services' ctl sockets (REQ -> REP, one frame each way).

Every service binds ``ipc://<rundir>/<service>-ctl.sock``; `discover` lists the live ones
(stale files left by a crash are reported, not connected to), `request` sends one
`CtlRequest` and returns the `CtlReply`, or raises `CtlTimeout`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from ..shared.channels import CTL
from ..shared.messages.ctl import CTL_REPLY_CODEC, CTL_REQUEST_CODEC, CtlReply, CtlRequest
from ..shared.runtime.stale import SocketState, probe

CTL_SUFFIX = CTL.name.format(service="") + ".sock"  # "-ctl.sock"


class CtlTimeout(TimeoutError):
    pass


@dataclass(frozen=True)
class Found:
    service: str
    path: Path
    live: bool


def discover(rundir: Path) -> list[Found]:
    if not rundir.is_dir():
        return []
    found = []
    for path in sorted(rundir.glob(f"*{CTL_SUFFIX}")):
        found.append(Found(path.name[: -len(CTL_SUFFIX)], path, probe(path) is SocketState.LIVE))
    return found


def request(path: Path, msg: CtlRequest, *, timeout: float = 2.0, context: zmq.Context[Any] | None = None) -> CtlReply:
    ctx = context or zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, int(timeout * 1000))
    sock.setsockopt(zmq.SNDTIMEO, int(timeout * 1000))
    try:
        sock.connect(f"ipc://{path}")
        sock.send(CTL_REQUEST_CODEC.encode(msg))
        return CTL_REPLY_CODEC.decode(sock.recv())
    except zmq.Again as exc:
        raise CtlTimeout(f"no answer from {path} within {timeout}s") from exc
    finally:
        sock.close()


def ask_each(found: list[Found], msg: CtlRequest, *, timeout: float = 2.0) -> tuple[list[tuple[Found, CtlReply]], list[str]]:
    """``msg`` to each of ``found`` in turn: the (service, reply) pairs, and the services
    that did not answer within ``timeout``."""
    replies: list[tuple[Found, CtlReply]] = []
    silent: list[str] = []
    for f in found:
        try:
            replies.append((f, request(f.path, msg, timeout=timeout)))
        except CtlTimeout:
            silent.append(f.service)
    return replies, silent
