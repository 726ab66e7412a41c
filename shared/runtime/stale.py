"""Socket files left behind by a crash, and the socket files we own.

Stale detection. A ZeroMQ ``ipc://`` endpoint is a unix *stream* socket. A process that
dies without closing it leaves the file behind. We tell a leftover from a live service by
connecting to it (non-blocking, AF_UNIX, SOCK_STREAM):

    connect() result          meaning                        what we do
    ------------------------  -----------------------------  -------------------------------
    ENOENT                    no file                        nothing to do
    ECONNREFUSED              file, nobody listening: stale  unlink it
    success / EAGAIN          a listener (EAGAIN: backlog    raise AlreadyRunning
                              full, still alive)
    EPROTOTYPE                a live socket of another type  raise AlreadyRunning
    path is not a socket      not ours to delete             raise NotASocket

This matters because libzmq itself unlinks whatever sits at an ipc path before binding:
without this check a second instance would silently steal a running instance's endpoint.
There is a window between the probe and the unlink in which another starter could bind;
starts are serialised by ``sunbeam-ctl``/supervisord, so we accept it.

Ownership. libzmq (4.3.x) does not unlink an ipc socket file when the socket closes, so
we do. `OwnedSocketFiles` remembers the (device, inode) of each socket file this process
bound and unlinks those on exit, only if the path still names the same inode: a successor
that already bound the same path keeps its socket. Call `unlink_all` *before* closing the
sockets: a bound socket keeps its inode allocated, so the inode cannot have been reused by
a successor's file. (Established connections survive the unlink, so a last reply still
goes out.)
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from enum import Enum
from pathlib import Path
from types import TracebackType

__all__ = ["AlreadyRunning", "NotASocket", "OwnedSocketFiles", "SocketState", "probe", "remove_stale"]


class AlreadyRunning(RuntimeError):
    """Something is listening on a socket path we were about to take."""


class NotASocket(RuntimeError):
    """A socket path is occupied by something that is not a socket; we do not delete it."""


class SocketState(Enum):
    ABSENT = "absent"
    STALE = "stale"
    LIVE = "live"


def probe(path: str | os.PathLike[str]) -> SocketState:
    """Classify the socket file at ``path`` (see the module docstring's table)."""
    path = os.fspath(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return SocketState.ABSENT
    if not stat.S_ISSOCK(st.st_mode):
        raise NotASocket(f"{path} exists and is not a socket; refusing to remove it")
    probe_sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe_sock.setblocking(False)
        probe_sock.connect(path)
    except ConnectionRefusedError:
        return SocketState.STALE
    except FileNotFoundError:
        return SocketState.ABSENT  # removed between lstat and connect
    except BlockingIOError:
        return SocketState.LIVE  # listener with a full accept backlog
    except OSError as exc:
        if exc.errno == errno.EPROTOTYPE:
            return SocketState.LIVE
        raise
    finally:
        probe_sock.close()
    return SocketState.LIVE


def remove_stale(path: str | os.PathLike[str]) -> bool:
    """Unlink ``path`` if it is a stale socket file; return whether one was removed.

    Raises `AlreadyRunning` if a process is listening on it, `NotASocket` if it is some
    other kind of file.
    """
    state = probe(path)
    if state is SocketState.LIVE:
        raise AlreadyRunning(f"a process is already listening on {os.fspath(path)}")
    if state is SocketState.ABSENT:
        return False
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


class OwnedSocketFiles:
    """The socket files this process bound, unlinked on `unlink_all` / context exit.

    Owned by the one loop (thread) that bound the sockets; not thread-safe.
    """

    def __init__(self) -> None:
        self._inodes: dict[Path, tuple[int, int]] = {}  # path -> (st_dev, st_ino) at bind

    def track(self, path: str | os.PathLike[str]) -> None:
        """Remember ``path``, which this process has just bound."""
        st = os.lstat(path)
        self._inodes[Path(path)] = (st.st_dev, st.st_ino)

    @property
    def paths(self) -> list[Path]:
        return list(self._inodes)

    def unlink_all(self) -> list[Path]:
        """Unlink every tracked path that still names the inode we bound; return those."""
        removed: list[Path] = []
        for path, inode in self._inodes.items():
            try:
                st = os.lstat(path)
                if (st.st_dev, st.st_ino) == inode:
                    os.unlink(path)
                    removed.append(path)
            except FileNotFoundError:
                pass  # already removed (e.g. by a successor's stale-file cleanup)
        self._inodes.clear()
        return removed

    def __enter__(self) -> OwnedSocketFiles:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.unlink_all()
