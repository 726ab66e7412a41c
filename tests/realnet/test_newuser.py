"""A new user's first hour, as README.md tells it, with the package installed the way a
user installs it: a wheel built from this checkout, pip-installed into a fresh venv.

Every sunbeam command runs inside the reference network's namespace (the control server is
only reachable there) with an environment a user's shell would have: HOME in a temp dir (so
the README's `~/.config/sunbeam/config.toml` is used as written) and PATH holding only the
system dirs and the venv's bin, never this test run's own installation. The key comes from
the README's `headscale` commands; the config is the README's TOML block with only
control_url (and, per test, hostname) swapped for the reference network's.

Then issue 16's items, each against the installed package:
  1  a listener whose port is taken: connect fails at once, names it, leaves nothing behind
  2  `connect | head -1` and `status | head -1`: no traceback, the VPN still comes up
  3  a control server that refuses: connect --timeout 5 fails within seconds, says why
  5  no config file at all: status/stop/peers --json answer sensibly
  13 `supervisord -c "$(sunbeam-ctl supervisord-conf)"` by hand, by absolute path, with the
     venv's bin not on PATH and another sunbeam installation (this test run's) on it: the
     services are the venv's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sunbeam.ctl.daemon import process_alive
from sunbeam.shared.keys import KEYS_FILE

from .sunbeam_node import wait_for

pytestmark = pytest.mark.realnet

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
README_CONTROL_URL = "https://headscale.example.com"
SOCKS = "127.0.0.1:1080"  # the README config's listener
CONNECTED = re.compile(r"^Connected \((100\.64\.\d+\.\d+), (fd7a:115c:a1e0:[0-9a-f:]+)\) — (\d+) peers? visible$",
                       re.MULTILINE)
SERVICES = {"control", "derp", "udp", "wg", "proxy"}


# -- the installation ----------------------------------------------------------------------


@dataclass(frozen=True)
class Venv:
    root: Path

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def python(self) -> Path:
        return self.bin / "python"

    def is_python(self, path: str) -> bool:
        """``path`` is one of this venv's interpreters (``python``, ``python3``, ``python3.11``:
        which name a script's shebang uses depends on the Python that made the venv)."""
        return Path(path).parent == self.bin and Path(path).name.startswith("python")

    def purelib(self) -> Path:
        out = subprocess.run([str(self.python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True)
        return Path(out.stdout.strip())


@pytest.fixture(scope="module")
def venv():
    """A wheel of this checkout, installed into a fresh venv (dependencies from the package
    registry through pip's cache)."""
    start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="sbnu-venv-"))
    src = work / "src"  # a copy: building in the checkout would leave build/ behind
    shutil.copytree(ROOT, src, symlinks=True,
                    ignore=shutil.ignore_patterns(".git", "*.egg-info", "__pycache__", "build", ".pytest_cache"))
    wheels = work / "wheels"
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(src)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    wheel = next(wheels.glob("sunbeam-*.whl"))
    v = Venv(work / "venv")
    subprocess.run([sys.executable, "-m", "venv", str(v.root)], check=True, timeout=120)
    res = subprocess.run([str(v.bin / "pip"), "install", "-q", "--disable-pip-version-check", str(wheel)],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    print(f"[newuser] wheel + venv + pip install: {time.monotonic() - start:.1f}s")
    yield v
    shutil.rmtree(work, ignore_errors=True)


# -- the README ----------------------------------------------------------------------------


def _readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"^## Install and connect to your own Headscale\n(.*?)^## ", text, re.S | re.M)
    assert m, "README.md has no 'Install and connect to your own Headscale' section"
    return m.group(1)


def readme_config(control_url: str, hostname: str) -> str:
    """The README's config.toml, pointing at `control_url`, with `hostname`."""
    blocks = re.findall(r"```toml\n(.*?)```", _readme_section(), re.S)
    assert len(blocks) == 1, blocks
    text = blocks[0]
    assert README_CONTROL_URL in text and 'hostname = "laptop"' in text and SOCKS in text, text
    tomllib.loads(text)
    return text.replace(README_CONTROL_URL, control_url).replace('hostname = "laptop"', f'hostname = "{hostname}"')


