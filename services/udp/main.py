"""sunbeam-udp: the UDP socket, disco, STUN and endpoint discovery service.

Will own: the one UDP socket (IPv4 + IPv6), routing inbound WireGuard datagrams to the
owning worker by receiver index, disco pings/pongs and the best path per peer.

Runs today as the supervised service shell (config, runtime dir, ctl socket answering
health/status/stop, clean shutdown).
"""

from __future__ import annotations

from sunbeam.shared.runtime.service import run_service


def main(argv: list[str] | None = None) -> int:
    return run_service("udp", argv=argv)
