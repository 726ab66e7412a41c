"""`sunbeam-refnet demo`: the main job on a fresh machine, end to end.

1. the reference network: Headscale + two real tailscaled peers in a private namespace;
2. ``sunbeam-ctl connect`` inside the namespace: supervisord and sunbeam's whole pipeline
   join it with the ephemeral pre-auth key (so the demo node vanishes afterwards);
3. shows ``sunbeam-ctl status``, a real peer pinging sunbeam over the tailnet (ICMP inside
   WireGuard), ``sunbeam-ctl ping`` and ``peers``, and a page fetched from a peer through
   sunbeam's own SOCKS5 listener (127.0.0.1:1080 inside the namespace, peer by hostname);
4. ``sunbeam-ctl stop``, then tears the network down (unless ``--keep``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from . import network


def _log(msg: str) -> None:
    print(f"==> {msg}", file=sys.stderr, flush=True)


SOCKS_PORT = 1080


def sunbeam_env(info: dict, base: Path) -> dict[str, str]:
    config = base / "config.toml"
    config.write_text(f"""[contexts.demo]
control_url = "{info['control_url']}"
[[contexts.demo.listeners]]
kind = "socks5"
listen = "127.0.0.1:{SOCKS_PORT}"
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUNBEAM_")}
    env["SUNBEAM_CONFIG"] = str(config)
    env.update(SUNBEAM_CONTROL_URL=info["control_url"], SUNBEAM_AUTH_KEY=info["auth_keys"]["ephemeral"],
               SUNBEAM_EPHEMERAL="true", SUNBEAM_HOSTNAME="sunbeam-demo", SUNBEAM_WG_WORKERS="2",
               SUNBEAM_RUNTIME_DIR=str(base / "run"), SUNBEAM_STATE_DIR=str(base / "state"),
               XDG_CONFIG_HOME=str(base / "cfg"))
    return env


def _run(cmd: list[str], env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def _show(title: str, res: subprocess.CompletedProcess) -> bool:
    _log(title)
    print((res.stdout.rstrip() or res.stderr.rstrip()), flush=True)
    return res.returncode == 0


def run(keep: bool, conf: str | None) -> int:
    from .cli import describe

    info = network.up(2, log=_log)
    base = Path(tempfile.mkdtemp(prefix="sb-demo-"))
    os.chmod(base, 0o700)
    env = sunbeam_env(info, base)
    if conf:
        env["SUNBEAM_SUPERVISORD_CONF"] = str(Path(conf).absolute())
    ctl = info["exec_prefix"] + ["sunbeam-ctl"]
    connected = False
    try:
        print(describe(info))
        _log("sunbeam-ctl connect   (supervisord + every sunbeam service, inside the namespace)")
        res = _run(ctl + ["connect"], env, timeout=120)
        print(res.stdout.rstrip(), res.stderr.rstrip(), sep="\n" if res.stderr else "", flush=True)
        if res.returncode != 0:
            return 1
        connected = True
        ok = _show("sunbeam-ctl status:", _run(ctl + ["status"], env))
        ours = next(line.split(": ", 1)[1].split(", ")[0] for line in _run(ctl + ["status"], env).stdout.splitlines()
                    if line.startswith("addresses:"))
        a, b = info["peers"]
        for _attempt in range(3):  # the first echo also waits for the WireGuard handshake
            res = _run(a["tailscale_cli"] + ["ping", "--icmp", "--c=3", "--until-direct=false", ours], timeout=90)
            if res.returncode == 0:
                break
        ok &= _show(f"a real tailscaled ({a['name']}) pings sunbeam at {ours} (ICMP inside WireGuard):", res)
        ok &= _show(f"sunbeam-ctl ping {b['name']}:", _run(ctl + ["ping", b["name"], "-c", "3"], env, timeout=60))
        url = f"http://{b['name']}:{b['service_port']}/"
        ok &= _show(f"curl --socks5-hostname 127.0.0.1:{SOCKS_PORT} {url}   (through sunbeam):",
                    _run(info["exec_prefix"] + ["curl", "-sS", "--fail", "--max-time", "30", "--socks5-hostname",
                                                f"127.0.0.1:{SOCKS_PORT}", url], timeout=60))
        ok &= _show("sunbeam-ctl peers:", _run(ctl + ["peers"], env))
        return 0 if ok else 1
    finally:
        if keep:
            _log(f"kept running; sunbeam env in {base}; remove with: sunbeam-refnet down --name {info['name']}")
        else:
            if connected:
                _show("sunbeam-ctl stop:", _run(ctl + ["stop"], env, timeout=60))
            _log("tearing down: " + "; ".join(network.down(info["name"])))
            shutil.rmtree(base, ignore_errors=True)
