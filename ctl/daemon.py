"""`sunbeam-ctl connect` and `sunbeam-ctl stop`: start and stop the supervisord pipeline.

connect [--foreground]
    1. refuse when this context already runs (a live supervisord pid file or any live ctl
       socket in the runtime dir); otherwise remove what a killed run left behind (stale
       socket files, a dead pid file);
    2. start ``python -m supervisor.supervisord -c <supervisord.conf>`` with
       SUNBEAM_RUNTIME_DIR, SUNBEAM_WG_WORKERS and the config/context selection in its
       environment. Detached: a new session (no controlling terminal), stdin from
       /dev/null, supervisord's own output to ``<rundir>/supervisord.out``, each service's
       to ``<rundir>/<service>.log``. Foreground: a child of this process; Ctrl-C stops it;
    3. show progress (services up N/M, the control state) until the control service is
       Running with every service up, then print
       ``Connected (100.64.0.3, fd7a:115c:a1e0::3) — 2 peers visible``. A node that must
       log in (no auth key, not registered yet) shows the server's URL as ``tailscale up``
       does (``To authenticate, visit:`` then the URL), and the timeout waits while an
       admin registers it (``headscale auth register --auth-id ID --user U``);
    4. on failure (the control service reports an error such as a rejected auth key, a
       service gives up (supervisord FATAL), supervisord exits, or the timeout passes):
       print the cause and the failing service's log lines from this run, stop the
       pipeline, exit 1.

stop (alias disconnect)
    ``Asking VPN daemon to stop...``; SIGTERM to supervisord, which stops every service
    (each exits 0 and unlinks its sockets); or, without supervisord (services started by
    hand), a `StopRequest` on each ctl socket. Then waits until no process and no live
    socket remain, removes leftovers, and prints ``Daemon acknowledged shutdown.``

Supervisord's process table comes from its XML-RPC interface on
``<rundir>/supervisor.sock`` (supervisor's own `SupervisorTransport`).

Exit codes: 0 done; 1 refused / failed / did not stop in time; 2 config error (cli.py).
"""

from __future__ import annotations

import contextlib
import importlib
import ipaddress
import os
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..shared.runtime.rundir import ensure_rundir
from ..shared.runtime.stale import SocketState, probe
from . import heldsupervisord
from .client import CtlTimeout, discover, request, service_status

if TYPE_CHECKING:
    import zmq

    from ..shared.config import Context
    from ..shared.messages.netmap import ControlStatus

# What `connect` needs only once supervisord runs (zmq, msgspec and the messages, supervisor's
# XML-RPC client: ~40 ms of imports) is imported where it is used, so the ctl starts
# supervisord first and imports them while supervisord starts.

CONNECT_TIMEOUT = 20.0  # a healthy connect takes 1-3 s; past this the cause line says what is wrong
STOP_TIMEOUT = 30.0
POLL = 0.05  # one look costs ~1 ms of CPU here (supervisord XML-RPC, sockets, control status);
# a control state change wakes the wait at once (`_ControlWakeup`)
FIRST_POLL, FIRST_POLL_FOR = 0.01, 3.0  # until supervisord first answers
# What the wait needs once supervisord answers, imported while supervisord starts, one module
# between two looks (each ~10 ms): the ctl is idle then, while later the same ~40 ms of CPU
# would be taken from the control service's start (control_import +8..34 ms, A/B runs).
PRELOAD = ("zmq", "..shared.channels", "xmlrpc.client", ".supervisorrpc")
LOG_TAIL_LINES = 15
SERVICES = ("control", "derp", "udp", "proxy")
PRIVATE_UMASK = 0o077  # sockets, logs and the pid file: the owning user only


def supervisord_conf() -> Path:
    """The supervisord.conf shipped with the package ($SUNBEAM_SUPERVISORD_CONF overrides)."""
    explicit = os.environ.get("SUNBEAM_SUPERVISORD_CONF")
    if explicit:
        return Path(explicit)
    return Path(__file__).resolve().parents[1] / "shared" / "supervisord.conf"


def expected_services(workers: int) -> list[str]:
    return [*SERVICES, *(f"wg-{k}" for k in range(workers))]


# -- the supervisord process ---------------------------------------------------------------


