"""sunbeam-derp: the DERP relay client service.

Will own: the connections to the home DERP region and to every region a peer lives in,
NotePreferred, keepalives and reconnects, relaying WireGuard and disco packets.

Runs today as the supervised service shell (config, runtime dir, ctl socket answering
health/status/stop, clean shutdown).
"""

from __future__ import annotations

from sunbeam.shared.runtime.service import run_service


def main(argv: list[str] | None = None) -> int:
    return run_service("derp", argv=argv)
