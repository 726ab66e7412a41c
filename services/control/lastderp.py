"""Our last home DERP region, remembered across restarts: ``<state_dir>/home-derp.json``.

    {"control_url": "http://127.0.0.1:8080", "region": 999}

Sent as Hostinfo.NetInfo.PreferredDERP from the first request of the next start (register,
lite update, map stream). Without it a restarted node told the server "no home DERP" until
its first map arrived, and for that second or two the server showed peers a node they
could not reach ("no UDP or DERP addr": their WireGuard then waits 5 s to retry).

The region is a control server's number, so it is only used against the server it came
from. A missing, unreadable or malformed file means "none remembered" (the first map picks
one); it is rewritten atomically (temp file + rename) whenever the region changes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

FILE = "home-derp.json"


def load(state_dir: Path, control_url: str) -> tuple[int, str | None]:
    """The remembered region for ``control_url`` (0 when none), and why a file was ignored."""
    path = state_dir / FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return 0, None
    except (OSError, ValueError) as exc:
        return 0, f"{path}: unreadable ({exc})"
    region = data.get("region") if isinstance(data, dict) else None
    if not isinstance(region, int) or isinstance(region, bool) or not 0 < region < 1 << 31:
        return 0, f"{path}: no valid region in it"
    if data.get("control_url") != control_url:
        return 0, None  # another server's numbering
    return region, None


def save(state_dir: Path, control_url: str, region: int) -> None:
    """Remember ``region``; raises OSError (the caller logs it: losing it costs nothing lasting)."""
    path = state_dir / FILE
    tmp = path.with_name(f".{FILE}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps({"control_url": control_url, "region": region}) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
