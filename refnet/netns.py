"""The private network namespace the reference network lives in.

Shape of a namespace made here (``ip netns add NAME``; a name so other processes can join
it with ``ip netns exec NAME cmd``)::

    lo          127.0.0.1/8, ::1          up; every service of the reference network binds here
    sb0         192.0.2.1/24 (TEST-NET-1) veth end with the default route via 192.0.2.254
    sb0-void    (no address)              the other veth end: packets routed out die here

The default route exists only so tailscaled sees a "real" interface and a default route; it
leads nowhere, and the namespace has no link to the host: nothing inside can reach anything
outside it.

``entered(name)`` moves the calling thread into the namespace for a ``with`` block (sockets
made inside stay there), so Python code can talk to Headscale and the peers directly.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterator

NETNS_DIR = Path("/var/run/netns")
CLONE_NEWNET = 0x40000000
VOID_ADDR = "192.0.2.1/24"
VOID_GATEWAY = "192.0.2.254"


class NetnsError(RuntimeError):
    pass


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and res.returncode != 0:
        raise NetnsError(f"`ip {' '.join(args)}` failed: {res.stderr.strip()}")
    return res


def exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def exec_prefix(name: str) -> list[str]:
    """The command prefix that runs a command inside the namespace."""
    return ["ip", "netns", "exec", name]


def create(name: str) -> None:
    if os.geteuid() != 0:
        raise NetnsError("creating a network namespace needs root (run as root, or under `unshare -r`)")
    if exists(name):
        raise NetnsError(f"network namespace {name!r} already exists (run `sunbeam-refnet down --name {name}`)")
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", name, "link", "add", "sb0", "type", "veth", "peer", "name", "sb0-void")
        _ip("-n", name, "addr", "add", VOID_ADDR, "dev", "sb0")
        _ip("-n", name, "link", "set", "sb0", "up")
        _ip("-n", name, "link", "set", "sb0-void", "up")
        _ip("-n", name, "route", "add", "default", "via", VOID_GATEWAY, "dev", "sb0")
    except NetnsError:
        _ip("netns", "del", name, check=False)
        raise


def pids(name: str) -> list[int]:
    res = _ip("netns", "pids", name, check=False)
    return [int(p) for p in res.stdout.split() if p.strip().isdigit()]


def kill_all(name: str, *, grace: float = 5.0) -> None:
    """SIGTERM every process in the namespace, then SIGKILL what is left after ``grace``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids(name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while pids(name) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not pids(name):
            return
    if pids(name):
        raise NetnsError(f"processes survive SIGKILL in namespace {name}: {pids(name)}")


def delete(name: str) -> None:
    if exists(name):
        kill_all(name)
        _ip("netns", "del", name)


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetnsError(f"setns failed: {os.strerror(err)}")


@contextlib.contextmanager
def entered(name: str) -> Iterator[None]:
    """Run the body with the calling thread inside namespace ``name``."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(NETNS_DIR / name, os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)