def process_alive(pid: int) -> bool:
    """A live (not zombie) process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def supervisord_pid(rundir: Path) -> int | None:
    """The pid in ``supervisord.pid`` if that process is a live supervisord."""
    try:
        pid = int((rundir / "supervisord.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"supervisord" in cmdline and process_alive(pid) else None


def supervisor_records(rundir: Path, timeout: float = 2.0) -> list[dict[str, Any]] | None:
    """supervisord's ``getAllProcessInfo`` records; None when it does not answer within
    ``timeout`` (a stopped or stuck supervisord must not hang us)."""
    sock = rundir / "supervisor.sock"
    if probe(sock) is not SocketState.LIVE:  # (during connect: the look that wakes supervisord)
        return None
    import xmlrpc.client

    from .supervisorrpc import UnixTransport

    try:
        with xmlrpc.client.ServerProxy("http://localhost", transport=UnixTransport(sock, timeout)) as proxy:
            records = proxy.supervisor.getAllProcessInfo()
    except (OSError, xmlrpc.client.Error):
        return None
    return records if isinstance(records, list) else None


def process_table(rundir: Path) -> dict[str, str]:
    """supervisord's view: process name (``wg-0``, ``control``...) -> state name."""
    return {p["name"]: p["statename"] for p in supervisor_records(rundir) or []}


def running(rundir: Path) -> str | None:
    """Why this context counts as running (None: it does not)."""
    pid = supervisord_pid(rundir)
    if pid is not None:
        return f"supervisord pid {pid}"
    live = [f.service for f in discover(rundir) if f.live]
    return f"services {', '.join(live)}" if live else None


def clean_leftovers(rundir: Path) -> list[str]:
    """Remove stale socket files and a dead pid file; return what was removed."""
    removed = []
    for sock in sorted(rundir.glob("*.sock")):
        if probe(sock) is SocketState.STALE:
            with contextlib.suppress(FileNotFoundError):
                sock.unlink()
                removed.append(sock.name)
    pidfile = rundir / "supervisord.pid"
    if pidfile.exists() and supervisord_pid(rundir) is None:
        pidfile.unlink(missing_ok=True)
        removed.append(pidfile.name)
    return removed


# -- connect -------------------------------------------------------------------------------

# What a run counts, kept in the runtime dir so that a service's restart does not reset it,
# and cleared by the next connect: the wg workers' per-peer totals
# (services/wg/statsfile.py STATS_GLOB).
PER_RUN_FILES = ("wg-*.stats*",)


def forget_last_run(rundir: Path) -> None:
    """Remove the counts of the previous run (`PER_RUN_FILES`)."""
    for pattern in PER_RUN_FILES:
        for path in rundir.glob(pattern):
            path.unlink(missing_ok=True)


def _environment(ctx: Context, rundir: Path, config: str | None) -> dict[str, str]:
    env = dict(os.environ)
    # SUNBEAM_PYTHON: supervisord.conf starts each service with this interpreter, so the
    # services are those of this installation whatever PATH holds
    env.update(SUNBEAM_RUNTIME_DIR=str(rundir), SUNBEAM_WG_WORKERS=str(ctx.wg_workers), SUNBEAM_CONTEXT=ctx.name,
               SUNBEAM_PYTHON=sys.executable)
    if config:
        env["SUNBEAM_CONFIG"] = str(Path(config).absolute())
    scripts = sysconfig.get_path("scripts")  # the sunbeam-* entry points next to this Python
    env["PATH"] = os.pathsep.join(p for p in (scripts, env.get("PATH", "")) if p)
    return env


class _LogMarks:
    """Where each log file ended before this run, so failures show only this run's lines."""

    def __init__(self, rundir: Path) -> None:
        self.rundir = rundir
        self.marks = {p.name: p.stat().st_size for p in rundir.glob("*.log")}

    def tail(self, service: str, lines: int = LOG_TAIL_LINES) -> list[str]:
        path = self.rundir / f"{service}.log"
        try:
            with path.open("rb") as f:
                f.seek(self.marks.get(path.name, 0))
                text = f.read().decode(errors="replace")
        except OSError:
            return []
        return text.splitlines()[-lines:]


def control_status(rundir: Path) -> ControlStatus | None:
    reply = service_status(rundir, "control", timeout=1.0)
    return reply.control if reply is not None else None


class _ControlWakeup:
    """A SUB socket on ``control-pub``: the control service publishes every state change
    (and netmap change) there, so `_wait_up` looks again at once instead of at its next
    poll (Running was seen 25 ms late on average with POLL alone). What arrives only wakes
    us: the state is still read from the control service's ctl socket, as before.

    The socket is made at the first `wait`, once supervisord answered: zmq's import (~10 ms)
    then runs while control starts, not in front of the ctl's first look at supervisord."""

    def __init__(self, rundir: Path) -> None:
        self.rundir = rundir
        self.sock: zmq.Socket[Any] | None = None

    def wait(self, timeout: float) -> None:
        """Until something is published or ``timeout`` seconds passed; drains what came."""
        import zmq

        if self.sock is None:
            from ..shared.channels import CONTROL_PUB

            self.sock = zmq.Context.instance().socket(zmq.SUB)
            self.sock.setsockopt(zmq.LINGER, 0)
            self.sock.setsockopt(zmq.RECONNECT_IVL, 10)  # control binds it shortly after (default 100 ms)
            self.sock.setsockopt(zmq.SUBSCRIBE, b"")
            self.sock.connect(CONTROL_PUB.endpoint(self.rundir))
        if self.sock.poll(int(timeout * 1000)):
            with contextlib.suppress(zmq.Again):
                while True:
                    self.sock.recv(zmq.NOBLOCK)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


