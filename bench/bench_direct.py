"""A/B of the workers' direct sockets (issue 20 item 2): SUNBEAM_DIRECT_SOCKETS=0 vs 1.

One reference network (Headscale + 2 tailscaled peers; peer-2 is the target). Two sunbeam
instances join it side by side (2 WireGuard workers each, SOCKS5 on 127.0.0.1:1080 and
:1081), one with the switch off (A: proxy -> worker -> udp -> kernel), one with it on (B:
proxy -> worker -> kernel). Each round measures both, alternating which goes first:

    latency    64-byte echo over one SOCKS5 tunnel to the target's echo port, p50 / p99 ms
               (``--echoes`` round trips after 20 warm-up ones)
    download   ``--size-mb`` MB through the SOCKS5 proxy: MB/s and CPU seconds per 100 MB
               of every sunbeam process (supervisord + services, /proc/<pid>/stat)
    upload     the same, the other way

Before measuring, both must have a direct path to the target (`sunbeam-ctl peers`), and B's
worker must show datagrams received on its own socket (``direct.rx.datagrams``), else the
run stops: an A/B of two identical paths would prove nothing.

    python bench/bench_direct.py [--rounds 5] [--size-mb 100] [--echoes 1000] [--json PATH]

Needs root (network namespaces) and the reference binaries. Prints per-round figures, then
the medians and min-max of each variant, and writes JSON (default
bench/results/direct.json).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_vs_tailscaled import download, latency, upload  # noqa: E402
from sides import Sunbeam, save_results, version_line, wait_reachable, write_payload  # noqa: E402

from sunbeam.refnet import network  # noqa: E402

METRICS = ("latency_p50_ms", "latency_p99_ms", "download_mbps", "download_cpu_s_per_100mb", "upload_mbps",
           "upload_cpu_s_per_100mb")


def _peers(side: Sunbeam) -> dict:
    res = side.ctl("peers", "--json")
    return {p["name"]: p for p in json.loads(res.stdout or "[]")} if res.returncode == 0 else {}


def _worker_counters(side: Sunbeam) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in side.services():
        if s["service"].startswith("wg-"):
            for k, v in (s.get("counters") or {}).items():
                if k.startswith("direct."):
                    out[k] = out.get(k, 0) + v
    return out


def _direct_path(side: Sunbeam, target: dict) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        side.ctl("ping", target["name"], "-c", "1", timeout=30)
        if _peers(side).get(target["name"], {}).get("path") == "direct":
            return
        time.sleep(0.5)
    raise RuntimeError(f"{side.env['SUNBEAM_HOSTNAME']}: no direct path to {target['name']}")


def run(args: argparse.Namespace) -> dict:
    info = network.up(2, name=f"sbdirect-{os.getpid()}", log=lambda m: print(f"[refnet] {m}", file=sys.stderr))
    target = info["peers"][1]
    payload = write_payload(info, args.size_mb)
    sides = {"A_off": Sunbeam(info, hostname="sb-direct-off", socks_port=1080),
             "B_on": Sunbeam(info, hostname="sb-direct-on", socks_port=1081)}
    sides["A_off"].env["SUNBEAM_DIRECT_SOCKETS"] = "0"
    sides["B_on"].env["SUNBEAM_DIRECT_SOCKETS"] = "1"
    rows: dict[str, dict[str, list[float]]] = {m: {n: [] for n in sides} for m in METRICS}
    results: dict = {"machine": version_line(), "size_mb": args.size_mb, "rounds": args.rounds,
                     "echoes": args.echoes}
    try:
        for side in sides.values():
            side.start()
        for side in sides.values():
            wait_reachable(info, side, target)
            _direct_path(side, target)
        before = _worker_counters(sides["B_on"])
        latency(info, sides["B_on"], target, count=50)
        after = _worker_counters(sides["B_on"])
        if after.get("direct.rx.datagrams", 0) <= before.get("direct.rx.datagrams", 0):
            raise RuntimeError(f"B's workers received nothing on their direct sockets: {after}")
        if _worker_counters(sides["A_off"]).get("direct.opened"):
            raise RuntimeError("A opened direct sockets with the switch off")
        names = list(sides)
        for r in range(args.rounds):
            for name in names if r % 2 == 0 else reversed(names):
                side = sides[name]
                _direct_path(side, target)
                p50, p99 = latency(info, side, target, count=args.echoes)
                down, down_cpu = download(info, side, target, args.size_mb, [0])
                up, up_cpu = upload(info, side, target, payload, args.size_mb)
                for m, v in zip(METRICS, (p50, p99, down, down_cpu, up, up_cpu), strict=True):
                    rows[m][name].append(round(v, 4))
                print(f"[bench] round {r + 1} {name}: p50 {p50:.3f} p99 {p99:.3f} ms, down {down:.1f} MB/s "
                      f"({down_cpu:.3f} s/100MB), up {up:.1f} MB/s ({up_cpu:.3f} s/100MB)", file=sys.stderr)
        results["direct_counters_B"] = _worker_counters(sides["B_on"])
    finally:
        for side in sides.values():
            side.stop()
        network.down(info["name"])
    results["runs"] = rows
    results["median"] = {m: {n: round(statistics.median(v), 4) for n, v in d.items() if v} for m, d in rows.items()}
    results["range"] = {m: {n: [min(v), max(v)] for n, v in d.items() if v} for m, d in rows.items()}
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--size-mb", type=int, default=100)
    ap.add_argument("--echoes", type=int, default=1000)
    ap.add_argument("--json", default=str(Path(__file__).resolve().parent / "results" / "direct.json"))
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_direct: needs root (network namespaces)", file=sys.stderr)
        return 2
    results = run(args)
    print(f"{'metric':28} {'A: off (median, min-max)':>30} {'B: on (median, min-max)':>30}")
    for m in METRICS:
        cells = [f"{results['median'][m][n]:.3f} ({results['range'][m][n][0]:.3f}-{results['range'][m][n][1]:.3f})"
                 for n in ("A_off", "B_on")]
        print(f"{m:28} {cells[0]:>30} {cells[1]:>30}")
    save_results(results, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
