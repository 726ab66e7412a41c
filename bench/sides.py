"""The two contestants of bench_vs_tailscaled.py, each giving a SOCKS5 proxy into the same
reference network, plus the process measurements (RSS, CPU time) both are judged by.

    Sunbeam     `sunbeam-ctl connect` in the namespace (supervisord + every service),
                SOCKS5 on 127.0.0.1:SUNBEAM_SOCKS; processes = supervisord + services
    Tailscaled  one more real tailscaled peer (`network.add_peer`), userspace networking,
                its SOCKS5 on 127.0.0.1:11080+i; processes = that tailscaled

Both join with the same reusable pre-auth key and reach the same target peer.

Also what every bench that drives a contestant's SOCKS5 needs (bench_vs_tailscaled.py,
bench_direct.py, bench_links.py): `curl_socks` (curl through it, in a namespace),
`wait_reachable` (until the target answers through it), `fetch_blob` / `post_upload` (one
timed, length-checked download / upload of the target's test service), `write_payload`
(the file to upload). ``ns`` is a refnet info or host dict: its ``exec_prefix`` runs curl
in the namespace the contestant's proxy listens in.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Protocol

from sunbeam.refnet import network

SUNBEAM_SOCKS = 1080
MB = 1 << 20
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            pass
    return total


def pss_bytes(pids: list[int]) -> int:
    """Proportional set size: shared pages (libpython, libcrypto, libzmq...) split among the
    processes that map them, so a sum over processes counts each page once."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
                    break
        except (OSError, IndexError, ValueError):
            pass
    return total


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total / CLK_TCK


def first_events(log: Path) -> dict[str, float]:
    """Event name -> wall time of its first line in a service log (JSON lines; a
    ``control_state`` event counts as ``state_<State>``). An unreadable log has none."""
    seen: dict[str, float] = {}
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return seen
    for line in text.splitlines():
        try:
            event = json.loads(line)
            at = datetime.fromisoformat(event["ts"].replace("Z", "+00:00")).timestamp()
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
        name = event.get("event")
        if name == "control_state":
            name = f"state_{event.get('state')}"
        seen.setdefault(str(name), at)
    return seen


def connect_parts(control_log: Path, wall0: float, total: float) -> dict[str, float]:
    """``connect`` split by the control service's log events: ``startup`` (until the TS2021
    connection is up: ctl, supervisord, every service starting), ``register_wait`` (the
    register request until its answer), ``first_map_wait`` (the streaming map request until
    the first map response), ``announce_wait`` (until the server showed our home DERP region
    in its view of us, which it shows peers at the same time: Running), ``rest`` (until the
    ctl printed Connected)."""
    seen = first_events(control_log)
    try:
        running = seen["state_Running"]
        marks = [wall0, seen["ts2021_connected"], seen["registered"], seen.get("announce_wait", running), running]
    except KeyError:
        return {}
    parts = [round(b - a, 3) for a, b in zip(marks, marks[1:], strict=False)]
    return {"startup": parts[0], "register_wait": parts[1], "first_map_wait": parts[2], "announce_wait": parts[3],
            "rest": round(total - sum(parts), 3)}


class Side(Protocol):
    """A contestant: its name, its SOCKS5 proxy (``host:port``) and its processes."""

    name: str
    socks: str

    def pids(self) -> list[int]: ...


