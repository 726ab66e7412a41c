"""Build the pinned reference binaries (Headscale, tailscaled, tailscale) from the Go module proxy.

Layout of the cache (outside git; ``$SUNBEAM_REFNET_CACHE``, default ``~/.cache/sunbeam-refnet``)::

    <cache>/<name>-<version>/bin/<command>     the binaries
    <cache>/<name>-<version>/.complete         written last: the build finished and was checked
    <cache>/.lock                              flock held while building (parallel installs wait)

A build is reused when ``.complete`` exists and every binary answers ``--version``.

Strategy per module (versions pinned in ``versions.toml`` beside this file):
1. ``go install module/cmd@version`` with ``GOBIN`` pointing into the cache;
2. if the go command refuses (replace directives in go.mod, or a proxy that will not list
   the module's versions, which ``go install`` asks for to check deprecation), fall back to
   ``go mod download -json module@version`` and ``go build`` inside that module-cache copy.
Both fetch only from the Go module proxy; nothing is vendored into the repository.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path


class InstallError(RuntimeError):
    """The reference binaries could not be built; the message says which step failed."""


@dataclass(frozen=True)
class Pin:
    name: str
    module: str
    version: str
    commands: tuple[str, ...]

    @property
    def binaries(self) -> tuple[str, ...]:
        return tuple(Path(c).name for c in self.commands)


def load_pins(path: Path | None = None) -> dict[str, Pin]:
    path = path or Path(__file__).with_name("versions.toml")
    data = tomllib.loads(path.read_text())
    return {
        name: Pin(name, entry["module"], entry["version"], tuple(entry["commands"]))
        for name, entry in data.items()
    }


def cache_root() -> Path:
    env = os.environ.get("SUNBEAM_REFNET_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sunbeam-refnet"


def pin_dir(pin: Pin) -> Path:
    return cache_root() / f"{pin.name}-{pin.version}"


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    # The machine's own Go is used; a module asking for a newer one fails loudly instead of
    # silently downloading a toolchain.
    env.setdefault("GOTOOLCHAIN", "local")
    env.setdefault("CGO_ENABLED", "0")
    return env


def _run(cmd: list[str], *, cwd: Path | None = None, env: dict[str, str], log) -> subprocess.CompletedProcess:
    log(f"$ {' '.join(cmd)}" + (f"   (in {cwd})" if cwd else ""))
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)


# How each binary prints its version (the check that a build really runs).
VERSION_ARGS = {"headscale": ["version"], "tailscale": ["version"], "tailscaled": ["--version"]}


def _works(binary: Path) -> bool:
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        return False
    try:
        out = subprocess.run([str(binary), *VERSION_ARGS.get(binary.name, ["--version"])],
                             capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0


def is_installed(pin: Pin) -> bool:
    d = pin_dir(pin)
    return (d / ".complete").exists() and all(_works(d / "bin" / b) for b in pin.binaries)


def _build(pin: Pin, log) -> None:
    go = shutil.which("go")
    if go is None:
        raise InstallError("the `go` command is not on PATH; install Go (>= 1.26) to build the reference network")
    env = _go_env()
    bindir = pin_dir(pin) / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    env["GOBIN"] = str(bindir)
    targets = [f"{pin.module}/{c}@{pin.version}" for c in pin.commands]
    res = _run([go, "install", *targets], env=env, log=log)
    if res.returncode == 0:
        return
    log(f"go install refused ({res.stderr.strip().splitlines()[-1] if res.stderr.strip() else res.returncode}); "
        "building from the module cache instead")
    res = _run([go, "mod", "download", "-json", f"{pin.module}@{pin.version}"], env=env, log=log)
    if res.returncode != 0:
        raise InstallError(f"go mod download {pin.module}@{pin.version} failed:\n{res.stdout}{res.stderr}")
    moddir = Path(json.loads(res.stdout)["Dir"])
    for cmd in pin.commands:
        out = bindir / Path(cmd).name
        res = _run([go, "build", "-trimpath", "-o", str(out), f"./{cmd}"], cwd=moddir, env=env, log=log)
        if res.returncode != 0:
            raise InstallError(f"go build {pin.module}/{cmd}@{pin.version} failed:\n{res.stderr}")


def install(names: list[str] | None = None, *, log=None) -> dict[str, Path]:
    """Make sure every pinned binary is built; return ``{binary name: path}``.

    Raises InstallError (never skips): the real-network tests must fail loudly without them.
    """
    log = log or (lambda msg: print(f"[refnet install] {msg}", file=sys.stderr, flush=True))
    pins = load_pins()
    wanted = [pins[n] for n in (names or list(pins))]
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for pin in wanted:
            if not is_installed(pin):
                log(f"building {pin.module}@{pin.version} ({', '.join(pin.binaries)}); "
                    "first build takes a few minutes")
                (pin_dir(pin) / ".complete").unlink(missing_ok=True)
                _build(pin, log)
                broken = [b for b in pin.binaries if not _works(pin_dir(pin) / "bin" / b)]
                if broken:
                    raise InstallError(f"built {pin.name} but {', '.join(broken)} does not print its version")
                (pin_dir(pin) / ".complete").write_text(f"{pin.module}@{pin.version}\n")
            for b in pin.binaries:
                paths[b] = pin_dir(pin) / "bin" / b
    return paths
