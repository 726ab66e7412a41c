"""Where `sunbeam-ctl connect`'s time goes, fresh node, phase by phase (issue 20 item 4).

Runs ``--runs`` fresh connects (new state dir each: keys generated, no remembered DERP
region) against a reference network (Headscale + 2 tailscaled peers) and splits each from
timestamps: the ctl's own output lines as they arrive, supervisord's log and the services'
JSON logs (all wall clock, ms). Phases, in order:

    ctl_start        `sunbeam-ctl connect` started -> its "Starting sunbeam" line (ip netns exec,
                     interpreter, ctl imports, config, listener checks)      [ours]
                     (the entry point next to this interpreter, not a pyenv shim on PATH)
    supervisord      -> supervisord spawns control (its interpreter + imports + config,
                     its first poll)                                          [ours]
    control_import   -> control's first log line, "keys" (interpreter, imports, config,
                     load or generate the keys)                               [ours]
    control_setup    -> "started" (sockets, publisher, client set up)         [ours]
    dial             -> "ts2021_connected" (GET /key, TCP, Noise handshake)    [ours + 2 round trips]
    register_wait    -> "registered" (the register request until its answer)  [server]
    first_map_wait   -> the first map response (our home region chosen)       [server]
    announce_wait    -> Running (the server shows our home region)            [server]
    ctl_notice       -> the ctl prints "Connected"                             [ours]
    ctl_exit         -> the ctl process has exited                             [ours]

``ours`` is the sum of the [ours] phases, ``server`` of the [server] ones (our request
building inside them is negligible: the request lines are logged when sent). Each figure
is the median of the runs, with min-max. The harness line (ip netns exec + the
interpreter's start, `python -c pass`) says how much of ctl_start is not our code.

    python bench/bench_connect.py [--runs 7] [--name sb-connect] [--keep] [--json PATH]
                                  [--trees DIR_A DIR_B ...]

``--trees``: A/B runs. Each DIR holds a ``sunbeam`` package (``DIR/sunbeam/{ctl,shared,
services,refnet}``, copies or symlinks of two checkouts), put first on PYTHONPATH for the
ctl, supervisord and every service of its runs; the runs alternate A, B, A, B... so that
both see the same moments of a busy machine, and each tree gets its own table.

Needs root (network namespace) and the reference binaries (`sunbeam-refnet install`).
Timings on a shared 2-core machine are noisy: use several runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import time
from datetime import datetime
from itertools import pairwise
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sides import Sunbeam, save_results, version_line  # noqa: E402

from sunbeam.refnet import network  # noqa: E402

PHASES = (
    ("ctl_start", True), ("supervisord", True), ("control_import", True), ("control_setup", True),
    ("dial", True), ("register_wait", False), ("first_map_wait", False), ("announce_wait", False),
    ("ctl_notice", True), ("ctl_exit", True),
)


def _json_events(path: Path) -> dict[str, float]:
    """event name (control_state -> state_<State>) -> wall time of its first occurrence."""
    seen: dict[str, float] = {}
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return seen
    for line in text.splitlines():
        try:
            ev = json.loads(line)
            at = datetime.fromisoformat(ev["ts"].replace("Z", "+00:00")).timestamp()
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
        name = ev.get("event")
        if name == "control_state":
            name = f"state_{ev.get('state')}"
        seen.setdefault(str(name), at)
    return seen


def _supervisord_events(path: Path) -> dict[str, float]:
    """``spawned:<name>`` and ``started`` -> wall time (supervisord logs local time, ms)."""
    seen: dict[str, float] = {}
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return seen
    for line in text.splitlines():
        try:
            at = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        except ValueError:
            continue
        if "spawned: '" in line:
            seen.setdefault("spawned:" + line.split("spawned: '")[1].split("'")[0], at)
        elif "supervisord started" in line:
            seen.setdefault("started", at)
    return seen


def ctl_script() -> str:
    """The sunbeam-ctl entry point of this interpreter's installation: what a venv's PATH
    finds. (PATH here may find a pyenv shim first, a bash script that adds ~80 ms.)"""
    script = Path(sysconfig.get_path("scripts")) / "sunbeam-ctl"
    return str(script) if script.exists() else "sunbeam-ctl"


def one_connect(sb: Sunbeam, ctl: str | None = None) -> dict[str, float]:
    """One `sunbeam-ctl connect`: the phases (s), plus ``total``."""
    env = dict(sb.env, PYTHONUNBUFFERED="1")  # the ctl's lines as they are printed
    wall0, t0 = time.time(), time.monotonic()
    proc = subprocess.Popen(sb.info["exec_prefix"] + [ctl or ctl_script(), "connect"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: dict[str, float] = {}
    out = []
    assert proc.stdout is not None
    for line in proc.stdout:
        at = wall0 + (time.monotonic() - t0)
        out.append(line)
        for key in ("Starting sunbeam", "Connected"):
            if line.startswith(key):
                lines.setdefault(key, at)
    proc.wait()
    end = wall0 + (time.monotonic() - t0)
    if proc.returncode != 0 or "Connected" not in lines:
        raise RuntimeError("sunbeam-ctl connect failed:\n" + "".join(out))
    sup = _supervisord_events(sb.rundir / "supervisord.log")
    ctl = _json_events(sb.rundir / "control.log")
    for _ in range(50):  # control may log Running just after the ctl saw it on its socket
        if "state_Running" in ctl:
            break
        time.sleep(0.02)
        ctl = _json_events(sb.rundir / "control.log")
    first_map = ctl.get("preferred_derp", ctl.get("announce_wait", ctl["state_Running"]))
    marks = [wall0, lines["Starting sunbeam"], sup["spawned:control"], ctl["keys"], ctl["started"],
             ctl["ts2021_connected"], ctl["registered"], first_map, ctl["state_Running"], lines["Connected"], end]
    phases = {name: round(b - a, 4) for (name, _), (a, b) in zip(PHASES, pairwise(marks), strict=True)}
    phases["total"] = round(end - wall0, 4)
    phases["ours"] = round(sum(phases[n] for n, ours in PHASES if ours), 4)
    phases["server"] = round(sum(phases[n] for n, ours in PHASES if not ours), 4)
    # for information: how long supervisord, ready, waited to be woken (it spawns at the end
    # of its first poll, which a connection to its socket ends: the ctl's first look)
    if "started" in sup:
        phases["sup_idle"] = round(sup["spawned:control"] - sup["started"], 4)
    # for information: when each other service was up (its "started" line), after t0
    for svc in ("derp", "udp", "wg-0", "wg-1", "proxy"):
        started = _json_events(sb.rundir / f"{svc}.log").get("started")
        if started is not None:
            phases[f"up_{svc}"] = round(started - wall0, 4)
    return phases


def harness(info: dict, runs: int = 5) -> float:
    """Median seconds of `ip netns exec <ns> python -c pass`: the part of ctl_start that is
    the namespace entry and the bare interpreter (with this machine's site hooks)."""
    took = []
    for _ in range(runs):
        t0 = time.monotonic()
        subprocess.run(info["exec_prefix"] + [sys.executable, "-c", "pass"], check=True)
        took.append(time.monotonic() - t0)
    return statistics.median(took)


def summarize(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    keys = [k for k in runs[0] if all(k in r for r in runs)]
    return {k: {"median": round(statistics.median(r[k] for r in runs), 4), "min": min(r[k] for r in runs),
                "max": max(r[k] for r in runs)} for k in keys}


def print_table(summary: dict[str, dict[str, float]], n: int, label: str = "") -> None:
    print(f"\nconnect -> Connected, fresh node, {n} runs{label}: median (min-max), ms")
    for name, ours in PHASES:
        s = summary[name]
        print(f"  {name:<16} {s['median'] * 1000:7.0f}  ({s['min'] * 1000:.0f}-{s['max'] * 1000:.0f})"
              f"  {'ours' if ours else 'server'}")
    for name in ("ours", "server", "total"):
        s = summary[name]
        print(f"  {name:<16} {s['median'] * 1000:7.0f}  ({s['min'] * 1000:.0f}-{s['max'] * 1000:.0f})")
    if "sup_idle" in summary:
        s = summary["sup_idle"]
        print(f"  (of supervisord: ready, waiting for the ctl's first look {s['median'] * 1000:.0f} "
              f"({s['min'] * 1000:.0f}-{s['max'] * 1000:.0f}))")
    ups = [k for k in summary if k.startswith("up_")]
    if ups:
        print("  services up (after t0): " + ", ".join(f"{k[3:]} {summary[k]['median'] * 1000:.0f}" for k in ups))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--name", default="sb-connect", help="the reference network's name (reused if up)")
    ap.add_argument("--keep", action="store_true", help="leave the reference network up")
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--trees", nargs="+", metavar="DIR", help="A/B: alternate runs between these PYTHONPATH trees")
    args = ap.parse_args()
    trees: list[str | None] = list(args.trees) if args.trees else [None]
    if os.geteuid() != 0:
        print("needs root (network namespace)", file=sys.stderr)
        return 1
    info = network.load_state(args.name)
    started_here = not (info and info.get("peers"))
    if started_here:
        info = network.up(2, name=args.name, log=lambda m: None)
    assert info is not None
    runs: dict[str, list[dict[str, float]]] = {str(t): [] for t in trees}
    try:
        base = harness(info)
        for i in range(args.runs):
            for tree in trees:
                sb = Sunbeam(info, hostname=f"connect-{os.getpid()}-{i}")
                if tree is not None:
                    sb.env["PYTHONPATH"] = os.pathsep.join(p for p in (tree, sb.env.get("PYTHONPATH")) if p)
                try:
                    phases = one_connect(sb)
                finally:
                    sb.stop()
                runs[str(tree)].append(phases)
                print(f"run {i + 1}{f' ({tree})' if tree else ''}: total {phases['total']:.3f} s, "
                      f"ours {phases['ours']:.3f}, server {phases['server']:.3f}", flush=True)
                time.sleep(1.0)  # let the stop settle before the next start
    finally:
        if started_here and not args.keep:
            network.down(args.name)
    summaries = {}
    for tree, tree_runs in runs.items():
        summaries[tree] = summarize(tree_runs)
        print_table(summaries[tree], len(tree_runs), f" ({tree})" if tree != "None" else "")
    print(f"  harness: ip netns exec + bare `python -c pass` {base * 1000:.0f} ms (part of ctl_start)")
    if args.json:
        result: dict = {"machine": version_line(), "harness_s": round(base, 4)}
        if args.trees:
            result["trees"] = {t: {"runs": runs[t], "summary": summaries[t]} for t in runs}
        else:
            result.update(runs=runs["None"], summary=summaries["None"])
        save_results(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