def _headscale(refnet: dict, *args: str) -> Any:
    res = subprocess.run(refnet["headscale_cli"] + [*args, "-o", "json"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, f"headscale {' '.join(args)}: {res.stdout}{res.stderr}"
    return json.loads(res.stdout)


@pytest.fixture(scope="module")
def auth_key(refnet) -> str:
    """A key made with the README's commands: users create, users list (the ID), preauthkeys create."""
    section = _readme_section()
    for line in ("headscale users create alice", "headscale users list",
                 "headscale preauthkeys create --user 1 --reusable --expiration 24h"):
        assert line in section, line
    _headscale(refnet, "users", "create", "alice")
    user_id = next(u["id"] for u in _headscale(refnet, "users", "list") if u["name"] == "alice")
    key = _headscale(refnet, "preauthkeys", "create", "--user", str(user_id), "--reusable", "--expiration", "24h")
    return str(key["key"])


def hs_node_names(refnet: dict) -> set[str]:
    return {n.get(k, "") for n in _headscale(refnet, "nodes", "list") for k in ("name", "given_name")}


# -- a user --------------------------------------------------------------------------------


def _processes_of(home: Path) -> list[int]:
    """Live processes whose environment has this user's HOME (what a run left behind)."""
    want = f"HOME={home}".encode()
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            env = (d / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if want in env and process_alive(int(d.name)):
            found.append(int(d.name))
    return found


class User:
    """A home dir, a shell-like environment, and sunbeam-ctl inside the namespace."""

    def __init__(self, refnet: dict, venv: Venv) -> None:
        self.refnet = refnet
        self.venv = venv
        self.home = Path(tempfile.mkdtemp(prefix="sbnu-"))  # short: unix socket paths
        self.xdg_runtime = self.home / "run"
        self.xdg_runtime.mkdir(mode=0o700)
        self.env = {"HOME": str(self.home), "PATH": f"{venv.bin}:{SYSTEM_PATH}", "LANG": "C.UTF-8",
                    "XDG_RUNTIME_DIR": str(self.xdg_runtime)}
        self.rundir = self.xdg_runtime / "sunbeam" / "home"  # the README's runtime dir for context "home"

    def write_config(self, auth_key: str, hostname: str, control_url: str | None = None) -> None:
        """The README's steps: the key file (umask 077) and ~/.config/sunbeam/config.toml."""
        cfg = self.home / ".config" / "sunbeam"
        script = f"mkdir -p ~/.config/sunbeam && (umask 077; echo '{auth_key}' > ~/.config/sunbeam/home.key)"
        res = subprocess.run(["/bin/sh", "-c", script], env=self.env, timeout=10)
        assert res.returncode == 0
        assert (cfg / "home.key").stat().st_mode & 0o077 == 0
        (cfg / "config.toml").write_text(readme_config(control_url or self.refnet["control_url"], hostname))

    def run(self, *argv: str, env: dict[str, str] | None = None, timeout: float = 60,
            ) -> subprocess.CompletedProcess:
        return subprocess.run(self.refnet["exec_prefix"] + list(argv), env=env or self.env, capture_output=True,
                              text=True, timeout=timeout)

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return self.run("sunbeam-ctl", *args, timeout=timeout)

    def sh(self, script: str, timeout: float = 90) -> subprocess.CompletedProcess:
        return self.run("bash", "-c", script, timeout=timeout)

    def supervisord_pid(self, rundir: Path | None = None) -> int | None:
        try:
            pid = int(((rundir or self.rundir) / "supervisord.pid").read_text())
        except (OSError, ValueError):
            return None
        return pid if process_alive(pid) else None

    def close(self) -> None:
        if self.rundir.exists():
            self.ctl("stop", timeout=60)
        for pid in _processes_of(self.home):  # ours: started by this test with this HOME
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.home, ignore_errors=True)


@pytest.fixture()
def user(refnet, venv):
    u = User(refnet, venv)
    yield u
    u.close()


def _child_pids(pid: int) -> list[int]:
    return [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()]


def _children(pid: int) -> list[list[str]]:
    kids = []
    for child in _child_pids(pid):
        try:
            kids.append(Path(f"/proc/{child}/cmdline").read_bytes().decode().rstrip("\0").split("\0"))
        except OSError:
            pass
    return kids


def assert_services_from(venv: Venv, supervisord: int, *, forked: bool) -> None:
    """Every service supervisord runs comes from the venv. By hand, supervisord exec's
    `<venv>/bin/python -m sunbeam.services.X.main`; under `sunbeam-ctl connect` it forks them
    from its own interpreter, `<venv>/bin/python -m sunbeam.ctl.heldsupervisord`, which names
    each in /proc/<pid>/comm (ctl/forkspawn.py)."""
    if forked:
        names = set()
        for child in _child_pids(supervisord):
            argv = Path(f"/proc/{child}/cmdline").read_bytes().decode().rstrip("\0").split("\0")
            assert venv.is_python(argv[0]) and argv[1:] == ["-m", "sunbeam.ctl.heldsupervisord"], argv
            names.add(Path(f"/proc/{child}/comm").read_text().strip().split("-")[1])
        assert names == SERVICES, names
        return
    kids = _children(supervisord)
    assert {argv[2].split(".")[2] for argv in kids if len(argv) > 2} == SERVICES, kids
    for argv in kids:
        assert venv.is_python(argv[0]) and argv[1] == "-m" and argv[2].startswith("sunbeam.services."), argv


# -- the README's user flow ----------------------------------------------------------------


def test_readme_user_flow(refnet, user, auth_key):
    section = _readme_section()
    for said in ("pip install", "sunbeam-ctl --version", "sunbeam-ctl connect", "--socks5-hostname 127.0.0.1:1080",
                 "$XDG_RUNTIME_DIR/sunbeam/home", "supervisord.log"):
        assert said in section, said
    version = user.ctl("--version")
    assert version.returncode == 0 and version.stdout.startswith("sunbeam "), version.stdout + version.stderr

    user.write_config(auth_key, "laptop")
    start = time.monotonic()
    res = user.ctl("connect", timeout=90)
    took = time.monotonic() - start
    assert res.returncode == 0, res.stdout + res.stderr
    assert CONNECTED.search(res.stdout), res.stdout
    assert f"logs in {user.rundir}" in res.stdout, res.stdout
    print(f"[newuser] connect took {took:.1f}s")
    assert "Traceback" not in res.stderr, res.stderr
    sup = user.supervisord_pid()
    assert sup is not None
    assert_services_from(user.venv, sup, forked=True)  # connect ran the venv's services, not this run's

    status = user.ctl("status")
    assert status.returncode == 0 and status.stdout.splitlines()[0] == "VPN: running", status.stdout + status.stderr
    as_json = json.loads(user.ctl("status", "--json").stdout)
    assert as_json["running"] is True, as_json

    p1, p2 = refnet["peers"][:2]
    peers = user.ctl("peers")
    assert peers.returncode == 0, peers.stdout + peers.stderr
    names = {line.split()[0] for line in peers.stdout.splitlines() if line.strip()}
    assert {p1["name"], p2["name"]} <= names, peers.stdout

    ping = user.ctl("ping", p1["name"], timeout=60)
    assert ping.returncode == 0 and f"pong from {p1['name']}" in ping.stdout, ping.stdout + ping.stderr

    curl = user.run("curl", "-sS", "--fail", "--max-time", "20", "--socks5-hostname", SOCKS,
                    f"http://{p2['name']}:{p2['service_port']}/whoami")
    assert curl.returncode == 0 and curl.stdout, curl.stdout + curl.stderr

    # where the README says the logs are
    for log in ("control.log", "derp.log", "udp.log", "wg-0.log", "proxy.log", "supervisord.log"):
        assert (user.rundir / log).is_file(), sorted(p.name for p in user.rundir.iterdir())
    assert (user.home / ".local" / "state" / "sunbeam" / "home" / KEYS_FILE).is_file()  # the node's keys

    stop = user.ctl("stop", timeout=60)
    assert stop.returncode == 0 and "Daemon acknowledged shutdown." in stop.stdout, stop.stdout + stop.stderr
    assert not process_alive(sup)
    after = user.ctl("status")
    assert after.returncode == 1 and after.stdout.strip() == "VPN: not running", after.stdout + after.stderr
    assert not _processes_of(user.home)


# -- issue 16's items ----------------------------------------------------------------------


def test_item1_listener_port_taken(refnet, user, auth_key):
    hostname = "nu-busy"
    user.write_config(auth_key, hostname)
    host, port = SOCKS.rsplit(":", 1)
    bind = (f"import socket, time; s = socket.socket(); s.bind(({host!r}, {port})); s.listen(); "
            "print('bound', flush=True); time.sleep(300)")
    holder = subprocess.Popen(refnet["exec_prefix"] + [sys.executable, "-c", bind], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "bound"
        start = time.monotonic()
        res = user.ctl("connect", timeout=60)
        took = time.monotonic() - start
        lines = [line for line in (res.stdout + res.stderr).splitlines() if line.strip()]
        print(f"[newuser] item 1: connect failed after {took:.2f}s: {lines}")
        assert res.returncode == 1, res.stdout + res.stderr
        assert len(lines) == 1 and SOCKS in lines[0] and "in use" in lines[0], lines
        assert took < 2.5, f"took {took:.2f}s"
        assert "Traceback" not in res.stderr
    finally:
        holder.kill()
        holder.wait()
    assert user.supervisord_pid() is None
    status = user.ctl("status")
    assert status.returncode == 1, status.stdout + status.stderr
    assert not _processes_of(user.home)
    assert hostname not in hs_node_names(refnet)


def test_item2_output_into_a_closed_pipe(refnet, user, auth_key):
    user.write_config(auth_key, "nu-pipe")
    res = user.sh("set -o pipefail; sunbeam-ctl connect | head -1")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert len(res.stdout.splitlines()) == 1, res.stdout
    status = user.ctl("status")
    assert status.returncode == 0, status.stdout + status.stderr  # connect went on: the VPN runs
    head = user.sh("set -o pipefail; sunbeam-ctl status | head -1")
    assert "Traceback" not in head.stderr, head.stderr
    assert head.stdout.strip() == "VPN: running", head.stdout + head.stderr
    assert user.ctl("stop").returncode == 0


def test_item3_control_server_refuses(refnet, user, auth_key):
    user.write_config(auth_key, "nu-refused", control_url="http://127.0.0.1:9")  # nothing listens on 9
    start = time.monotonic()
    res = user.ctl("connect", "--timeout", "5", timeout=60)
    took = time.monotonic() - start
    out = res.stdout + res.stderr
    print(f"[newuser] item 3: connect failed after {took:.1f}s:\n{out}")
    assert res.returncode == 1, out
    assert "refused" in out.lower() or "cannot reach" in out.lower(), out
    assert took < 8.5, f"took {took:.1f}s"  # the 5 s, then stopping what started
    assert "Traceback" not in res.stderr, res.stderr
    assert user.supervisord_pid() is None
    assert user.ctl("status").returncode == 1
    assert not _processes_of(user.home)


def test_item5_no_config_file(refnet, user):
    assert not (user.home / ".config").exists()
    status = user.ctl("status")
    assert status.returncode == 1 and status.stdout.strip() == "VPN: not running", status.stdout + status.stderr
    stop = user.ctl("stop")
    assert stop.returncode == 0, stop.stdout + stop.stderr
    peers = user.ctl("peers", "--json")
    assert peers.returncode == 1, peers.stdout + peers.stderr
    json.loads(peers.stdout)
    for res in (status, stop, peers):
        assert "Traceback" not in res.stderr, res.stderr


def test_item13_supervisord_by_hand_runs_its_own_installation(refnet, user, auth_key):
    conf = user.ctl("supervisord-conf")
    assert conf.returncode == 0, conf.stdout + conf.stderr
    path = Path(conf.stdout.strip())
    assert path.is_file() and path.is_relative_to(user.venv.purelib()), path
    assert 'supervisord -c "$(sunbeam-ctl supervisord-conf)"' in (ROOT / "README.md").read_text()

    user.write_config(auth_key, "nu-manual")
    rundir = user.xdg_runtime / "sunbeam" / "manual"
    rundir.mkdir(mode=0o700, parents=True)
    # PATH: no venv bin, and another sunbeam installation (this test run's) ahead of the system dirs
    other = sysconfig.get_path("scripts")
    assert (Path(other) / "sunbeam-control").exists()
    env = {**user.env, "PATH": f"{other}:{SYSTEM_PATH}", "SUNBEAM_RUNTIME_DIR": str(rundir), "SUNBEAM_WG_WORKERS": "2"}
    ctl = str(user.venv.bin / "sunbeam-ctl")
    with open(user.home / "supervisord.console", "wb") as log:
        sup = subprocess.Popen(refnet["exec_prefix"] + [str(user.venv.bin / "supervisord"), "-c", str(path)], env=env,
                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        def connected() -> bool:  # what `connect` waits for: control Running, all six services up
            res = user.run(ctl, "status", "--json", env=env)
            status = json.loads(res.stdout) if res.stdout.strip() else {}
            up = [s for s in status.get("services", []) if s.get("state") == "running"]
            return (status.get("control") or {}).get("state") == "Running" and len(up) == 6

        wait_for(connected, 60, "the by-hand pipeline connects")
        pid = user.supervisord_pid(rundir)
        assert pid is not None
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:2]
        assert user.venv.is_python(argv[0]) and argv[1] == str(user.venv.bin / "supervisord"), argv
        assert_services_from(user.venv, pid, forked=False)
        kids = _children(pid)
        assert len(kids) == 6, kids  # control, derp, udp, proxy, wg-0, wg-1
        p2 = refnet["peers"][1]
        curl = user.run("curl", "-sS", "--fail", "--max-time", "20", "--socks5-hostname", SOCKS,
                        f"http://{p2['name']}:{p2['service_port']}/whoami", env=env)
        assert curl.returncode == 0 and curl.stdout, curl.stdout + curl.stderr
        stop = user.run(ctl, "stop", env=env)
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert sup.wait(timeout=30) == 0
    finally:
        if sup.poll() is None:
            sup.terminate()
            sup.wait(timeout=30)
