"""A/B of two source trees on real transfers: CPU per 100 MB per process, or echo latency.

    python bench/bench_trees.py --trees DIR_A DIR_B [--mode down|up|echo] [--size-mb 200]
                                [--pairs 6] [--env-b NAME=VALUE ...] [--json PATH]

Each DIR holds a ``sunbeam`` package (``DIR/sunbeam/{ctl,shared,services,refnet}``, e.g.
``git archive <rev> ctl shared services refnet`` unpacked there, with
``shared/supervisord.conf`` a real copy of the top-level one), put first on PYTHONPATH for
the ctl, supervisord and every service of its side. ``--env-b``: environment for B's
side only (A/B a setting on one tree: ``--trees T T --env-b SUNBEAM_TCP_FLOWS=1``).

One reference network (Headscale + 2 tailscaled peers); the target is peer-2's test
service. Each transfer gets a fresh side -- `sunbeam-ctl connect` as a new node, a direct
path found, the transfer, `stop` -- and the trees alternate A, B, B, A, A, B... so both
see the same moments of a busy machine. Prints each transfer (MB/s, CPU per 100 MB of
every process that used any), then per tree the median and range, and in how many pairs
B was lower.

Why one side at a time: two sides kept running next to each other, transfers alternating
between them, made the side started second ~10-15 % cheaper per byte whichever tree it
ran (two runs with the trees swapped, 2026-12-07), which had first passed for a gain.

Needs root (network namespace) and the reference binaries (`sunbeam-refnet install`).
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
from sides import Sunbeam, cpu_seconds, wait_reachable, write_payload  # noqa: E402

from sunbeam.refnet import network  # noqa: E402


def one(info: dict, target: dict, args: argparse.Namespace, tree: str, env: dict[str, str], k: int,
        payload: Path | None) -> dict:
    side = Sunbeam(info, hostname=f"sb-trees{k}", socks_port=1080)
    side.env["PYTHONPATH"] = tree
    side.env.update(env)
    try:
        side.start()
        wait_reachable(info, side, target)
        time.sleep(2)
        names = {s["pid"]: s["service"] for s in side.services()}
        if args.mode == "echo":
            p50, p99 = latency(info, side, target)
            return {"p50_ms": round(p50, 3), "p99_ms": round(p99, 3), "value": p50}
        cpu0 = {pid: cpu_seconds([pid]) for pid in names}
        if args.mode == "down":
            mbps, cpu = download(info, side, target, args.size_mb, [0])
        else:
            assert payload is not None
            mbps, cpu = upload(info, side, target, payload, args.size_mb)
        per = {names[pid]: round((cpu_seconds([pid]) - c0) * 100 / args.size_mb, 3) for pid, c0 in cpu0.items()}
        return {"mbps": round(mbps, 1), "cpu_s_per_100mb": round(cpu, 3),
                "per_process": {n: v for n, v in per.items() if v}, "value": cpu}
    finally:
        side.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trees", nargs=2, required=True, metavar=("DIR_A", "DIR_B"))
    ap.add_argument("--mode", choices=["down", "up", "echo"], default="down")
    ap.add_argument("--size-mb", type=int, default=200)
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--env-b", nargs="*", default=[], metavar="NAME=VALUE")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    env_b = dict(e.split("=", 1) for e in args.env_b)
    sides = [("A", args.trees[0], {}), ("B", args.trees[1], env_b)]
    info = network.up(2, name=f"sbtrees-{os.getpid()}", log=lambda m: print(f"[refnet] {m}", file=sys.stderr))
    results: dict[str, list[dict]] = {"A": [], "B": []}
    try:
        target = info["peers"][1]
        payload = write_payload(info, args.size_mb) if args.mode == "up" else None
        k = 0
        for pair in range(args.pairs):
            for label, tree, env in sides if pair % 2 == 0 else sides[::-1]:
                k += 1
                r = one(info, target, args, tree, env, k, payload)
                results[label].append(r)
                print(f"{label} {json.dumps({x: v for x, v in r.items() if x != 'value'})}", flush=True)
    finally:
        network.down(info["name"])
    unit = "ms p50" if args.mode == "echo" else "s CPU per 100 MB"
    for label, tree, _env in sides:
        vals = [r["value"] for r in results[label]]
        print(f"{label} ({tree}): median {statistics.median(vals):.3f} {unit}, range {min(vals):.3f}-{max(vals):.3f}")
    lower = sum(1 for a, b in zip(results["A"], results["B"], strict=True) if b["value"] < a["value"])
    print(f"B lower in {lower} of {args.pairs} pairs")
    if args.json:
        Path(args.json).write_text(json.dumps({"mode": args.mode, "trees": args.trees, "env_b": env_b,
                                               "runs": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