def show_auth_url(url: str) -> None:
    """What ``tailscale up`` prints for an interactive login."""
    print(f"\nTo authenticate, visit:\n\n\t{url}\n", flush=True)


def connect(ctx: Context, *, config: str | None, foreground: bool, timeout: float = CONNECT_TIMEOUT,
            say: Callable[[str], None] = print, on_auth_url: Callable[[str], None] = show_auth_url,
            on_connected: Callable[[ControlStatus], None] | None = None) -> int:
    """``on_connected``: instead of the ``Connected (...)`` line."""
    rundir = ensure_rundir(ctx.runtime_dir)
    why = running(rundir)
    if why is not None:
        say(f"sunbeam is already running for context {ctx.name!r} ({why}); "
            "see `sunbeam-ctl status`, or `sunbeam-ctl stop` first")
        return 1
    removed = clean_leftovers(rundir)
    if removed:
        say(f"removed leftovers of an earlier run: {', '.join(removed)}")
    forget_last_run(rundir)
    conf = supervisord_conf()
    if not conf.is_file():
        say(f"sunbeam-ctl: {conf} not found (set SUNBEAM_SUPERVISORD_CONF)")
        return 1
    # a listener that cannot listen would make the proxy fail after the node registered:
    # say which, before anything starts
    from ..shared.runtime.portcheck import check_listeners

    problems = check_listeners(ctx.listeners)
    if problems:
        for line in problems:
            say(f"sunbeam-ctl: {line}")
        return 1
    for warning in exposed_listeners(ctx):
        say(warning)
    marks = _LogMarks(rundir)
    cmd = [sys.executable, "-m", "supervisor.supervisord", "-c", str(conf)]
    env = _environment(ctx, rundir, config)
    workers = f"{ctx.wg_workers} WireGuard worker{'s' if ctx.wg_workers != 1 else ''}"
    say(f"Starting sunbeam ({workers}; logs in {rundir})...")
    # supervisord's own lines (its CRIT warnings about root and the unix socket among
    # them) go to supervisord.out in the foreground too: the terminal shows sunbeam's lines
    held = heldsupervisord.take()
    proc = held.release(conf, env, rundir / "supervisord.out", new_session=not foreground,
                        umask=PRIVATE_UMASK) if held is not None else None
    if proc is None:  # none held (connect called on its own) or it died: start one now
        out_fd = os.open(rundir / "supervisord.out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(out_fd, 0o600)  # an older file keeps its mode through O_CREAT
            proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out_fd,
                                    stderr=subprocess.STDOUT, start_new_session=not foreground, close_fds=True,
                                    umask=PRIVATE_UMASK)
        finally:
            os.close(out_fd)
    try:
        outcome = _wait_up(rundir, proc, expected_services(ctx.wg_workers), timeout, say, on_auth_url)
    except KeyboardInterrupt:
        outcome = "interrupted"
    if not isinstance(outcome, str):  # the ControlStatus
        if on_connected is not None:
            on_connected(outcome)
        else:
            say(connected_line(outcome))
        if foreground:
            return _stay(proc, rundir, say)
        return 0  # the ctl exits next, without the final collection (cli.main)
    say(f"Connect failed: {outcome}")
    for service in _suspects(rundir, outcome, ctx.wg_workers):
        lines = marks.tail(service)
        if lines:
            say(f"--- last lines of {rundir / (service + '.log')}:")
            for line in lines:
                say(f"    {line}")
    out = rundir / "supervisord.out"
    if proc.poll() is not None and out.exists() and out.stat().st_size:
        say("--- supervisord said:")
        for line in out.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]:
            say(f"    {line}")
    _terminate(proc.pid, rundir)
    return 1


def connected_line(status: ControlStatus) -> str:
    addrs = ", ".join(a.split("/")[0] for a in status.addresses)
    return f"Connected ({addrs}) — {status.peers} peer{'s' if status.peers != 1 else ''} visible"


def exposed_listeners(ctx: Context) -> list[str]:
    """A warning per listener bound to an address other machines can reach."""
    warnings = []
    for listener in ctx.listeners:
        if listener.listen is None:
            continue
        try:
            ip = ipaddress.ip_address(listener.listen.host)
        except ValueError:
            continue  # a name: resolved by the proxy; "localhost" is the usual one
        if not ip.is_loopback:
            warnings.append(f"warning: the {listener.kind} listener on {listener.listen} accepts connections from "
                            "other machines; anyone who can reach it can use your tailnet")
    return warnings


