"""supervisord's interpreter, started by `sunbeam-ctl connect` before the checks and held.

An interpreter and supervisor's imports take ~100 ms here, and `connect` used to start them
only after reading the config and checking the listeners and the runtime directory (~35 ms).
Now `cli.main` starts this module as soon as it knows the command is ``connect`` or
``login``: it imports supervisor, then waits for one line on stdin. `connect`, once every
check passed, sends what it would have given ``python -m supervisor.supervisord`` (the
config path, the environment, the output file, a new session or not, the umask) and this
process becomes supervisord. When a check fails, or the ctl fails or is interrupted, the
line never comes (the pipe closes, or `cancel` kills it): the process exits having done
nothing but imports, no file written and nothing listening, so nothing is left running.

    parent (the ctl)                          child (python -m sunbeam.ctl.heldsupervisord)
    HeldSupervisord()            --spawn-->   import supervisor.supervisord and control's
                                              modules (forkspawn.preload); read stdin
    ...config, checks...                      ...
    release(conf, env, out, ...) --1 line-->  umask, setsid, stdout/err -> out, environ
                                              supervisor.supervisord.main(["-c", conf])
    (or cancel() / exit)         --EOF-->     exit 0

Its command line names supervisord, as `daemon.supervisord_pid` requires. Its services are
forked from it, not exec'd (forkspawn.py), so they show the same command line; each has its
name in /proc/<pid>/comm (``sunbeam-udp``...).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# the one HeldSupervisord this ctl process started, until `take` hands it to `connect`
_held: HeldSupervisord | None = None


class HeldSupervisord:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True)

    def release(self, conf: Path, env: dict[str, str], out: Path, *, new_session: bool,
                umask: int) -> subprocess.Popen[bytes] | None:
        """Let it become supervisord; None if it is gone (then start one the usual way)."""
        line = json.dumps({"conf": str(conf), "env": env, "out": str(out), "session": new_session, "umask": umask})
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(line.encode() + b"\n")
            self.proc.stdin.close()
        except OSError:  # it exited (supervisor not importable?): reap it, start afresh
            self.cancel()
            return None
        return self.proc

    def cancel(self) -> None:
        self.proc.kill()
        self.proc.wait()
        if self.proc.stdin is not None:
            self.proc.stdin.close()


def prestart() -> None:
    global _held
    if _held is None:
        _held = HeldSupervisord()


def take() -> HeldSupervisord | None:
    """The held supervisord for `connect`, once (None if none was started)."""
    global _held
    held, _held = _held, None
    return held


def cancel() -> None:
    """Stop a held supervisord nobody took (the command refused or failed before the start)."""
    held = take()
    if held is not None:
        held.cancel()


# Optional imports of the stdlib modules supervisor loads that this supervisord never uses: it
# serves XML-RPC on a Unix socket, without TLS, and opens no archive. http.client (through
# xmlrpc.client) tries ssl, zipfile and shutil (through importlib.metadata and tempfile) try
# bz2 and lzma; each catches the ImportError a None in sys.modules raises. Supervisor itself
# uses none of them. Saves ~1.5 MB of RSS (~1 MB of PSS: libssl, liblzma and libbz2 are then
# mapped by no sunbeam process) and ~15 ms of its import (connect did not measurably change).
UNUSED_OPTIONAL_IMPORTS = ("ssl", "bz2", "lzma")


def main() -> None:
    for name in UNUSED_OPTIONAL_IMPORTS:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # None: "not available"
    import supervisor.supervisord  # type: ignore[import-untyped]  # the point: while the ctl checks
    from supervisor.options import ServerOptions  # type: ignore[import-untyped]
    from supervisor.process import Subprocess  # type: ignore[import-untyped]

    from . import forkspawn

    try:
        forkspawn.preload()  # services are forked with their imports done (forkspawn.py)
    except Exception:  # control cannot even import: let its exec'd start say why
        pass
    else:
        forkspawn.install(ServerOptions, Subprocess, UNUSED_OPTIONAL_IMPORTS)

    line = sys.stdin.readline()
    if not line:
        return  # the ctl did not start sunbeam
    go = json.loads(line)
    os.umask(go["umask"])
    if go["session"]:
        os.setsid()  # no controlling terminal, as Popen(start_new_session=True)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    out = os.open(go["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(out, 0o600)  # an older file keeps its mode through O_CREAT
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    os.environ.clear()
    os.environ.update(go["env"])
    supervisor.supervisord.main(["-c", go["conf"]])


if __name__ == "__main__":
    main()
