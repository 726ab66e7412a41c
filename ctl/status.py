"""``sunbeam-ctl status`` and ``sunbeam-ctl netmap``: the VPN state, every service's state,
and the netmap the control service publishes.

Where each fact comes from, joined by service name (``control``, ``wg-1``...):

- supervisord's process table (XML-RPC ``supervisor.getAllProcessInfo`` on
  ``<rundir>/supervisor.sock``): every process it was configured with, running or not:
  its state (STARTING, RUNNING, BACKOFF, STOPPING, STOPPED, EXITED, FATAL), pid, start
  time, exit status, spawn error. This is the list of services when supervisord runs, so a
  dead or restarting service is listed, never left out;
- each ctl socket (`StatusRequest` -> `StatusReply`): the service's own state, pid, start
  time and counters, and from the control service the `ControlStatus` (VPN state, our
  addresses, hostname, MagicDNS name, domain);
- without supervisord (services started by hand, or a supervisord that does not answer
  within 2 s): the ctl socket files alone (`discover`):
  one that answers, one that does not within the timeout, a stale file a crash left. A
  service started by hand that exited cleanly removed its socket and is not listed: nobody
  expects it any more;
- ``--json`` only: the netmap (`NetmapWatch`, when the control service has one) for the
  per-peer summary; the Context (when the CLI passes it) for the control URL and the
  configured listeners.

Restart counts come from supervisord's own log, ``<rundir>/supervisord.log``: spawns of the
process since the line ``supervisord started with pid P``, minus one. Supervisord is the
one that restarts, and it writes one ``spawned: 'wg-0' with pid N`` line per spawn,
including spawns that die before our code runs (an import error, a crash during setup),
which a count kept by the service itself (a file each service appends to at start) would
miss. It adds no file and no write per start to every service, and needs no reset step:
the start line's pid is checked against the live supervisord's, so a supervisord that has
not logged yet never shows the previous run's counts. The log rotates at 5 MB with two
backups (supervisord.conf); the count reads back through them to the start line, and is a
lower bound if that line was rotated away. Without supervisord nothing restarts anything:
no count (``-``, JSON null).

Text; exit 0 only when the control service is Running and every service listed is
running (a service that is dead, restarting, stopped or silent makes it 1)::

    VPN: running
    addresses: 100.64.0.3, fd7a:115c:a1e0::3
    peers: 2
    derp home: region 999
    magicdns: laptop.example.com
    services:
      control    pid 4100     running         up 3m12s     restarts 0    drops 0
      wg-0       pid 4123     not answering   up 3m12s     restarts 0    drops -
      wg-1       pid -        backoff         -            restarts 3    drops -  (Exited too quickly ...)

With nothing running (no supervisord, no service answering): the single line
``VPN: not running``.

``--json``: one object. Kept from before: ``running`` (any service answered), ``control``
(the `ControlStatus` or null), ``services`` (the `ServiceHealth` of each service that
answered), ``not_answering`` and ``stale`` (service names). Added: ``healthy`` (the exit
code's verdict), ``processes`` (one `ServiceRow` per service, answering or not: state,
healthy, pid, started_at, uptime, restarts, drops, supervisor, exitstatus, spawnerr),
``hostname``, ``magicdns_name`` (our node's FQDN, no trailing dot), ``tailnet_domain``
(the MagicDNS name after the host label, else the netmap's domain), ``control_url`` and
``listeners`` (from the config; null when not given), ``version``, ``peers`` (name,
magicdns_name, id, addresses, online; null when no netmap could be read) and
``peers_detail``, the command that adds path, handshake and bytes per peer.
"""

from __future__ import annotations

import importlib.metadata
import itertools
import json
import re
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import msgspec

from ..shared.config import Context
from ..shared.messages.ctl import ServiceHealth, StatusReply, StatusRequest
from ..shared.messages.netmap import ControlStatus
from ..shared.netmap import Netmap
from .client import ask_each, discover
from .daemon import SERVICES, supervisor_records, supervisord_pid
from .watch import read_netmap

__all__ = ["ProcInfo", "ServiceRow", "count_spawns", "format_duration", "format_service", "identity", "is_healthy",
           "log_lines_newest_first", "netmap_command", "peer_summaries", "read_spawns", "service_names",
           "service_rows", "status_command", "status_document", "status_lines", "supervisor_table"]

