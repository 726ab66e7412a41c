"""Real tailscaled peers in userspace-networking mode, and the `tailscale` CLI against them.

Each peer ``peer-i`` (i from 1) owns, inside the namespace::

    <workdir>/peer-i/            state dir (tailscaled.state, logs), HOME for the processes
    <workdir>/peer-i/ts.sock     the LocalAPI socket the `tailscale` CLI talks to
    127.0.0.1:{11080+i}          tailscaled's SOCKS5 proxy into the tailnet
    127.0.0.1:{13128+i}          tailscaled's HTTP proxy into the tailnet
    127.0.0.1:{18000+i}          the peer's test HTTP service (testservice.py); reachable from
                                 the tailnet at <peer tailnet IP>:{18000+i}
    127.0.0.1:{19000+i}          the peer's raw TCP echo service, same forwarding

Environment, always: TS_NO_LOGS_NO_SUPPORT=true TS_DISABLE_PORTMAPPER=1 TS_DISABLE_UPNP=1;
TS_DEBUG_USE_DERP_HTTP=1 (plain-HTTP DERP) unless the network serves TLS, where instead
SSL_CERT_FILE names the network's CA (``ca_file``): Go's crypto/x509 then trusts that CA
alone, for the control server and for DERP; in DERP-only mode also TS_DEBUG_ALWAYS_USE_DERP=1.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from . import netns

SAFE_ENV = {
    "TS_NO_LOGS_NO_SUPPORT": "true",
    "TS_DISABLE_PORTMAPPER": "1",
    "TS_DISABLE_UPNP": "1",
}


def tailscaled_env(home: Path, derp_only: bool, ca_file: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TS_", "SSL_CERT_"))}
    env.update(SAFE_ENV)
    env["HOME"] = str(home)
    if ca_file is None:
        env["TS_DEBUG_USE_DERP_HTTP"] = "1"
    else:
        env["SSL_CERT_FILE"] = str(ca_file)
    if derp_only:
        env["TS_DEBUG_ALWAYS_USE_DERP"] = "1"
    return env


@dataclass
class Peer:
    index: int
    workdir: Path
    tailscaled: Path
    tailscale: Path
    ns: str
    derp_only: bool = False
    ca_file: Path | None = None  # the network's CA when it serves TLS
    label: str | None = None  # the name (hostname, state dir) instead of peer-<index>

    @property
    def name(self) -> str:
        return self.label or f"peer-{self.index}"

    @property
    def statedir(self) -> Path:
        return self.workdir / self.name

    @property
    def socket(self) -> Path:
        return self.statedir / "ts.sock"

    @property
    def socks5_port(self) -> int:
        return 11080 + self.index

    @property
    def http_proxy_port(self) -> int:
        return 13128 + self.index

    @property
    def service_port(self) -> int:
        return 18000 + self.index

    @property
    def echo_port(self) -> int:
        return 19000 + self.index

    @property
    def cli(self) -> list[str]:
        return [str(self.tailscale), "--socket", str(self.socket)]

    def start_daemon(self) -> subprocess.Popen:
        self.statedir.mkdir(parents=True, exist_ok=True)
        cmd = netns.exec_prefix(self.ns) + [
            str(self.tailscaled),
            "--tun=userspace-networking",
            f"--statedir={self.statedir}",
            f"--socket={self.socket}",
            "--port=0",
            f"--socks5-server=127.0.0.1:{self.socks5_port}",
            f"--outbound-http-proxy-listen=127.0.0.1:{self.http_proxy_port}",
        ]
        log = open(self.statedir / "tailscaled.log", "ab")
        return subprocess.Popen(cmd, env=tailscaled_env(self.statedir, self.derp_only, self.ca_file), stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def start_service(self) -> subprocess.Popen:
        import sys

        cmd = netns.exec_prefix(self.ns) + [
            sys.executable, "-m", "sunbeam.refnet.testservice", "--name", self.name,
            "--port", str(self.service_port), "--echo-port", str(self.echo_port),
        ]
        log = open(self.statedir / "testservice.log", "ab")
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)

    def wait_socket(self, proc: subprocess.Popen, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"tailscaled {self.name} exited with {proc.returncode}:\n{self.log_tail()}")
            if self.socket.exists():
                res = subprocess.run(self.cli + ["status", "--json"], capture_output=True, text=True, timeout=10)
                if res.returncode == 0 or "NeedsLogin" in res.stdout or "Stopped" in res.stdout:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"tailscaled {self.name} socket not ready after {timeout}s:\n{self.log_tail()}")

    def up_command(self, control_url: str, auth_key: str) -> list[str]:
        return self.cli + ["up", f"--login-server={control_url}", f"--auth-key={auth_key}",
                           f"--hostname={self.name}", "--accept-dns=false", "--timeout=60s"]

    def log_tail(self, n: int = 30) -> str:
        try:
            lines = (self.statedir / "tailscaled.log").read_text(errors="replace").splitlines()
            return "\n".join(lines[-n:])
        except OSError:
            return "(no log)"

    def status(self) -> dict:
        res = subprocess.run(self.cli + ["status", "--json"], capture_output=True, text=True, timeout=30)
        if res.returncode != 0:
            raise RuntimeError(f"tailscale status ({self.name}) failed: {res.stderr.strip()}")
        return json.loads(res.stdout)

    def ips(self) -> list[str]:
        return list(self.status()["Self"].get("TailscaleIPs") or [])

    def ping(self, target: str, *, count: int = 5, timeout: float = 60, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
        """`tailscale ping` (disco by default) from this peer to ``target``."""
        return subprocess.run(self.cli + ["ping", f"--c={count}", *extra, target],
                              capture_output=True, text=True, timeout=timeout)
