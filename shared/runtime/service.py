"""The common `main` of every sunbeam service process.

``run_service(name, setup)`` does, in order:

1. parse ``--config PATH --context NAME`` (plus ``--worker K`` for sharded services);
2. load the context (`load_config`); a `ConfigError` prints one line
   ``sunbeam-<name>: config error: ...`` and exits 2 (supervisord gives up after its retries
   instead of looping on a crash trace);
3. umask 077; create the context's runtime directory (0700), structured logging at the
   context's level;
4. one `Shutdown` fed by SIGTERM/SIGINT and by `StopRequest` on the service's ctl socket;
5. bind the ctl REP socket ``ipc://<rundir>/<service>-ctl.sock`` answering `HealthRequest`
   with `ServiceHealth`, `StatusRequest` with `StatusReply` (with ``service.routing``),
   `PeersRequest` with `PeersReply` (the peers from ``service.peers_provider``; none when
   unset), `StopRequest` with `Ack` (then shutdown);
6. call ``setup(service)`` so the service binds/connects its own sockets on ``service.loop``;
7. run the loop; exit 0 on a requested stop, non-zero when our own code raised.

Ownership: everything in `Service` belongs to the process's main thread.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import msgspec
import zmq

from ..channels import CTL
from ..config import ConfigError, Context, load_config
from ..messages.codec import BadMessage
from ..messages.ctl import (
    CTL_REPLY_CODEC,
    CTL_REQUEST_CODEC,
    Ack,
    ErrorReply,
    HealthRequest,
    PeersReply,
    PeersRequest,
    PeerStats,
    RoutingSettings,
    ServiceHealth,
    StatusReply,
    StatusRequest,
    StopRequest,
)
from .counters import Counters
from .log import StructLogger, get_logger
from .loop import ServiceLoop
from .rundir import RundirError, ensure_rundir
from .shutdown import Shutdown
from .stale import AlreadyRunning

__all__ = ["Service", "run_service"]


class Service(msgspec.Struct):
    """What a service's ``setup`` gets: its identity, config, loop, log and counters."""

    name: str
    context: Context
    loop: ServiceLoop
    log: StructLogger
    counters: Counters
    worker: int | None = None
    state: str = "starting"
    started_at: float = msgspec.field(default_factory=time.time)
    status_provider: Callable[[], Any] | None = None
    """Returns the `ControlStatus` put into `StatusReply` (the control service sets it)."""
    routing: RoutingSettings | None = None
    """The routing settings put into `StatusReply` (the proxy sets those it uses)."""
    peers_provider: Callable[[], list[PeerStats]] | None = None
    """Returns the `PeerStats` put into `PeersReply` (each wg worker sets it)."""
    extra_counters: Callable[[], dict[str, int]] | None = None
    """Replaces the plain counters in health replies (e.g. a worker adding its device's)."""
    on_stop: list[Callable[[], None]] = msgspec.field(default_factory=list)
    """Called after the loop ended and closed its sockets (e.g. to close TCP connections)."""

    def health(self) -> ServiceHealth:
        counters = self.extra_counters() if self.extra_counters else self.counters.snapshot()
        return ServiceHealth(service=self.name, pid=os.getpid(), state=self.state, started_at=self.started_at,
                             counters=counters)


def _serve_ctl(svc: Service, sock: zmq.Socket[Any]) -> None:
    try:
        frame = sock.recv(zmq.NOBLOCK)
    except zmq.Again:
        return
    try:
        req = CTL_REQUEST_CODEC.decode(frame)
    except BadMessage as exc:
        svc.counters.incr("ctl_bad_request")
        sock.send(CTL_REPLY_CODEC.encode(ErrorReply(message=f"bad request: {exc}")))
        return
    if isinstance(req, HealthRequest):
        sock.send(CTL_REPLY_CODEC.encode(svc.health()))
    elif isinstance(req, StatusRequest):
        control = svc.status_provider() if svc.status_provider else None
        sock.send(CTL_REPLY_CODEC.encode(StatusReply(health=svc.health(), control=control, routing=svc.routing)))
    elif isinstance(req, PeersRequest):
        peers = svc.peers_provider() if svc.peers_provider else []
        sock.send(CTL_REPLY_CODEC.encode(PeersReply(service=svc.name, peers=peers)))
    elif isinstance(req, StopRequest):
        svc.state = "stopping"
        sock.send(CTL_REPLY_CODEC.encode(Ack()))
        svc.loop.shutdown.set(f"stop request: {req.reason}")


