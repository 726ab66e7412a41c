"""Every fuzz target, by name (see the ``targets_*`` modules for what each one drives)."""

from __future__ import annotations

from .harness import Target
from .targets_filter import TARGETS as _FILTER
from .targets_map import TARGETS as _MAP
from .targets_ts2021 import TARGETS as _TS2021
from .targets_ip import TARGETS as _IP
from .targets_local import TARGETS as _LOCAL
from .targets_relay import TARGETS as _RELAY

TARGETS: dict[str, Target] = {t.name: t for t in (*_TS2021, *_MAP, *_FILTER, *_RELAY, *_IP, *_LOCAL)}

__all__ = ["TARGETS"]
