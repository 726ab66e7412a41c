"""sunbeam-control: the control-plane service.

Owns the node, disco and machine keys (``<state_dir>/keys.json``), the TS2021 connection to
the control server, registration, the streaming map and the netmap, which it publishes on
``ipc://<rundir>/control-pub.sock`` (XPUB: `NetmapSnapshot` to every new subscriber, then
`NetmapDelta`s, plus `ControlStatus`). Follows ``derp-pub`` (our home region becomes
PreferredDERP) and ``udp-pub`` (our UDP endpoints become MapRequest.Endpoints). Its ctl
socket answers `StatusRequest` with the control state (Starting, Registering, Running,
Reconnecting, NeedsLogin, Error(reason), Stopped); its account socket (account.py) takes
``sunbeam-ctl login`` and ``logout``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from sunbeam.shared.channels import DERP_PUB, UDP_PUB, Channel
from sunbeam.shared.keys import KeyFormatError, load_or_create
from sunbeam.shared.messages.dataplane import (
    DerpStatus,
    UdpStatus,
)
from sunbeam.shared.runtime import decoding_handler
from sunbeam.shared.runtime.service import Service, run_service

from . import lastderp
from .account import AccountServer
from .calls import Identity
from .client import ControlClient
from .publication import Publication
from .pubsocket import NetmapPublisher


class KeysUnusable(SystemExit):
    pass


def setup(svc: Service) -> None:
    ctx = svc.context
    try:
        keys, created = load_or_create(ctx.state_dir)
    except (KeyFormatError, OSError) as exc:
        print(f"sunbeam-control: {exc}", file=sys.stderr)
        raise KeysUnusable(2) from None
    svc.log.info("keys", created=created, node_key=keys.node_public_text, disco_key=keys.disco_public_text)
    publisher = NetmapPublisher(svc.loop, ctx.runtime_dir, svc.counters)
    publication = Publication(publisher, svc.log)
    region, ignored = lastderp.load(ctx.state_dir, ctx.control_url)
    if ignored:
        svc.log.warning("home_derp_ignored", reason=ignored)
    if region:
        publication.set_home_derp(region)
    me = Identity(keys=keys, capability_version=ctx.capability_version, hostname=ctx.hostname,
                  ephemeral=ctx.ephemeral, preferred_derp=region)
    client = ControlClient(svc, me, publication)
    follow_peers(svc, client)
    AccountServer(svc, client.on_account)
    svc.status_provider = publication.status
    svc.on_stop.append(client.stop)
    client.start()


def follow(svc: Service, channel: Channel, on_message: Callable[[Any], None]) -> None:
    """SUB to another service's PUB ``channel``; each decoded message to ``on_message``."""
    sub = channel.connect(svc.loop, svc.context.runtime_dir)
    svc.loop.on_readable(sub, decoding_handler(channel.codec, on_message, svc.counters,
                                               counter=f"{channel.name}_bad_message"))


def follow_peers(svc: Service, client: ControlClient) -> None:
    """The derp service's connected home region is our PreferredDERP; the udp service's
    endpoints are the Endpoints we advertise."""

    def on_derp(status: DerpStatus) -> None:
        if status.state == "connected" and status.home_region and status.home_region != client.me.preferred_derp:
            client.set_preferred_derp(status.home_region)

    def on_udp(status: UdpStatus) -> None:
        client.set_endpoints(tuple(status.endpoints))

    follow(svc, DERP_PUB, on_derp)
    follow(svc, UDP_PUB, on_udp)


def main(argv: list[str] | None = None) -> int:
    return run_service("control", setup, argv=argv)


if __name__ == "__main__":  # supervisord.conf runs `python -m sunbeam.services.control.main`
    raise SystemExit(main())
