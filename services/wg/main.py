"""sunbeam-wg: one WireGuard worker (``--worker K`` of ``wg_workers``).

Owns the handshakes, sessions, replay windows and timers of the peers whose node key hashes
to this worker (`sunbeam.shared.sharding.owner`), and encrypts/decrypts for them; see
`worker.py` for its sockets. Its ctl socket also answers `PeersRequest` with the per-peer
stats of the peers it owns (`Worker.peer_stats`), which outlive a restart of the worker
(`statsfile.py`). The node key IS the WireGuard static key.
"""

from __future__ import annotations

import sys

from sunbeam.shared.keys import KeyFormatError, load_or_create
from sunbeam.shared.runtime.service import Service, run_service

from .service import Worker


class KeysUnusable(SystemExit):
    pass


def setup(svc: Service) -> None:
    try:
        keys, _ = load_or_create(svc.context.state_dir)
    except (KeyFormatError, OSError) as exc:  # e.g. keys.json readable by others: one line, exit 2
        print(f"sunbeam-{svc.name}: {exc}", file=sys.stderr)
        raise KeysUnusable(2) from None
    worker = Worker(svc, keys.node.private_bytes())
    svc.extra_counters = worker.health_counters
    svc.peers_provider = worker.peer_stats
    svc.on_stop.append(worker.stats_saver.flush)  # the totals a restarted worker continues


def main(argv: list[str] | None = None) -> int:
    return run_service("wg", setup, argv=argv, sharded=True)


if __name__ == "__main__":  # supervisord.conf runs `python -m sunbeam.services.wg.main`
    raise SystemExit(main())
