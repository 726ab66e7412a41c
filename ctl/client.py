"""The client side of the services' ctl sockets (REQ -> REP, one frame each way).

Every service binds ``ipc://<rundir>/<service>-ctl.sock``; `discover` lists the live ones
(stale files left by a crash are reported, not connected to), `request` sends one
`CtlRequest` and returns the `CtlReply`, or raises `CtlTimeout`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ..shared.runtime.rundir import socket_path
from ..shared.runtime.stale import SocketState, probe

if TYPE_CHECKING:
    import zmq

    from ..shared.messages.ctl import CtlReply, CtlRequest, StatusReply

# = CTL.name (shared/channels.py; tests/unit/test_ctl_imports.py holds them equal): channels
# loads zmq and every message type, which `connect` imports only once supervisord is
# starting, and `discover` runs before (is this context running?)
CTL_NAME = "{service}-ctl"
CTL_SUFFIX = CTL_NAME.format(service="") + ".sock"  # "-ctl.sock"


class CtlTimeout(TimeoutError):
    pass


class Found(NamedTuple):  # not a dataclass: `dataclasses` is one more import before supervisord starts
    service: str
    path: Path
    live: bool


def ctl_path(rundir: Path, service: str) -> Path:
    """= ``CTL.path(rundir, service=service)``."""
    return socket_path(rundir, CTL_NAME.format(service=service))


def discover(rundir: Path) -> list[Found]:
    if not rundir.is_dir():
        return []
    found = []
    for path in sorted(rundir.glob(f"*{CTL_SUFFIX}")):
        found.append(Found(path.name[: -len(CTL_SUFFIX)], path, probe(path) is SocketState.LIVE))
    return found


def request(path: Path, msg: CtlRequest, *, timeout: float = 2.0, context: zmq.Context[Any] | None = None) -> CtlReply:
    import zmq

    from ..shared.messages.ctl import CTL_REPLY_CODEC, CTL_REQUEST_CODEC

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


def service_status(rundir: Path, service: str, *, timeout: float = 2.0) -> StatusReply | None:
    """``service``'s `StatusReply`; None when its ctl socket is not live, it does not answer
    within ``timeout``, or it answers something else."""
    path = ctl_path(rundir, service)
    if probe(path) is not SocketState.LIVE:
        return None
    from ..shared.messages.ctl import StatusReply, StatusRequest

    try:
        reply = request(path, StatusRequest(), timeout=timeout)
    except CtlTimeout:
        return None
    return reply if isinstance(reply, StatusReply) else None


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