class Sunbeam:
    name = "sunbeam"

    def __init__(self, info: dict, *, workers: int = 2, hostname: str = "sunbeam-bench",
                 socks_port: int = SUNBEAM_SOCKS, listeners: list[dict] | None = None) -> None:
        """``listeners``: more listeners besides the SOCKS5 one, as config tables
        (``{"kind": "forward", "listen": "127.0.0.1:1081", "target": "peer-2:18002"}``)."""
        self.info = info
        self.base = Path(tempfile.mkdtemp(prefix="sb-bench-"))
        os.chmod(self.base, 0o700)
        self.rundir = self.base / "run"
        config = self.base / "config.toml"
        extra = "".join("[[contexts.bench.listeners]]\n" + "".join(
            f"{k} = {v}\n" if isinstance(v, int) else f'{k} = "{v}"\n' for k, v in lst.items())
            for lst in listeners or [])
        config.write_text(f'[contexts.bench]\ncontrol_url = "{info["control_url"]}"\n'
                          f'[[contexts.bench.listeners]]\nkind = "socks5"\nlisten = "127.0.0.1:{socks_port}"\n'
                          + extra)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SUNBEAM_")}
        self.env.update(SUNBEAM_CONFIG=str(config), SUNBEAM_CONTEXT="bench", SUNBEAM_RUNTIME_DIR=str(self.rundir),
                        SUNBEAM_STATE_DIR=str(self.base / "state"), SUNBEAM_AUTH_KEY=info["auth_keys"]["reusable"],
                        SUNBEAM_HOSTNAME=hostname, SUNBEAM_WG_WORKERS=str(workers), SUNBEAM_LOG_LEVEL="info")
        self.socks = f"127.0.0.1:{socks_port}"
        self.connect_parts: dict[str, float] = {}

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(self.info["exec_prefix"] + ["sunbeam-ctl", *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def start(self) -> float:
        """Seconds from `sunbeam-ctl connect` to its 'Connected' line; `connect_parts` splits
        them (from the control log's timestamps) into our part and waiting for the server."""
        t0, wall0 = time.monotonic(), time.time()
        res = self.ctl("connect", timeout=120)
        took = time.monotonic() - t0
        if res.returncode != 0 or "Connected" not in res.stdout:
            raise RuntimeError(f"sunbeam-ctl connect failed: {res.stdout}{res.stderr}")
        self.connect_parts = connect_parts(self.rundir / "control.log", wall0, took)
        return took

    def services(self) -> list[dict]:
        """The rows of `sunbeam-ctl status --json`'s services: service, pid, counters, ..."""
        try:
            status = json.loads(self.ctl("status", "--json").stdout or "{}")
        except json.JSONDecodeError:
            return []
        return list(status.get("services") or [])

    def pids(self) -> list[int]:
        pids = [s["pid"] for s in self.services()]
        try:
            pids.append(int((self.rundir / "supervisord.pid").read_text()))
        except (OSError, ValueError):
            pass
        return pids

    def control_pids(self) -> list[int]:
        return [s["pid"] for s in self.services() if s["service"] == "control"]

    def netmap_peers(self) -> int:
        res = self.ctl("netmap", "--json")
        return len(json.loads(res.stdout).get("peers", [])) if res.returncode == 0 else 0

    def stop(self) -> None:
        self.ctl("stop")
        shutil.rmtree(self.base, ignore_errors=True)


class Tailscaled:
    name = "tailscaled"

    def __init__(self, info: dict) -> None:
        self.info = info
        self.entry: dict = {}

    def start(self) -> float:
        """Seconds from starting tailscaled to `tailscale up` returning (Running)."""
        t0 = time.monotonic()
        self.entry = network.add_peer(self.info["name"], log=lambda m: None)
        took = time.monotonic() - t0
        self.info = network.load_state(self.info["name"]) or self.info
        self.socks = self.entry["socks5"]
        return took

    def pids(self) -> list[int]:
        return [int(self.info["pids"][f"{self.entry['name']}/tailscaled"])]

    control_pids = pids

    def netmap_peers(self) -> int:
        res = subprocess.run(self.entry["tailscale_cli"] + ["debug", "netmap"], capture_output=True, text=True,
                             timeout=60)
        try:
            return len(json.loads(res.stdout).get("Peers") or [])
        except json.JSONDecodeError:
            return 0

    def stop(self) -> None:
        subprocess.run(self.entry["tailscale_cli"] + ["down"], capture_output=True, timeout=30)


def version_line() -> str:
    out = subprocess.run(["uname", "-srm"], capture_output=True, text=True).stdout.strip()
    cpu = ""
    try:
        m = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        cpu = m.group(1) if m else ""
    except OSError:
        pass
    return f"{out}; {os.cpu_count()} CPUs ({cpu})"


def save_results(results: dict, path: str) -> None:
    """Write a bench's results as JSON and say where (in bench/results/ only latest.json is tracked)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"JSON: {out}")


def curl_socks(ns: dict, socks: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``curl args...`` in ``ns``'s namespace through the SOCKS5 proxy ``socks`` (which
    resolves the names); an HTTP error status fails it (``--fail``)."""
    return subprocess.run(ns["exec_prefix"] + ["curl", "-sS", "--fail", "--max-time", str(int(timeout)),
                                               "--socks5-hostname", socks, *args],
                          check=False, capture_output=True, text=True, timeout=timeout + 30)


def wait_reachable(ns: dict, side: Side, target: dict, timeout: float = 60) -> None:
    """Until ``target``'s /whoami answers through ``side``'s proxy; RuntimeError after ``timeout`` s."""
    url = f"http://{target['name']}:{target['service_port']}/whoami"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if curl_socks(ns, side.socks, url, timeout=20).returncode == 0:
            return
        time.sleep(1)
    raise RuntimeError(f"{side.name} cannot reach {target['name']} within {timeout:.0f}s")


def fetch_blob(ns: dict, side: Side, target: dict, size_mb: int, seed: str, timeout: float = 600) -> float:
    """Seconds (curl's time_total) to download ``size_mb`` MB of ``target``'s /blob through
    ``side``'s proxy; RuntimeError if it failed or came short."""
    res = curl_socks(ns, side.socks, "-o", "/dev/null", "-w", "%{size_download} %{time_total}",
                     f"http://{target['name']}:{target['service_port']}/blob/{size_mb}M?seed={seed}", timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"{side.name} download failed: {res.stderr}")
    size, took = res.stdout.split()
    if int(size) != size_mb * MB:
        raise RuntimeError(f"{side.name} download short: {size}")
    return float(took)


def post_upload(ns: dict, side: Side, target: dict, payload: Path, size_mb: int, timeout: float = 600) -> float:
    """Seconds (curl's time_total) to POST ``payload`` (``size_mb`` MB) to ``target``'s
    /upload through ``side``'s proxy; RuntimeError unless the service counted every byte."""
    res = curl_socks(ns, side.socks, "--data-binary", f"@{payload}", "-H", "Content-Type: application/octet-stream",
                     "-w", "\n%{time_total}", f"http://{target['name']}:{target['service_port']}/upload",
                     timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"{side.name} upload failed: {res.stderr}")
    body, took = res.stdout.rsplit("\n", 1)
    if json.loads(body)["bytes"] != size_mb * MB:
        raise RuntimeError(f"{side.name} upload short: {body}")
    return float(took)


def write_payload(info: dict, size_mb: int) -> Path:
    """``size_mb`` MB of random bytes in the reference network's workdir, for `post_upload`."""
    payload = Path(info["workdir"]) / "upload.bin"
    with payload.open("wb") as f:
        f.write(os.urandom(size_mb * MB))
    return payload