def parse_args(name: str, argv: list[str] | None, sharded: bool) -> Any:
    """The command line (an ``argparse.Namespace``). The forms supervisord and the tests use
    (``--config X``, ``--context X``, ``--worker N``, each as two words) are read here;
    anything else goes to argparse, which is imported only then (~0.3 MB per process)."""
    args = sys.argv[1:] if argv is None else argv
    fast = _parse_simple(args, sharded)
    if fast is not None:
        return fast
    import argparse

    ap = argparse.ArgumentParser(prog=f"sunbeam-{name}", description=f"sunbeam {name} service")
    ap.add_argument("--config", help="config file (default: $SUNBEAM_CONFIG or ~/.config/sunbeam/config.toml)")
    ap.add_argument("--context", help="context name (default: $SUNBEAM_CONTEXT or default_context)")
    if sharded:
        ap.add_argument("--worker", type=int, default=0, help="this worker's number, 0..wg_workers-1")
    return ap.parse_args(argv)


def _parse_simple(args: list[str], sharded: bool) -> Any:
    """What argparse would return for ``args`` of the simple forms, else None."""
    values: dict[str, Any] = {"config": None, "context": None}
    if sharded:
        values["worker"] = 0
    if len(args) % 2:
        return None
    for option, value in zip(args[::2], args[1::2], strict=True):
        key = option[2:]
        if not option.startswith("--") or key not in values or value.startswith("-"):
            return None
        if key == "worker":
            try:
                values[key] = int(value)
            except ValueError:
                return None
        else:
            values[key] = value
    return SimpleNamespace(**values)


def run_service(name: str, setup: Callable[[Service], None] | None = None, *, argv: list[str] | None = None,
                sharded: bool = False) -> int:
    args = parse_args(name, argv, sharded)
    try:
        # the auth key is optional: without one the control service logs in interactively
        ctx = load_config(args.config, context=args.context, need_auth=False)
    except ConfigError as exc:
        print(f"sunbeam-{name}: config error: {exc}", file=sys.stderr)
        return 2
    worker = args.worker if sharded else None
    if worker is not None and not 0 <= worker < ctx.wg_workers:
        print(f"sunbeam-{name}: --worker {worker} is outside 0..{ctx.wg_workers - 1} (wg_workers)", file=sys.stderr)
        return 2
    ident = name if worker is None else f"{name}-{worker}"
    try:
        return _run(ident, ctx, worker, setup)
    except (AlreadyRunning, RundirError) as exc:
        print(f"sunbeam-{ident}: {exc}", file=sys.stderr)
        return 1


def _run(ident: str, ctx: Context, worker: int | None, setup: Callable[[Service], None] | None) -> int:
    os.umask(0o077)  # socket files, logs, keys: the owning user only, whoever started us
    rundir = ensure_rundir(ctx.runtime_dir)
    log = get_logger(ident, level=ctx.log_level.upper())
    with Shutdown() as shutdown:
        shutdown.install_signal_handlers()
        counters = Counters()
        loop = ServiceLoop(ident, shutdown, log=log, counters=counters)
        svc = Service(ident, ctx, loop, log, counters, worker)
        with loop:
            ctl = CTL.bind(loop, rundir, service=ident)
            loop.on_readable(ctl, lambda s: _serve_ctl(svc, s))
            if setup is not None:
                setup(svc)
            svc.state = "running"
            log.info("started", pid=os.getpid(), context=ctx.name, rundir=str(rundir))
            reason = loop.run()
        for callback in svc.on_stop:
            callback()
        log.info("stopped", reason=reason)
    return 0