SUPERVISOR_TIMEOUT = 2.0
NETMAP_TIMEOUT = 2.0  # the control service answers a new subscriber at once when it has a netmap
PEERS_DETAIL = "sunbeam-ctl peers --json"
SUPERVISOR_LOG = "supervisord.log"
_SPAWNED = re.compile(r" spawned: '(?P<name>[^']+)' with pid \d+")
_STARTED = re.compile(r" supervisord started with pid (?P<pid>\d+)")
_ALIVE = ("STARTING", "RUNNING", "STOPPING")  # supervisord states with a live process
_DROP_WORDS = ("drop", "bad", "malformed")


class ProcInfo(msgspec.Struct, frozen=True):
    """One process of supervisord's table (the ``getAllProcessInfo`` fields used here)."""

    name: str
    statename: str
    pid: int = 0
    """0 when not running."""
    start: int = 0
    """Unix time of the last spawn; 0 = never spawned."""
    exitstatus: int = 0
    spawnerr: str = ""
    """Why the last spawn failed, e.g. ``"Exited too quickly (process log may have details)"``."""


class ServiceRow(msgspec.Struct, frozen=True, kw_only=True):
    """One service as ``status`` shows it."""

    service: str
    state: str
    """The service's own word when it answered (``running``, ``stopping``); else
    supervisord's state in lower case (``starting``, ``backoff``, ``exited``, ``fatal``,
    ``stopped``...); else ``not answering`` (a live socket or process that did not answer)
    or ``stale socket`` (a socket file nobody listens on)."""
    healthy: bool
    """True only for a service that answered ``running``."""
    pid: int | None = None
    started_at: float | None = None
    """Unix time the running process started; None when none runs (or unknown)."""
    uptime: float | None = None
    """Seconds since ``started_at``."""
    restarts: int | None = None
    """Spawns by supervisord in this run minus one; None without supervisord."""
    drops: int | None = None
    """Sum of the service's drop/bad/malformed counters; None when it did not answer."""
    supervisor: str | None = None
    """supervisord's state name (``RUNNING``...); None without supervisord."""
    exitstatus: int | None = None
    """The last exit status, for a process supervisord has seen exit."""
    spawnerr: str = ""


# -- the sources ------------------------------------------------------------------------------

def supervisor_table(rundir: Path, timeout: float = SUPERVISOR_TIMEOUT) -> dict[str, ProcInfo] | None:
    """supervisord's process table by process name; None when supervisord does not answer
    (within ``timeout``: a stopped or stuck supervisord must not hang ``status``)."""
    records = supervisor_records(rundir, timeout)
    if records is None:
        return None
    try:
        procs = msgspec.convert(records, list[ProcInfo])
    except msgspec.ValidationError:
        return None
    return {p.name: p for p in procs}


def count_spawns(lines_newest_first: Iterable[str], supervisord: int | None) -> dict[str, int]:
    """Spawns per process name in supervisord's log lines (newest first) since the current
    run's ``supervisord started with pid P`` line. ``supervisord`` is the live supervisord's
    pid: a newer start line of another pid means it has not logged yet (nothing counted)."""
    spawns: dict[str, int] = {}
    for line in lines_newest_first:
        if started := _STARTED.search(line):
            return {} if supervisord is not None and int(started["pid"]) != supervisord else spawns
        if spawned := _SPAWNED.search(line):
            spawns[spawned["name"]] = spawns.get(spawned["name"], 0) + 1
    return spawns  # the start line was rotated away: a lower bound


def log_lines_newest_first(rundir: Path) -> Iterator[str]:
    """supervisord.log, then its rotated backups .1, .2 ..., each read only when needed."""
    for k in itertools.count():
        path = rundir / (SUPERVISOR_LOG + (f".{k}" if k else ""))
        try:
            text = path.read_text(errors="replace")
        except FileNotFoundError:
            return
        yield from reversed(text.splitlines())


def read_spawns(rundir: Path) -> dict[str, int]:
    return count_spawns(log_lines_newest_first(rundir), supervisord_pid(rundir))


# -- the join (pure) ----------------------------------------------------------------------------

def _order(name: str) -> tuple[int, int, str]:
    if name in SERVICES:
        return 0, SERVICES.index(name), name
    if name.startswith("wg-") and name[3:].isdigit():
        return 1, int(name[3:]), name
    return 2, 0, name


def service_names(table: Mapping[str, ProcInfo] | None, sockets: Iterable[str]) -> list[str]:
    """Every service to list: supervisord's processes and whatever has a ctl socket file,
    in pipeline order (control, derp, udp, proxy, wg-0, wg-1, ... then anything else)."""
    return sorted(set(table or ()) | set(sockets), key=_order)


def _drops(health: ServiceHealth) -> int:
    return sum(v for k, v in health.counters.items() if any(w in k for w in _DROP_WORDS))


