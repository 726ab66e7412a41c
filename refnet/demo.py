"""`sunbeam-refnet demo`: the main job on a fresh machine, end to end.

1. the reference network: Headscale + two real tailscaled peers in a private namespace;
2. sunbeam's whole pipeline (`supervisord -c supervisord.conf`) joined to it inside the
   namespace with the ephemeral pre-auth key (so the demo node vanishes afterwards);
3. shows ``sunbeam-ctl status``, a real peer pinging sunbeam over the tailnet (ICMP inside
   WireGuard), sunbeam pinging a peer, and a page fetched from a peer through sunbeam's
   own SOCKS5 listener (127.0.0.1:1080 inside the namespace, peer named by its hostname);
4. tears everything down (unless ``--keep``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import network


def _log(msg: str) -> None:
    print(f"==> {msg}", file=sys.stderr, flush=True)


def find_supervisord_conf(explicit: str | None) -> Path:
    for candidate in (explicit, os.environ.get("SUNBEAM_SUPERVISORD_CONF"), Path.cwd() / "supervisord.conf",
                      Path(__file__).resolve().parents[1] / "supervisord.conf"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise RuntimeError("supervisord.conf not found (run from the sunbeam checkout or pass --supervisord-conf)")


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


def _wait_running(env: dict, timeout: float = 40) -> str:
    deadline = time.monotonic() + timeout
    out = ""
    while time.monotonic() < deadline:
        res = _run(["sunbeam-ctl", "status"], env)
        out = res.stdout
        if res.returncode == 0:
            return out
        time.sleep(0.5)
    raise RuntimeError(f"sunbeam did not reach Running within {timeout}s:\n{out}")


def run(keep: bool, conf: str | None) -> int:
    from .cli import describe

    conf_path = find_supervisord_conf(conf)
    info = network.up(2, log=_log)
    base = Path(tempfile.mkdtemp(prefix="sb-demo-"))
    os.chmod(base, 0o700)
    env = sunbeam_env(info, base)
    (base / "run").mkdir(mode=0o700, exist_ok=True)
    sup = None
    try:
        print(describe(info))
        _log(f"starting sunbeam: supervisord -c {conf_path} (inside the namespace)")
        sup = subprocess.Popen(info["exec_prefix"] + ["supervisord", "-c", str(conf_path)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        status = _wait_running(env)
        _log("sunbeam-ctl status:")
        print(status.rstrip())
        ours = next(line.split(": ", 1)[1].split(", ")[0] for line in status.splitlines()
                    if line.startswith("addresses:"))
        a, b = info["peers"]
        _log(f"a real tailscaled ({a['name']}) pings sunbeam at {ours} (ICMP inside WireGuard):")
        for _attempt in range(3):  # the first echo also waits for the WireGuard handshake
            res = _run(a["tailscale_cli"] + ["ping", "--icmp", "--c=3", "--until-direct=false", ours], timeout=90)
            if res.returncode == 0:
                break
        print(res.stdout.rstrip() or res.stderr.rstrip())
        ok = res.returncode == 0
        _log(f"sunbeam-ctl ping {b['name']}:")
        res = _run(["sunbeam-ctl", "ping", b["name"], "-c", "3"], env, timeout=60)
        print(res.stdout.rstrip() or res.stderr.rstrip())
        ok &= res.returncode == 0
        url = f"http://{b['name']}:{b['service_port']}/"
        _log(f"curl --socks5-hostname 127.0.0.1:{SOCKS_PORT} {url}   (through sunbeam):")
        res2 = _run(info["exec_prefix"] + ["curl", "-sS", "--fail", "--max-time", "30", "--socks5-hostname",
                                           f"127.0.0.1:{SOCKS_PORT}", url], timeout=60)
        print(res2.stdout.rstrip() or res2.stderr.rstrip())
        ok &= res2.returncode == 0
        return 0 if ok else 1
    finally:
        if keep:
            _log(f"kept running; sunbeam env in {base}; remove with: sunbeam-refnet down --name {info['name']}")
        else:
            if sup is not None and sup.poll() is None:
                sup.send_signal(signal.SIGTERM)
                try:
                    sup.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    sup.kill()
            _log("tearing down: " + "; ".join(network.down(info["name"])))
            shutil.rmtree(base, ignore_errors=True)
