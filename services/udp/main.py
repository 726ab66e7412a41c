"""sunbeam-udp: the UDP socket, inbound routing to the WireGuard workers, disco answers.

Entry point: the port from ``$SUNBEAM_UDP_PORT`` (0 = random), the disco key from the
state dir, the socket bound, then `service.UdpService` (which documents the sockets).
A bad port or unusable keys exit 2 (a configuration error), a port that cannot be bound 1.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

from sunbeam.shared.keys import KeyFormatError, load_or_create
from sunbeam.shared.proto.disco import DiscoBoxes
from sunbeam.shared.runtime.service import Service, run_service

from .service import UdpService
from .udpsock import UdpSocket

ENV_PORT = "SUNBEAM_UDP_PORT"


class StartupFailed(SystemExit):
    pass


def _fail(message: str, code: int = 2) -> StartupFailed:
    print(f"sunbeam-udp: {message}", file=sys.stderr)
    return StartupFailed(code)


def port_from_env(env: Any = os.environ) -> int:
    text = env.get(ENV_PORT, "").strip() or "0"
    if not text.isdigit() or not 0 <= int(text) <= 0xFFFF:
        raise _fail(f"{ENV_PORT}={text!r}: expected a port number 0..65535 (0 = random)")
    return int(text)


def setup(svc: Service) -> None:
    port = port_from_env()
    try:
        keys, created = load_or_create(svc.context.state_dir)
    except (KeyFormatError, OSError) as exc:
        raise _fail(str(exc)) from None
    try:
        udp = UdpSocket(port, svc.counters)
    except OSError as exc:
        raise _fail(f"cannot bind UDP port {port}: {exc.strerror or exc}", 1) from None
    svc.on_stop.append(udp.close)
    svc.counters.incr("offload.gro", int(udp.gro))
    svc.counters.incr("offload.gso", int(udp.gso))
    svc.log.info("udp_listening", port=udp.port, family="dual-stack" if udp.family == socket.AF_INET6 else "ipv4",
                 gro=udp.gro, gso=udp.gso, disco_key=keys.disco_public_text, keys_created=created)
    service = UdpService(svc, udp, DiscoBoxes(keys.disco.private_bytes()), keys.node.public)
    svc.extra_counters = lambda: {**svc.counters.snapshot(), **service.paths.counters_snapshot()}


def main(argv: list[str] | None = None) -> int:
    return run_service("udp", setup, argv=argv)


if __name__ == "__main__":  # supervisord.conf runs `python -m sunbeam.services.udp.main`
    raise SystemExit(main())