def service_rows(names: Iterable[str], table: Mapping[str, ProcInfo] | None, health: Mapping[str, ServiceHealth],
                 silent: Iterable[str], stale: Iterable[str], spawns: Mapping[str, int],
                 now: float) -> list[ServiceRow]:
    """One `ServiceRow` per name: supervisord's record (``table``, None without supervisord),
    the service's answer (``health``), whether its live socket stayed ``silent``, whether its
    socket file is ``stale``, and the spawn counts of this supervisord run."""
    quiet, leftover = set(silent), set(stale)
    rows = []
    for name in names:
        proc = table.get(name) if table is not None else None
        h = health.get(name)
        if h is not None:
            state = h.state
        elif proc is not None and proc.statename != "RUNNING":
            state = proc.statename.lower()
        elif name in quiet or proc is not None:  # live socket or live process, no answer
            state = "not answering"
        elif name in leftover:
            state = "stale socket"
        else:
            state = "not running"
        alive = h is not None or (proc is not None and proc.statename in _ALIVE)
        started: float | None = h.started_at if h is not None else None
        if started is None and proc is not None and alive and proc.start:
            started = float(proc.start)
        pid = h.pid if h is not None else (proc.pid if proc is not None and proc.pid else None)
        rows.append(ServiceRow(
            service=name, state=state, healthy=h is not None and h.state == "running", pid=pid,
            started_at=started, uptime=max(0.0, now - started) if started is not None else None,
            restarts=max(0, spawns.get(name, 0) - 1) if proc is not None else None,
            drops=_drops(h) if h is not None else None, supervisor=proc.statename if proc is not None else None,
            exitstatus=proc.exitstatus if proc is not None and not alive and proc.start else None,
            spawnerr=proc.spawnerr if proc is not None and not alive else "",
        ))
    return rows


def identity(control: ControlStatus | None, ctx: Context | None) -> dict[str, str | None]:
    """Our hostname, MagicDNS name (no trailing dot), tailnet domain and control URL."""
    name = control.name.rstrip(".") if control is not None else ""
    hostname = (control.hostname if control is not None else "") or (ctx.hostname if ctx is not None else "")
    domain = name.split(".", 1)[1] if "." in name else (control.domain if control is not None else "")
    return {"hostname": hostname or None, "magicdns_name": name or None, "tailnet_domain": domain or None,
            "control_url": ctx.control_url if ctx is not None else None}


def peer_summaries(netmap: Netmap) -> list[dict[str, Any]]:
    """Name, MagicDNS name, id, addresses (no prefix length), online; sorted as ``peers``."""
    peers = sorted(netmap.peers, key=lambda p: ((p.hostname or p.name).lower(), p.id))
    return [{"name": p.hostname or p.name, "magicdns_name": p.name.rstrip(".") or None, "id": p.id,
             "addresses": [a.split("/")[0] for a in p.addresses], "online": p.online} for p in peers]


def _listeners(ctx: Context) -> list[dict[str, Any]]:
    return [{"kind": lst.kind, "listen": str(lst.listen) if lst.listen else None, "port": lst.port,
             "target": str(lst.target) if lst.target else None} for lst in ctx.listeners]


def _version() -> str:
    try:
        return importlib.metadata.version("sunbeam")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def is_healthy(control: ControlStatus | None, rows: list[ServiceRow], not_answering: list[str]) -> bool:
    return (control is not None and control.state == "Running" and bool(rows) and not not_answering
            and all(r.healthy for r in rows))


def status_document(*, control: ControlStatus | None, healths: list[ServiceHealth], rows: list[ServiceRow],
                    not_answering: list[str], stale: list[str], ctx: Context | None,
                    netmap: Netmap | None) -> dict[str, Any]:
    """The ``status --json`` object (see the module docstring)."""
    return {
        "running": bool(healths), "healthy": is_healthy(control, rows, not_answering),
        "control": msgspec.to_builtins(control) if control else None,
        "services": [msgspec.to_builtins(h) for h in healths],
        "not_answering": not_answering, "stale": stale,
        "processes": [msgspec.to_builtins(r) for r in rows],
        **identity(control, ctx),
        "listeners": _listeners(ctx) if ctx is not None else None,
        "version": _version(),
        "peers": peer_summaries(netmap) if netmap is not None else None,
        "peers_detail": PEERS_DETAIL,
    }


# -- text ---------------------------------------------------------------------------------------

