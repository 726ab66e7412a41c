"""sunbeam-udp: the UDP socket, inbound routing to the WireGuard workers, disco answers.

Entry point: the port from ``$SUNBEAM_UDP_PORT`` (0 = random), the disco key from the
state dir, the socket bound, then `service.UdpService` (which documents the sockets).
A bad port or unusable keys exit 2 (a configuration error), a port that cannot be bound 1.

``$SUNBEAM_DIRECT_SOCKETS`` (``1`` = on, ``0`` = off; default `DIRECT_DEFAULT`): the WireGuard
workers send and receive their direct peers' datagrams on their own sockets bound to our
port (shared/runtime/udpsock.py "Sharing the port"). Our socket then sets ``SO_REUSEPORT``, and the port goes
to the workers in ``PeerPath.port`` (0 when off: the workers keep sending through us). Since
``SO_REUSEPORT`` would let another process of this user bind the same port without an
error, the port is first bound without it (and let go) to check that it is free; when it is
not, but ``<rundir>/udp.port`` names it, it is ours: the direct sockets of our workers still
hold it after this service was killed, and we bind beside them.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
from pathlib import Path
from typing import Any

from sunbeam.shared.keys import KeyFormatError, load_or_create
from sunbeam.shared.proto.disco import DiscoBoxes
from sunbeam.shared.runtime.service import Service, run_service
from sunbeam.shared.runtime.udpsock import UdpSocket

from .service import UdpService

ENV_PORT = "SUNBEAM_UDP_PORT"
ENV_DIRECT = "SUNBEAM_DIRECT_SOCKETS"
DIRECT_DEFAULT = True
PORT_FILE = "udp.port"


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


def direct_from_env(env: Any = os.environ) -> bool:
    text = env.get(ENV_DIRECT, "").strip().lower()
    if not text:
        return DIRECT_DEFAULT
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise _fail(f"{ENV_DIRECT}={text!r}: expected 1 or 0")


def open_socket(port: int, svc: Service, direct: bool) -> UdpSocket:
    """The service's socket; with ``direct``, shareable with the workers' (module docstring)."""
    if not direct:
        return UdpSocket(port, svc.counters)
    marker = Path(svc.context.runtime_dir) / PORT_FILE
    family = None
    try:
        probe = UdpSocket(port, svc.counters, offload=False)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE or not port or _marked_port(marker) != port:
            raise
        svc.log.info("udp_port_shared", port=port, reason="held by our workers' direct sockets")
    else:
        port, family = probe.port, probe.family
        probe.close()
    udp = UdpSocket(port, svc.counters, reuse_port=True, family=family)
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(f"{udp.port}\n")
    tmp.replace(marker)
    return udp


def _marked_port(marker: Path) -> int:
    try:
        return int(marker.read_text().strip())
    except (OSError, ValueError):
        return -1


def setup(svc: Service) -> None:
    port = port_from_env()
    direct = direct_from_env()
    try:
        keys, created = load_or_create(svc.context.state_dir)
    except (KeyFormatError, OSError) as exc:
        raise _fail(str(exc)) from None
    try:
        udp = open_socket(port, svc, direct)
    except OSError as exc:
        raise _fail(f"cannot bind UDP port {port}: {exc.strerror or exc}", 1) from None
    svc.on_stop.append(udp.close)
    svc.counters.incr("offload.gro", int(udp.gro))
    svc.counters.incr("offload.gso", int(udp.gso))
    svc.log.info("udp_listening", port=udp.port, family="dual-stack" if udp.family == socket.AF_INET6 else "ipv4",
                 gro=udp.gro, gso=udp.gso, direct_sockets=direct, disco_key=keys.disco_public_text, keys_created=created)
    service = UdpService(svc, udp, DiscoBoxes(keys.disco.private_bytes()), keys.node.public,
                         direct_sockets=direct)
    svc.extra_counters = lambda: {**svc.counters.snapshot(), **service.paths.counters_snapshot()}


def main(argv: list[str] | None = None) -> int:
    return run_service("udp", setup, argv=argv)


if __name__ == "__main__":  # supervisord.conf runs `python -m sunbeam.services.udp.main`
    raise SystemExit(main())