def _wait_up(rundir: Path, proc: subprocess.Popen[Any], services: list[str], timeout: float,
             say: Callable[[str], None], on_auth_url: Callable[[str], None]) -> ControlStatus | str:
    """The control status once Running with every service up; else why not. While the
    control service waits for an admin to register us (NeedsLogin with a URL) the URL is
    shown once, and the timeout starts again after."""
    wakeup = _ControlWakeup(rundir)
    try:
        return _wait_loop(rundir, proc, services, timeout, say, on_auth_url, wakeup)
    finally:
        wakeup.close()


def _wait_loop(rundir: Path, proc: subprocess.Popen[Any], services: list[str], timeout: float,
               say: Callable[[str], None], on_auth_url: Callable[[str], None],
               wakeup: _ControlWakeup) -> ControlStatus | str:
    deadline = time.monotonic() + timeout
    fast_until = time.monotonic() + FIRST_POLL_FOR
    shown: tuple[Any, ...] = ()
    shown_url = ""
    preload = list(PRELOAD)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"supervisord exited with status {proc.returncode}"
        live = {f.service for f in discover(rundir) if f.live}
        up = sum(1 for s in services if s in live)
        control = control_status(rundir)
        state = control.state if control else "starting"
        done = state == "Running" and up == len(services)
        # supervisord's table (an XML-RPC round trip, ~3 ms) only while something is missing:
        # with every service up, none can be FATAL
        table = {} if done else process_table(rundir)
        fatal = sorted(name for name, pstate in table.items() if pstate == "FATAL")
        if fatal:
            return f"{', '.join(fatal)} could not start (supervisord gave up after its retries)"
        if control is not None and control.state == "Error":
            return control.reason or "the control service reported an error"
        if control is not None and control.auth_url:
            if control.auth_url != shown_url:
                shown_url = control.auth_url
                on_auth_url(shown_url)
            deadline = time.monotonic() + timeout  # a person is registering us: wait for them
        now_shown = (up, state, control.reason if control else None)
        if now_shown != shown:
            shown = now_shown
            reason = f" ({control.reason})" if control and control.reason else ""
            say(f"  services up {up}/{len(services)}, control: {state}{reason}")
        if done:
            assert control is not None
            return control
        # until supervisord answers, look often: it spawns the services only when its first
        # poll returns, which is at its 1 s tick unless a connection (ours) wakes it sooner
        if not table and time.monotonic() < fast_until:
            if preload:
                importlib.import_module(preload.pop(0), __package__)
            else:
                time.sleep(FIRST_POLL)
        else:
            wakeup.wait(POLL)
    waited = f"not connected within {timeout:g}s"
    if shown and shown[2]:  # the control service's own account of what it waits for
        return f"{shown[2]} ({waited}; control: {shown[1]})"
    return f"{waited} (control: {shown[1] if shown else 'starting'}; services up {shown[0] if shown else 0}/{len(services)})"


def _suspects(rundir: Path, outcome: str, workers: int) -> list[str]:
    named = [s for s in expected_services(workers) if s in outcome]
    return named or ["control"]


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _stay(proc: subprocess.Popen[Any], rundir: Path, say: Callable[[str], None]) -> int:
    """--foreground: run until supervisord ends; Ctrl-C or SIGTERM stops the pipeline."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        proc.wait()
    except KeyboardInterrupt:
        say("Stopping...")
        _terminate(proc.pid, rundir)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


# -- stop ----------------------------------------------------------------------------------


def _terminate(pid: int, rundir: Path, timeout: float = STOP_TIMEOUT) -> bool:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # our own child (--foreground, a failed connect)
    stopped = not process_alive(pid)
    if stopped:
        clean_leftovers(rundir)
    return stopped


def stop(rundir: Path, say: Callable[[str], None] = print) -> int:
    if not rundir.is_dir() or running(rundir) is None:
        say("VPN: not running (nothing to stop)")
        if rundir.is_dir():
            clean_leftovers(rundir)
        return 0
    say("Asking VPN daemon to stop...")
    pid = supervisord_pid(rundir)
    if pid is not None:
        if not _terminate(pid, rundir):
            say(f"supervisord (pid {pid}) did not stop within {STOP_TIMEOUT:.0f}s")
            return 1
    else:
        for found in discover(rundir):
            if found.live:
                from ..shared.messages.ctl import StopRequest

                with contextlib.suppress(CtlTimeout):
                    request(found.path, StopRequest(reason="sunbeam-ctl stop"))
    deadline = time.monotonic() + STOP_TIMEOUT
    while any(f.live for f in discover(rundir)):
        if time.monotonic() > deadline:
            say("some services did not stop: " + ", ".join(f.service for f in discover(rundir) if f.live))
            return 1
        time.sleep(0.05)
    clean_leftovers(rundir)
    say("Daemon acknowledged shutdown.")
    return 0
