"""sunbeam-wg: one WireGuard worker (``--worker K`` of ``wg_workers``).

Will own: the handshakes, sessions, replay windows and timers of the peers whose node key
hashes to this worker; encryption and decryption for them.

Runs today as the supervised service shell (config, runtime dir, ctl socket
``wg-K-ctl.sock`` answering health/status/stop, clean shutdown).
"""

from __future__ import annotations

from sunbeam.shared.runtime.service import run_service


def main(argv: list[str] | None = None) -> int:
    return run_service("wg", argv=argv, sharded=True)
