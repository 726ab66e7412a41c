"""The runtime directory: where every service binds its ``ipc://`` endpoints.

One directory per sunbeam context (its path comes from config). It must be private to the
user running sunbeam, because anyone who can connect to our sockets can inject packets or
stop the daemon:

- missing: created with mode 0700 (missing parents too: the default parent
  ``/tmp/sunbeam-<uid>`` is nobody else's business);
- its parent belongs to another user (root aside), or others may write to it and it is not
  sticky: refused with a `RundirError`. Whoever can rename entries in the parent can swap
  our checked directory for one of theirs before the sockets are bound (a sticky parent
  such as ``/tmp`` forbids renaming what is ours);
- exists, owned by us, with any group/other permission bit (e.g. 0755): refused with a
  `RundirError` naming the directory and its mode. Tightening it now would not undo what
  others could do while it was open (plant a socket file we would talk to, hold a
  connection to one of ours), so the user decides (``chmod 700 <dir>``, or remove it);
- exists, owned by us, missing some owner bit (e.g. 0500): set to exactly 0700 (this
  opens nothing to anyone else);
- exists but owned by another uid, or is a symlink, or is not a directory: refused with a
  `RundirError` that says which, because we cannot make someone else's directory private.

The checks and the chmod run on a file descriptor opened with O_NOFOLLOW, so a symlink
swapped in between the check and the chmod cannot redirect them.

Endpoint naming: service socket ``name`` lives at ``<rundir>/<name>.sock`` and its ZeroMQ
endpoint is ``ipc://<rundir>/<name>.sock``. A unix socket path must fit ``sun_path``
(108 bytes on Linux, including the terminating NUL), so at most 107 bytes;
`SocketPathTooLong` is raised before ZeroMQ would fail with a bare ENAMETOOLONG.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

__all__ = [
    "MAX_SOCKET_PATH_BYTES",
    "RUNDIR_MODE",
    "RundirError",
    "SocketPathTooLong",
    "endpoint",
    "ensure_rundir",
    "ipc_path",
    "socket_path",
]

RUNDIR_MODE = 0o700
# Linux: sizeof(sockaddr_un.sun_path) == 108, one byte of which is the NUL terminator.
MAX_SOCKET_PATH_BYTES = 107
IPC_PREFIX = "ipc://"
_WHAT_TO_DO = ("Set runtime_dir in the context (or XDG_RUNTIME_DIR, e.g. /run/user/<uid>) to a directory of "
               "yours, or have the owner or root remove the squatted one")
_SOCKET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")


class RundirError(RuntimeError):
    """The runtime directory cannot be used safely (the message says why)."""


class SocketPathTooLong(RundirError):
    """A socket path does not fit in ``sockaddr_un.sun_path``."""


def ensure_rundir(path: str | os.PathLike[str]) -> Path:
    """Create or validate the runtime directory; return its absolute path.

    Raises `RundirError` if it is a symlink, not a directory, owned by another user, or
    open to group or others.
    """
    rundir = Path(path).absolute()
    for missing in reversed([p for p in (rundir, *rundir.parents) if not p.exists()]):
        try:
            os.mkdir(missing, RUNDIR_MODE)
        except FileExistsError:
            pass
        except OSError as exc:  # a parent is a file or a dangling symlink, no permission...
            raise RundirError(f"cannot create the runtime directory {rundir}: {exc.strerror} ({missing})") from None
    _check_parent(rundir.parent)
    try:
        fd = os.open(rundir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        # ELOOP: the last component is a symlink; ENOTDIR: it is a file.
        kind = "a symlink" if rundir.is_symlink() else "not a directory"
        raise RundirError(f"runtime directory {rundir} is {kind}; refusing to use it") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISDIR(st.st_mode):
            raise RundirError(f"runtime directory {rundir} is not a directory")
        our_uid = os.geteuid()
        if st.st_uid != our_uid:
            raise RundirError(
                f"runtime directory {rundir} is owned by uid {st.st_uid}, not by us (uid "
                f"{our_uid}); refusing to bind sockets in a directory another user controls. {_WHAT_TO_DO}"
            )
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise RundirError(
                f"runtime directory {rundir} has mode {mode:04o}: others could reach our sockets; "
                f"refusing to use it (run: chmod 700 {rundir})"
            )
        if mode != RUNDIR_MODE:
            os.fchmod(fd, RUNDIR_MODE)
    finally:
        os.close(fd)
    return rundir


def _check_parent(parent: Path) -> None:
    st = os.stat(parent)
    if st.st_uid not in (os.geteuid(), 0):
        raise RundirError(
            f"the runtime directory's parent {parent} belongs to uid {st.st_uid}, who could replace our "
            f"directory with theirs. {_WHAT_TO_DO}"
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022 and not mode & stat.S_ISVTX:
        raise RundirError(
            f"the runtime directory's parent {parent} has mode {mode:04o}: others could replace our "
            f"directory with theirs; refusing to use it (run: chmod go-w {parent})"
        )


def socket_path(rundir: str | os.PathLike[str], name: str) -> Path:
    """The file path of socket ``name`` in ``rundir``: ``<rundir>/<name>.sock``.

    ``name`` is a plain file-name stem (letters, digits, ``_.-``); the result is checked
    against the ``sun_path`` limit.
    """
    if not _SOCKET_NAME.match(name):
        raise ValueError(f"bad socket name {name!r}: use letters, digits and _.- only")
    path = Path(rundir).absolute() / f"{name}.sock"
    size = len(os.fsencode(path))
    if size > MAX_SOCKET_PATH_BYTES:
        raise SocketPathTooLong(
            f"socket path {str(path)!r} is {size} bytes; unix sockets allow at most "
            f"{MAX_SOCKET_PATH_BYTES}: configure a shorter runtime directory"
        )
    return path


def endpoint(rundir: str | os.PathLike[str], name: str) -> str:
    """The ZeroMQ endpoint of socket ``name``: ``ipc:///abs/rundir/<name>.sock``."""
    return IPC_PREFIX + str(socket_path(rundir, name))


def ipc_path(zmq_endpoint: str) -> Path | None:
    """The socket file behind an ``ipc://`` endpoint; None for other transports and for
    Linux abstract-namespace endpoints (``ipc://@name``), which have no file."""
    if not zmq_endpoint.startswith(IPC_PREFIX):
        return None
    rest = zmq_endpoint[len(IPC_PREFIX) :]
    if rest.startswith("@"):
        return None
    return Path(rest)
