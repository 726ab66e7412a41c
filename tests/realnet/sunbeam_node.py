"""Run sunbeam's own services inside the reference network's namespace, for tests."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, NamedTuple

from sunbeam.ctl.watch import NetmapWatch


class SunbeamNode:
    """One sunbeam instance (its own state and runtime dirs) joined to a reference network."""

    def __init__(self, refnet: dict, *, hostname: str, auth_key: str | None = None, ephemeral: bool = False,
                 extra_env: dict[str, str] | None = None, listeners: list[dict] | None = None) -> None:
        self.refnet = refnet
        # short: unix socket paths must stay under 107 bytes
        self.base = Path(tempfile.mkdtemp(prefix="sb-"))
        os.chmod(self.base, 0o700)
        self.rundir = self.base / "run"
        self.statedir = self.base / "state"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SUNBEAM_")}
        self.env.update(
            SUNBEAM_RUNTIME_DIR=str(self.rundir), SUNBEAM_STATE_DIR=str(self.statedir),
            SUNBEAM_CONTROL_URL=refnet["control_url"], SUNBEAM_HOSTNAME=hostname,
            SUNBEAM_AUTH_KEY=auth_key or refnet["auth_keys"]["reusable"], SUNBEAM_LOG_LEVEL="debug",
            SUNBEAM_EPHEMERAL="true" if ephemeral else "false", XDG_CONFIG_HOME=str(self.base / "cfg"),
        )
        self.env.update(extra_env or {})
        if listeners:  # listeners live only in the config file; the env supplies the rest
            lines = ["[contexts.test]", f'control_url = "{refnet["control_url"]}"']
            for lst in listeners:
                lines.append("[[contexts.test.listeners]]")
                lines += [f"{k} = {v!r}" if isinstance(v, int) else f'{k} = "{v}"' for k, v in lst.items()]
            cfg = self.base / "config.toml"
            cfg.write_text("\n".join(lines) + "\n")
            self.env["SUNBEAM_CONFIG"] = str(cfg)
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, service: str = "control", *args: str, name: str | None = None) -> subprocess.Popen:
        """Start ``sunbeam-<service> args...``; ``name`` (default: the service) keys it here."""
        name = name or service
        log = open(self.base / f"{name}.log", "ab")
        proc = subprocess.Popen(self.refnet["exec_prefix"] + [f"sunbeam-{service}", *args], env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.procs[name] = proc
        return proc

    def start_pipeline(self, workers: int = 1) -> None:
        """Every service, as supervisord would run them (without supervisord)."""
        self.env["SUNBEAM_WG_WORKERS"] = str(workers)
        self.start("control")
        for k in range(workers):
            self.start("wg", "--worker", str(k), name=f"wg-{k}")
        for service in ("derp", "udp", "proxy"):
            self.start(service)

    def stop(self, service: str = "control", sig: int = signal.SIGTERM) -> int:
        proc = self.procs.pop(service)
        proc.send_signal(sig)
        return proc.wait(timeout=15)

    def close(self) -> None:
        if (self.rundir / "supervisord.pid").exists():  # started with `sunbeam-ctl connect`
            self.ctl("stop", timeout=60)
        for name in list(self.procs):
            try:
                self.stop(name)
            except subprocess.TimeoutExpired:
                proc = self.procs.get(name)
                if proc is not None:
                    proc.kill()
        shutil.rmtree(self.base, ignore_errors=True)

    def log(self, service: str = "control") -> str:
        for path in (self.base / f"{service}.log", self.rundir / f"{service}.log"):  # by hand / by supervisord
            if path.exists():
                return path.read_text(errors="replace")
        return ""

    def ctl(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """``sunbeam-ctl args...`` inside the namespace (``connect`` starts the daemon there)."""
        return subprocess.run(self.refnet["exec_prefix"] + ["sunbeam-ctl", *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def status(self) -> dict:
        res = self.ctl("status", "--json")
        return json.loads(res.stdout) if res.stdout.strip() else {}

    def control(self) -> dict:
        return (self.status().get("control") or {})

    def wait_state(self, state: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        control: dict = {}
        while time.monotonic() < deadline:
            control = self.control()
            # by hand, services start in parallel: Running also needs the proxy's listeners open
            # (it answers status only once they are), as `sunbeam-ctl connect` waits for every service
            if control.get("state") == state and (state != "Running" or "proxy" not in self.procs
                                                   or self.counters("proxy")):
                return control
            time.sleep(0.1)
        raise AssertionError(f"control state {state} not reached in {timeout}s; last {control}\n{self.log()[-3000:]}")

    def counters(self, service: str = "control") -> dict:
        for s in self.status().get("services", []):
            if s["service"] == service:
                return s["counters"]
        return {}

    def watch(self) -> NetmapWatch:
        return NetmapWatch(self.rundir)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    """``predicate()``'s first truthy value, polled every ``interval`` s; AssertionError
    naming ``what`` and the last value after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout}s (last {last})")


def until_ok(fn, timeout: float = 30.0):
    """Call ``fn`` (returning a CompletedProcess) once a second until it exits 0 or
    ``timeout`` passes; the last result."""
    deadline = time.monotonic() + timeout
    while True:
        res = fn()
        if res.returncode == 0 or time.monotonic() > deadline:
            return res
        time.sleep(1)


def service_pids(node: SunbeamNode) -> dict[str, int]:
    """Service name (``wg-0``, ``udp``, ...) -> pid, from ``sunbeam-ctl status --json``."""
    return {s["service"]: s["pid"] for s in node.status().get("services", [])}


class KilledRead(NamedTuple):
    nbytes: int  # bytes read until EOF
    sha256: str  # hex sha256 of those bytes
    killed: dict[str, int]  # service -> the pid that was sent SIGKILL


def read_killing(stream: IO[bytes], node: SunbeamNode, kills: list[tuple[int, str]]) -> KilledRead:
    """Read ``stream`` (e.g. a curl download's stdout) to EOF, hashing it, and SIGKILL
    ``node``'s service ``svc`` once ``after`` bytes have been read, for each ``(after, svc)``
    in ``kills`` (ascending ``after``). A kill whose ``after`` was never reached is absent
    from ``killed``."""
    pending = sorted(kills)
    digest = hashlib.sha256()
    got = 0
    killed: dict[str, int] = {}
    while chunk := stream.read1(1 << 16):  # type: ignore[attr-defined]  # a BufferedReader (Popen stdout)
        digest.update(chunk)
        got += len(chunk)
        while pending and got >= pending[0][0]:
            _, svc = pending.pop(0)
            killed[svc] = service_pids(node)[svc]
            os.kill(killed[svc], signal.SIGKILL)
    return KilledRead(got, digest.hexdigest(), killed)


def wait_restarted(node: SunbeamNode, killed: dict[str, int], timeout: float = 20.0) -> dict[str, int]:
    """Until every service in ``killed`` (service -> old pid) runs again under a new pid
    (supervisord restarted it); the services' pids then."""
    def restarted() -> dict[str, int] | None:
        now = service_pids(node)
        return now if all(now.get(svc) not in (None, pid) for svc, pid in killed.items()) else None

    return wait_for(restarted, timeout, f"restart of {sorted(killed)} (old pids {killed})")
