"""Bring the whole reference network up and down: namespace, Headscale, N tailscaled peers.

``up()`` returns (and ``sunbeam-refnet up --json`` prints) a description like::

    {"name": "sunbeam-refnet", "netns": "sunbeam-refnet", "exec_prefix": ["ip","netns","exec",...],
     "control_url": "http://127.0.0.1:8080", "derp_only": false, "workdir": "/tmp/...",
     "auth_keys": {"reusable": "hskey-auth-...", "ephemeral": "hskey-auth-..."},
     "headscale_cli": [".../headscale", "-c", ".../headscale.yaml"], "user_id": 1,
     "peers": [{"name": "peer-1", "ips": ["100.64.0.1", "fd7a:..."], "socks5": "127.0.0.1:11081",
                "http_proxy": "127.0.0.1:13129", "service_port": 18001, "echo_port": 19001,
                "socket": ".../peer-1/ts.sock", "tailscale_cli": [...]}, ...],
     "pids": {"headscale": 123, "peer-1/tailscaled": 124, ...}}

``up(..., tls=True)`` (``sunbeam-refnet up --tls``) makes a throwaway CA and a certificate
for 127.0.0.1 in ``<workdir>/tls`` (tlscerts.py) and runs Headscale with HTTPS and DERP over
TLS on the same port: ``control_url`` is https://127.0.0.1:8080, the description gains
``"tls": true`` and ``"ca_file"`` (the CA's PEM, for clients to trust), and every tailscaled
trusts that CA through SSL_CERT_FILE. Not combined with ``hosts=True``.

``up(..., hosts=True)`` prepares the network for a second host (topology.py): the namespace
gets the veth end 10.77.0.1 + 10.77.0.11 before Headscale starts, Headscale listens on
0.0.0.0 with server_url (and DERP/STUN host) 10.77.0.1, and the description gains
``"hosts": true`` with ``control_url`` http://10.77.0.1:8080. ``topology.attach`` then adds
the host; ``down`` removes it too.

The same description is kept in ``<state dir>/<name>.json`` so ``down`` (another process)
can remove every process by PID, then whatever else still lives in the namespace, then the
namespace and the temp dir.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from . import netns, tlscerts
from .headscale import Headscale
from .install import install
from .tailscale import Peer

DEFAULT_NAME = "sunbeam-refnet"


def state_dir() -> Path:
    env = os.environ.get("SUNBEAM_REFNET_STATE_DIR")
    return Path(env) if env else Path(tempfile.gettempdir()) / f"sunbeam-refnet-state-{os.getuid()}"


def state_file(name: str) -> Path:
    return state_dir() / f"{name}.json"


def load_state(name: str) -> dict | None:
    try:
        return json.loads(state_file(name).read_text())
    except (OSError, ValueError):
        return None


def _wait_mesh(peers: list[Peer], timeout: float) -> None:
    """Wait until every peer is Running and lists every other peer."""
    deadline = time.monotonic() + timeout
    want = len(peers) - 1
    missing: dict[str, str] = {}
    while time.monotonic() < deadline:
        missing = {}
        for p in peers:
            try:
                st = p.status()
            except (RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:
                missing[p.name] = str(exc)
                continue
            seen = len(st.get("Peer") or {})
            if st.get("BackendState") != "Running" or seen < want or not st["Self"].get("TailscaleIPs"):
                missing[p.name] = f"state={st.get('BackendState')} peers={seen}/{want}"
        if not missing:
            return
        time.sleep(0.2)
    raise RuntimeError(f"peers did not mesh within {timeout}s: {missing}")


def _tls_files(info: dict) -> tlscerts.TlsFiles | None:
    """The certificate files of a TLS network (made by ``up``), else None."""
    if not info.get("tls"):
        return None
    tls = Path(info["workdir"]) / "tls"
    return tlscerts.TlsFiles(tls / "ca.pem", tls / "server.pem", tls / "server.key")


def _ca_file(info: dict) -> Path | None:
    return Path(info["ca_file"]) if info.get("ca_file") else None


def _headscale(binary: Path, workdir: Path, name: str, hosts: bool, tls: tlscerts.TlsFiles | None = None) -> Headscale:
    if not hosts:
        return Headscale(binary, workdir, name, tls=tls)
    from . import topology

    return Headscale(binary, workdir, name, host=topology.A_ADDR, listen="0.0.0.0")


def up(peers: int = 2, *, name: str = DEFAULT_NAME, derp_only: bool | None = None, hosts: bool = False,
       tls: bool = False, log=print) -> dict:
    if derp_only is None:
        derp_only = os.environ.get("TS_DEBUG_ALWAYS_USE_DERP", "") not in ("", "0", "false")
    if not 1 <= peers <= 50:
        raise ValueError(f"--peers must be 1..50, got {peers}")
    if tls and hosts:
        raise ValueError("a TLS network has no second host (the certificate names 127.0.0.1 only)")
    bins = install(log=lambda m: log(f"install: {m}"))
    if netns.exists(name) or load_state(name):
        log(f"removing a leftover reference network {name!r}")
        down(name)
    netns.create(name)
    workdir = Path(tempfile.mkdtemp(prefix=f"sunbeam-refnet-{name}-"))
    os.chmod(workdir, 0o755)
    info: dict = {"name": name, "netns": name, "exec_prefix": netns.exec_prefix(name), "control_url": "",
                  "derp_only": derp_only, "workdir": str(workdir), "pids": {}, "peers": []}
    if tls:
        info["tls"] = True
        info["ca_file"] = str(workdir / "tls" / "ca.pem")
    if hosts:
        info["hosts"] = True
    state_dir().mkdir(parents=True, exist_ok=True)

    def save() -> None:
        state_file(name).write_text(json.dumps(info, indent=2))

    save()
    try:
        if hosts:
            from . import topology

            topology.prepare(name)
        if tls:
            tlscerts.make(workdir / "tls", ips=["127.0.0.1"], names=["localhost"])
        hs = _headscale(bins["headscale"], workdir / "headscale", name, hosts, _tls_files(info))
        info["control_url"] = hs.control_url
        proc = hs.start()
        info["pids"]["headscale"] = proc.pid
        save()
        hs.wait_healthy(proc)
        user = hs.create_user("refnet")
        info["user_id"] = user
        info["headscale_cli"] = hs.cli
        info["auth_keys"] = {
            "reusable": hs.create_preauth_key(user, reusable=True, ephemeral=False),
            "ephemeral": hs.create_preauth_key(user, reusable=True, ephemeral=True),
        }
        save()
        members = [Peer(i, workdir, bins["tailscaled"], bins["tailscale"], name, derp_only, _ca_file(info))
                   for i in range(1, peers + 1)]
        daemons = []
        for p in members:
            d = p.start_daemon()
            daemons.append(d)
            info["pids"][f"{p.name}/tailscaled"] = d.pid
            info["pids"][f"{p.name}/testservice"] = p.start_service().pid
        save()
        for p, d in zip(members, daemons):
            p.wait_socket(d)
        ups = [(p, subprocess.Popen(p.up_command(info["control_url"], info["auth_keys"]["reusable"]), stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)) for p in members]
        for p, u in ups:
            out, _ = u.communicate(timeout=90)
            if u.returncode != 0:
                raise RuntimeError(f"`tailscale up` on {p.name} failed ({u.returncode}): {out}\n{p.log_tail()}")
        _wait_mesh(members, timeout=60)
        info["peers"] = [_peer_entry(p) for p in members]
        save()
        return info
    except BaseException:
        with contextlib.suppress(Exception):
            down(name)
        raise


def _peer_entry(p: Peer) -> dict:
    return {
        "name": p.name, "ips": p.ips(), "socks5": f"127.0.0.1:{p.socks5_port}",
        "http_proxy": f"127.0.0.1:{p.http_proxy_port}", "service_port": p.service_port,
        "echo_port": p.echo_port, "socket": str(p.socket), "statedir": str(p.statedir), "tailscale_cli": p.cli,
    }


def _running(name: str) -> dict:
    info = load_state(name)
    if not info or not info.get("peers"):
        raise RuntimeError(f"reference network {name!r} is not running")
    return info


def add_peer(name: str = DEFAULT_NAME, *, ephemeral: bool = False, log=print) -> dict:
    """Start one more tailscaled peer in a running network and join it; returns its entry.
    ``ephemeral``: join with the ephemeral key (Headscale deletes the node on logout)."""
    info = _running(name)
    bins = install(log=lambda m: log(f"install: {m}"))
    index = max(int(p["name"].split("-")[1]) for p in info["peers"]) + 1
    peer = Peer(index, Path(info["workdir"]), bins["tailscaled"], bins["tailscale"], name, info["derp_only"],
                _ca_file(info))
    daemon = peer.start_daemon()
    info["pids"][f"{peer.name}/tailscaled"] = daemon.pid
    info["pids"][f"{peer.name}/testservice"] = peer.start_service().pid
    state_file(name).write_text(json.dumps(info, indent=2))
    peer.wait_socket(daemon)
    key = info["auth_keys"]["ephemeral" if ephemeral else "reusable"]
    res = subprocess.run(peer.up_command(info["control_url"], key), capture_output=True,
                         text=True, timeout=90)
    if res.returncode != 0:
        raise RuntimeError(f"`tailscale up` on {peer.name} failed: {res.stdout}{res.stderr}\n{peer.log_tail()}")
    entry = _peer_entry(peer)
    info["peers"].append(entry)
    state_file(name).write_text(json.dumps(info, indent=2))
    return entry


def restart_headscale(name: str = DEFAULT_NAME, *, down_for: float = 0.0) -> None:
    """SIGKILL Headscale, wait ``down_for`` seconds, start it again on the same database."""
    info = _running(name)
    pid = int(info["pids"]["headscale"])
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(down_for)
    bins = install(log=lambda m: None)
    hs = _headscale(bins["headscale"], Path(info["workdir"]) / "headscale", name, bool(info.get("hosts")),
                    _tls_files(info))
    proc = hs.start()
    info["pids"]["headscale"] = proc.pid
    state_file(name).write_text(json.dumps(info, indent=2))
    hs.wait_healthy(proc)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as gone once reaped
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    return True


def down(name: str = DEFAULT_NAME, *, grace: float = 5.0) -> list[str]:
    """Remove every process (by PID), the namespace and the temp files. Returns what was done."""
    done: list[str] = []
    state = load_state(name) or {}
    pids = [int(p) for p in (state.get("pids") or {}).values()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
                    done.append(f"{sig.name} {pid}")
        deadline = time.monotonic() + grace
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
    if state.get("hosts"):  # the second host's and the gateway's namespaces (topology.py, gateway.py)
        from . import gateway, topology

        done += topology.cleanup(name, state)
        done += gateway.cleanup(name)
    if netns.exists(name):
        netns.delete(name)
        done.append(f"deleted netns {name}")
    workdir = state.get("workdir")
    if workdir and Path(workdir).exists():
        shutil.rmtree(workdir, ignore_errors=True)
        done.append(f"removed {workdir}")
    if state_file(name).exists():
        state_file(name).unlink()
    return done
