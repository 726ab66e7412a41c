"""New connections: sunbeam's listeners against a real tailscaled's SOCKS5, same run.

One reference network (Headscale + 2 tailscaled peers; peer-2's test service is the
target). Contestants (bench/sides.py): sunbeam (`sunbeam-ctl connect`, 2 WireGuard workers)
with a forward listener (127.0.0.1:1081 -> peer-2:18002), its SOCKS5 (127.0.0.1:1080) and
its HTTP proxy (127.0.0.1:3128, absolute-form requests), and a third tailscaled in userspace
mode through its SOCKS5. (Not its HTTP proxy: that one keeps its upstream connection to the
target open and sends every request over it, so it opens no new tailnet connections;
sunbeam's opens one per request.) Each request is one
``GET /blob/1K`` with ``Connection: close`` on a new connection, sha256 checked
(sunbeam.refnet.loadgen). Per round, in an order that rotates, each contestant runs:

    sequential   ``--seq-count`` requests one after the other: latency p50 / p99 of
                 connect (until the SOCKS5 success reply; for forward and HTTP only the
                 local TCP connect, their tailnet connect is not visible to a client) and
                 of connect + request (until the whole response arrived)
    concurrent   ``--count`` requests, ``--concurrency`` at a time: new connections per
                 second (successful requests / wall time), the same latencies under load,
                 and CPU seconds per 1,000 connections (all sunbeam processes vs the
                 tailscaled process; the target peer's CPU is not counted)

Both of that in two modes (``--close``): ``server`` (``Connection: close``: the service
closes first, so the peer holds the TIME_WAIT and the connecting side must not reuse the
4-tuple: issue 15's case) and ``client`` (keep-alive, the client closes after the body,
so the TIME_WAIT stays with the side that connects). tailscaled 1.98 loses 1-6 % of
connections in the first mode (it reuses such tuples; its SOCKS5 answers 1 after 5 s),
which lowers its rate there; the second mode compares the rates without that.

Failures (kind and count) are reported, never folded into the figures: a hang costs its
``--timeout`` of wall time, so it lowers the rate. Figures are medians over ``--rounds``;
ratios are the contestant over tailscaled's SOCKS5 (for the rate, higher is better; for
latencies and CPU, lower is better).

    python bench/bench_conns.py [--rounds 2] [--seq-count 300] [--count 1000]
                                [--concurrency 50] [--timeout 10] [--close server,client]
                                [--json PATH]

Needs root (network namespaces) and the reference binaries (`sunbeam-refnet install`).
Traffic stays inside the namespace. Default run: a few minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sides import Sunbeam, Tailscaled, cpu_seconds, save_results, version_line  # noqa: E402

from sunbeam.refnet import netns, network  # noqa: E402
from sunbeam.refnet.loadgen import Via, fetch, run  # noqa: E402

PATH = "/blob/1K?seed=conns"
FORWARD, HTTP = 1081, 3128
BASELINE = "tailscaled-socks5"
FIGURES = ("seq_connect_p50_ms", "seq_connect_p99_ms", "seq_total_p50_ms", "seq_total_p99_ms", "conns_per_s",
           "conc_total_p50_ms", "conc_total_p99_ms", "cpu_s_per_1000")
HIGHER_IS_BETTER = {"conns_per_s"}


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def _wait(what: str, check, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(1)
    raise RuntimeError(f"{what}: not within {timeout:.0f} s")


def _sunbeam_direct(sb: Sunbeam, target: dict) -> bool:
    sb.ctl("ping", target["name"], "-c", "1", timeout=30)
    res = sb.ctl("peers", "--json")
    peers = json.loads(res.stdout) if res.returncode == 0 else []
    return any(p["name"] == target["name"] and p.get("path") == "direct" for p in peers)


def _tailscaled_direct(ts: Tailscaled, target: dict) -> bool:
    subprocess.run(ts.entry["tailscale_cli"] + ["ping", "--c=1", target["ips"][0]], capture_output=True, timeout=30)
    res = subprocess.run(ts.entry["tailscale_cli"] + ["status", "--json"], capture_output=True, text=True, timeout=30)
    peers = (json.loads(res.stdout).get("Peer") or {}).values() if res.returncode == 0 else []
    return any(p.get("HostName") == target["name"] and p.get("CurAddr") for p in peers)


def contestants(sb: Sunbeam, ts: Tailscaled) -> dict[str, tuple[Via, object]]:
    def addr(text: str) -> tuple[str, int]:
        host, port = text.rsplit(":", 1)
        return host, int(port)

    return {"sunbeam-forward": (Via("forward", ("127.0.0.1", FORWARD)), sb),
            "sunbeam-socks5": (Via("socks5", addr(sb.socks)), sb),
            "sunbeam-http": (Via("http", ("127.0.0.1", HTTP)), sb),
            BASELINE: (Via("socks5", addr(ts.socks)), ts)}


def measure(info: dict, target: dict, via: Via, side, args: argparse.Namespace, mode: str) -> dict:
    kw = dict(path=PATH, timeout=args.timeout, netns=info["netns"], client_closes=mode == "client")
    seq = run(via, target["name"], target["service_port"], count=args.seq_count, concurrency=1, **kw)
    log(seq.line())
    pids = side.pids()
    cpu0 = cpu_seconds(pids)
    conc = run(via, target["name"], target["service_port"], count=args.count, concurrency=args.concurrency, **kw)
    cpu = cpu_seconds(pids) - cpu0
    log(conc.line())
    s, c = seq.figures(), conc.figures()
    return {"seq_connect_p50_ms": s["connect_p50_ms"], "seq_connect_p99_ms": s["connect_p99_ms"],
            "seq_total_p50_ms": s["total_p50_ms"], "seq_total_p99_ms": s["total_p99_ms"],
            "conns_per_s": c["conns_per_s"], "conc_total_p50_ms": c["total_p50_ms"],
            "conc_total_p99_ms": c["total_p99_ms"],
            "cpu_s_per_1000": round(cpu * 1000 / max(conc.ok, 1), 2),
            "failures": {f"seq {k}": v for k, v in seq.failures.items()} | {
                f"conc {k}": v for k, v in conc.failures.items()},
            "examples": (seq.examples + conc.examples)[:5]}


def run_bench(args: argparse.Namespace) -> dict:
    info = network.up(2, name=f"sbconns-{os.getpid()}", log=lambda m: log(f"refnet: {m}"))
    target = info["peers"][1]
    sb = Sunbeam(info, listeners=[
        {"kind": "forward", "listen": f"127.0.0.1:{FORWARD}", "target": f"{target['name']}:{target['service_port']}"},
        {"kind": "http", "listen": f"127.0.0.1:{HTTP}"}])
    ts = Tailscaled(info)
    results: dict = {"machine": version_line(), "rounds": args.rounds, "seq_count": args.seq_count,
                     "count": args.count, "concurrency": args.concurrency, "timeout_s": args.timeout, "path": PATH}
    try:
        sb.start()
        ts.start()
        sides = contestants(sb, ts)
        for name, (via, _side) in sides.items():
            def warm(via=via) -> bool:
                with netns.entered(info["netns"]):
                    return fetch(via, target["name"], target["service_port"], PATH, timeout=10).ok
            _wait(f"{name} reaching {target['name']}", warm)
        _wait("sunbeam's direct path", lambda: _sunbeam_direct(sb, target))
        _wait("tailscaled's direct path", lambda: _tailscaled_direct(ts, target))
        names = list(sides)
        results["figures"] = {}
        for mode in args.close:
            rows: dict[str, list[dict]] = {name: [] for name in sides}
            for r in range(args.rounds):
                order = names[r % len(names):] + names[:r % len(names)]
                for name in order:
                    log(f"{mode} closes, round {r + 1}: {name}")
                    via, side = sides[name]
                    rows[name].append(measure(info, target, via, side, args, mode))
            results["figures"][mode] = {name: summarise(runs) for name, runs in rows.items()}
        results["sunbeam_direct_at_end"] = _sunbeam_direct(sb, target)
    finally:
        sb.stop()
        network.down(info["name"])
    return results


def summarise(runs: list[dict]) -> dict:
    out: dict = {}
    for key in FIGURES:
        values = [r[key] for r in runs if r[key] is not None]
        out[key] = round(statistics.median(values), 2) if values else None
    failures: dict[str, int] = {}
    for r in runs:
        for kind, n in r["failures"].items():
            failures[kind] = failures.get(kind, 0) + n
    out["failures"] = failures
    out["examples"] = [e for r in runs for e in r["examples"]][:5]
    return out


def table(results: dict) -> str:
    lines = [f"machine: {results['machine']}",
             f"{results['rounds']} rounds; per round and contestant {results['seq_count']} sequential and "
             f"{results['count']} concurrent ({results['concurrency']} at a time) GET {results['path']}, "
             f"each on a new connection; medians; (ratio = contestant / {BASELINE})"]
    for mode, figs in results["figures"].items():
        lines.append("")
        lines.append({"server": "server closes first (Connection: close)",
                      "client": "client closes first (keep-alive, closed after the body)"}[mode])
        lines += mode_table(figs)
    lines.append(f"sunbeam's path to the target still direct at the end: {results['sunbeam_direct_at_end']}")
    return "\n".join(lines)


def mode_table(figs: dict) -> list[str]:
    """One row per figure, one column per contestant: ``value (ratio to the baseline)``."""
    base = figs[BASELINE]
    names = list(figs)
    width = max(len(n) for n in names) + 2
    lines = [f"{'':20}" + "".join(f"{n:>{width + 8}}" for n in names)]
    for key in FIGURES:
        cells = []
        for n in names:
            v, b = figs[n][key], base[key]
            ratio = f" ({v / b:.2f})" if v is not None and b and n != BASELINE else ""
            cells.append(f"{'-' if v is None else v}{ratio}".rjust(width + 8))
        lines.append(f"{key:20}" + "".join(cells))
    lines.append("(conns_per_s: higher is better; latencies and CPU: lower is better)")
    for n in names:
        f = figs[n]
        fails = ", ".join(f"{k} {v}" for k, v in sorted(f["failures"].items())) or "none"
        lines.append(f"failures {n}: {fails}" + (f"; first: {f['examples'][:2]}" if f["failures"] else ""))
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seq-count", type=int, default=300, help="sequential requests per round and contestant")
    ap.add_argument("--count", type=int, default=1000, help="concurrent requests per round and contestant")
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--timeout", type=float, default=10.0, help="per request: a hang counts as a failure")
    ap.add_argument("--close", type=lambda v: [m for m in v.split(",") if m], default=["server", "client"],
                    help="which side closes first, one or both of server,client")
    ap.add_argument("--json", default=str(Path(__file__).resolve().parent / "results" / "conns-latest.json"))
    args = ap.parse_args(argv)
    if not args.close or set(args.close) - {"server", "client"}:
        ap.error("--close takes server, client or server,client")
    results = run_bench(args)
    print(table(results))
    save_results(results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
