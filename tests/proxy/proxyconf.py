"""One config file for a real `sunbeam-proxy` under test: a context whose control URL leads
nowhere (the test plays control and the WireGuard worker), and the listeners it names."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proxy_env(tmp_path: Path, listeners: list[tuple[str, str]], extra: str = "") -> tuple[Path, dict[str, str]]:
    """``(rundir, env)`` for a proxy whose config has ``listeners`` (``(kind, "host:port")``)
    and the context lines ``extra``; the env names the config and nothing else of ours."""
    rundir = tmp_path / "run"
    rundir.mkdir(mode=0o700)
    text = f"""
[contexts.t]
control_url = "http://127.0.0.1:9"
auth_key = "tskey-unit-test"
runtime_dir = "{rundir}"
state_dir = "{tmp_path / 'state'}"
wg_workers = 1
{extra}
"""
    for kind, listen in listeners:
        text += f'[[contexts.t.listeners]]\nkind = "{kind}"\nlisten = "{listen}"\n'
    cfg = tmp_path / "config.toml"
    cfg.write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUNBEAM_")} | {"SUNBEAM_CONFIG": str(cfg)}
    return rundir, env
