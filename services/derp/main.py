"""sunbeam-derp: the DERP relay client service.

Owns the connections to the home DERP region and to every region a peer lives in
(`connection.RegionConnection` around the sans-IO `sunbeam.shared.proto.derp` core),
NotePreferred, keepalives and reconnects, and relays packets between DERP and the other
services; sockets and routing in `service.py`, region choice in `regions.py`.
"""

from __future__ import annotations

import sys

from sunbeam.shared.keys import KeyFormatError
from sunbeam.shared.runtime.service import Service, run_service

from .service import DerpService


class KeysUnusable(SystemExit):
    pass


def setup(svc: Service) -> None:
    service = DerpService(svc)
    try:
        service.start()
    except (KeyFormatError, OSError) as exc:
        print(f"sunbeam-derp: {exc}", file=sys.stderr)
        raise KeysUnusable(2) from None


def main(argv: list[str] | None = None) -> int:
    return run_service("derp", setup, argv=argv)


if __name__ == "__main__":  # supervisord.conf runs `python -m sunbeam.services.derp.main`
    raise SystemExit(main())
