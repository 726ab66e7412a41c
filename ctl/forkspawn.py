"""Services forked from supervisord's interpreter, their modules already imported.

supervisord starts a program with fork() and then, in the child, execve(the command). Under
`sunbeam-ctl connect`, supervisord is the held interpreter (heldsupervisord.py). Before it
became supervisord it imported control's modules (`preload`); just before forking each other
service it imports that one's (`install` wraps ``Subprocess.spawn``). After each import it
moves every object out of the garbage collector's reach (``gc.freeze``). `install` also
replaces supervisord's execve. For a command that ends the way supervisord.conf's do,
``exec <python> -m sunbeam.services.<name>.main [args]``, the child does not exec. It is
already past supervisor's setpgrp, its fd setup (the log pipe on 0-2, every other fd
closed), chdir and umask. It then:

    takes the command's environment       os.environ = env (what execve would pass)
    unblocks what supervisord does not use  the None entries heldsupervisord put in sys.modules (ssl...)
    resets supervisord's signal handlers  TERM QUIT HUP CHLD USR2: default; INT: KeyboardInterrupt
    names itself                          /proc/self/comm = "sunbeam-<name>" (ps, top)
    runs the service                      sunbeam.services.<name>.main.main(args)
    leaves                                os._exit(status), after flushing stdout/stderr

os._exit and not a return: returning would unwind into supervisord's code, and an interpreter
teardown would finalize supervisord's objects, whose fds the child closed and may have
reused. The services need no teardown beyond their own (`run_service` closes its sockets).
Any other command, or a $SUNBEAM_PYTHON other than this interpreter, is exec'd as before.
`supervisord -c supervisord.conf` run by hand never imports this module, so it execs.

Why: each of the seven processes used to start its own interpreter and import the same
modules (zmq, msgspec, the messages, the config...) into its own heap. Forked, they share
the pages they do not write. Measured with a clean venv, 2 workers (bench_memory,
bench_connect --trees, 16 interleaved runs):
idle PSS 106.8 -> 92.4 MB; `connect`, our part, median 353 -> 289 ms; every service up
~650 -> ~330 ms after the ctl started. Control's start moved into supervisord, which imports
its modules (~80 ms) while the ctl still checks the config; control itself now takes ~16 ms
to its first log line instead of ~160. Restarts after a crash are as fast. The conf's wait
for control's socket (there so that six interpreters did not import at once) is skipped.
"""

from __future__ import annotations

import gc
import importlib
import os
import re
import shlex
import signal
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

SERVICES = ("control", "derp", "udp", "wg", "proxy")
_MODULE = re.compile(r"sunbeam\.services\.(%s)\.main" % "|".join(SERVICES))
# the handlers supervisord installs (ServerOptions.setsignals): a forked service must not keep them
_SUPERVISORD_SIGNALS = (signal.SIGTERM, signal.SIGQUIT, signal.SIGHUP, signal.SIGCHLD, signal.SIGUSR2)


def preload(module: str = "sunbeam.services.control.main") -> None:
    """Import ``module`` (with all it imports), then freeze every object: forked children share
    those pages. A frozen object is never visited by the collector, so a child's collections
    do not write to (and copy) the pages the parent's imports filled.

    The held interpreter preloads control (what `connect` waits for) before it becomes
    supervisord; supervisord preloads each other service just before forking it (`install`),
    while control is already starting: their own modules take ~30 ms more."""
    if module in sys.modules:
        return
    importlib.import_module(module)
    gc.freeze()  # no gc.collect() first: after the imports it found nothing, in ~7 ms


def service_command(argv: Sequence[str], env: Mapping[str, str]) -> tuple[str, list[str]] | None:
    """(module, args) when ``argv`` is supervisord.conf's form of a service command run by this
    interpreter, else None (exec it)."""
    if len(argv) != 3 or argv[1] != "-c" or os.path.basename(argv[0]) != "sh":
        return None
    script = argv[2]
    at = script.rfind("exec ")
    if at < 0:
        return None
    try:
        words = shlex.split(script[at + len("exec "):])
    except ValueError:
        return None
    if len(words) < 3 or words[1] != "-m" or not _MODULE.fullmatch(words[2]):
        return None
    if any(c in word for word in words[3:] for c in ";&|<>`$()"):
        return None  # more shell after the exec: not the conf's form
    python = env.get("SUNBEAM_PYTHON")
    if python and os.path.realpath(python) != os.path.realpath(sys.executable):
        return None  # another interpreter asked for: exec it
    return words[2], words[3:]


def install(options_class: Any, subprocess_class: Any, unblock: Sequence[str] = ()) -> None:
    """Make supervisord's ``Subprocess.spawn`` preload the service it forks, and its
    ``ServerOptions.execve`` (called in the forked child) run the service in place, with
    ``unblock`` (see `run_forked`) importable again."""
    real_spawn: Callable[..., Any] = subprocess_class.spawn
    real_execve: Callable[..., Any] = options_class.execve

    def spawn(self: Any) -> Any:
        found = _MODULE.search(self.config.command or "")
        if found:
            try:
                preload(found.group(0))
            except Exception:  # the child imports it again, and its log says why it fails
                pass
        return real_spawn(self)

    def execve(self: Any, filename: str, argv: list[str], env: dict[str, str]) -> Any:
        target = service_command(argv, env)
        if target is None:
            return real_execve(self, filename, argv, env)
        run_forked(target[0], target[1], env, unblock)

    subprocess_class.spawn = spawn
    options_class.execve = execve
    os.register_at_fork(before=_flush_stdio)  # nothing supervisord buffered is written twice


def run_forked(module: str, args: list[str], env: Mapping[str, str], unblock: Sequence[str] = ()) -> NoReturn:
    """In the forked child: become the service, then exit with its status. ``unblock``: the
    names supervisord's interpreter set to None in sys.modules (named, not searched for: a
    walk over sys.modules would write every module's refcount, and copy ~0.5 MB of shared
    pages per service)."""
    status: Any = 1
    try:
        os.environ.clear()
        os.environ.update(env)
        for blocked in unblock:  # supervisord's "not available" (ssl...): the service may need them
            if blocked in sys.modules and sys.modules[blocked] is None:
                del sys.modules[blocked]
        for sig in _SUPERVISORD_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _name_process(process_name(module, args))
        main = importlib.import_module(module)
        sys.argv = [main.__file__ or module, *args]
        status = main.main(args)
    except SystemExit as exc:
        status = exc.code
    except BaseException:
        traceback.print_exc()
        status = 1
    finally:
        if status is None:
            status = 0
        elif not isinstance(status, int):
            print(status, file=sys.stderr)
            status = 1
        _flush_stdio()
        os._exit(status)


def process_name(module: str, args: Sequence[str]) -> str:
    """``sunbeam-<service>``, ``sunbeam-wg-<k>`` for a worker: what status calls it."""
    name = f"sunbeam-{module.split('.')[2]}"
    at = args.index("--worker") + 1 if "--worker" in args else len(args)
    return f"{name}-{args[at]}" if at < len(args) else name


def _name_process(name: str) -> None:
    try:
        with open("/proc/self/comm", "w") as f:
            f.write(name[:15])  # the kernel keeps 15 bytes
    except OSError:
        pass  # a name for ps only


def _flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