def format_duration(seconds: float) -> str:
    """``"42s"``, ``"3m12s"``, ``"5h03m"``, ``"2d04h"``."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def format_service(r: ServiceRow) -> str:
    """One line: name, pid, state, uptime, restarts, drops, and why a process is down."""
    pid = str(r.pid) if r.pid else "-"
    up = f"up {format_duration(r.uptime)}" if r.uptime is not None else "-"
    restarts = "-" if r.restarts is None else str(r.restarts)
    drops = "-" if r.drops is None else str(r.drops)
    note = r.spawnerr or (f"exit status {r.exitstatus}" if r.exitstatus is not None else "")
    line = f"  {r.service:10} pid {pid:<8} {r.state:15} {up:12} restarts {restarts:<4} drops {drops}"
    return f"{line}  ({note})" if note else line


def _vpn_lines(control: ControlStatus | None) -> list[str]:
    if control is None:
        return ["VPN: not connected (control service not running)"]
    addrs = ", ".join(a.split("/")[0] for a in control.addresses) or "none yet"
    if control.state == "Running":
        lines = ["VPN: running", f"addresses: {addrs}", f"peers: {control.peers}",
                 f"derp home: region {control.home_derp}" if control.home_derp else "derp home: none yet"]
        if control.name:
            lines.append(f"magicdns: {control.name.rstrip('.')}")
        return lines
    if control.state == "Error":
        return [f"VPN: error: {control.reason}"]
    reason = f" ({control.reason})" if control.reason else ""
    return [f"VPN: {control.state.lower()}{reason}", f"addresses: {addrs}"]


def status_lines(control: ControlStatus | None, rows: list[ServiceRow]) -> list[str]:
    """The text output: the VPN summary, then every service, one line each."""
    if not rows:
        return ["VPN: not running"]
    return [*_vpn_lines(control), "services:", *(format_service(r) for r in rows)]


# -- the commands -------------------------------------------------------------------------------

def _read_netmap(rundir: Path, timeout: float = NETMAP_TIMEOUT) -> Netmap | None:
    return read_netmap(rundir, timeout)


def status_command(rundir: Path, as_json: bool, *, ctx: Context | None = None) -> int:
    """``sunbeam-ctl status [--json]``; returns the exit code. ``ctx`` (optional) supplies
    the control URL and the configured listeners for ``--json``."""
    rundir = Path(rundir)
    table = supervisor_table(rundir)
    found = discover(rundir)
    replies, not_answering = ask_each([f for f in found if f.live], StatusRequest())
    healths: list[ServiceHealth] = []
    control: ControlStatus | None = None
    for f, reply in replies:
        if isinstance(reply, StatusReply):
            healths.append(reply.health)
            control = reply.control or control
        elif isinstance(reply, ServiceHealth):
            healths.append(reply)
        else:  # an ErrorReply: it answers, but not to StatusRequest
            not_answering.append(f.service)
    stale = [f.service for f in found if not f.live]
    spawns = read_spawns(rundir) if table is not None else {}
    names = service_names(table, (f.service for f in found))
    rows = service_rows(names, table, {h.service: h for h in healths}, not_answering, stale, spawns, time.time())
    if not healths and table is None and not not_answering:
        rows = []  # nothing runs: stale files of a killed run are no services
    if as_json:
        netmap = _read_netmap(rundir) if control is not None and control.node_id is not None else None
        print(json.dumps(status_document(control=control, healths=healths, rows=rows, not_answering=not_answering,
                                         stale=stale, ctx=ctx, netmap=netmap), indent=2))
    else:
        print("\n".join(status_lines(control, rows)))
    return 0 if is_healthy(control, rows, not_answering) else 1


def netmap_command(rundir: Path, as_json: bool, timeout: float = 5.0) -> int:
    running = any(f.live for f in discover(rundir))
    netmap = _read_netmap(rundir, timeout) if running else None
    if netmap is None:
        why = ("VPN: no netmap (control service not running or not registered yet)" if running
               else "VPN: not running")
        if as_json:  # JSON whatever the outcome; the reason goes to stderr
            print("null")
            print(f"sunbeam-ctl: {why}", file=sys.stderr)
        else:
            print(why)
        return 1
    if as_json:
        print(json.dumps(msgspec.to_builtins(netmap), indent=2))
        return 0
    me = netmap.self_node
    if me:
        print(f"self: {me.name or me.hostname} id {me.id} {', '.join(me.addresses)}")
    for p in netmap.peers:
        state = {True: "online", False: "offline", None: "?"}[p.online]
        print(f"  {p.hostname or p.name:20} id {p.id:<5} {', '.join(a.split('/')[0] for a in p.addresses):40} "
              f"derp {p.home_derp:<5} {state}")
    return 0
