"""sunbeam-wg: one WireGuard worker (``--worker K`` of ``wg_workers``).

Owns the handshakes, sessions, replay windows and timers of the peers whose node key hashes
to this worker (`sunbeam.shared.sharding.owner`), and encrypts/decrypts for them; see
`worker.py` for its sockets. Its ctl socket also answers `PeersRequest` with the per-peer
stats of the peers it owns (`Worker.peer_stats`). The node key IS the WireGuard static key.
"""

from __future__ import annotations

from sunbeam.shared.runtime.service import Service, run_service

from .worker import Worker


def setup(svc: Service) -> None:
    worker = Worker(svc)
    svc.extra_counters = worker.health_counters
    svc.peers_provider = worker.peer_stats


def main(argv: list[str] | None = None) -> int:
    return run_service("wg", setup, argv=argv, sharded=True)
