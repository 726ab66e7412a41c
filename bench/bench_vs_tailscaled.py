"""sunbeam against a real tailscaled doing the same job on the same machine, same run.

One reference network (Headscale + 2 tailscaled peers; peer-2 is the target: its
/blob, /upload and TCP echo services). Contestants (bench/sides.py): sunbeam (SOCKS5 on
127.0.0.1:1080, 2 WireGuard workers) and a third tailscaled in userspace mode (its
SOCKS5). Every case alternates sunbeam / tailscaled for ``--rounds`` rounds and reports
medians and the sunbeam/tailscaled ratio:

    1. download / upload  one TCP flow through the SOCKS5 proxy, ``--size-mb`` MB, MB/s
                          (plus CPU seconds both spent per 100 MB)
    2. latency            64-byte request/response over one TCP connection, p50 / p99
    3. connect            `sunbeam-ctl connect` -> Connected vs tailscaled start + `tailscale
                          up` -> Running (fresh node each round); sunbeam's split from its
                          control log: startup (until the TS2021 connection is up), waiting
                          for the register answer, for the first map response, for the
                          server to show peers our home DERP region (Running), the rest
    4. memory             RSS and PSS (shared pages split among processes) of all sunbeam
                          processes (supervisord + services) vs the tailscaled process:
                          idle, and peak RSS during the downloads
    5. crypto stage       WireGuard packets/s with 1 and 2 workers (bench_wg_workers.py;
                          sunbeam only: tailscaled's crypto is not separable)
    6. large netmap       ``--nodes`` extra registered nodes: CPU seconds and RSS of our
                          control process vs tailscaled while the netmap grows

    python bench/bench_vs_tailscaled.py [--rounds 3] [--size-mb 200] [--nodes 200] [--json PATH]

Needs root (network namespaces) and the reference binaries (`sunbeam-refnet install`).
Traffic stays inside the namespace. Prints a table, then writes JSON (default
bench/results/latest.json, which is tracked: each case has sunbeam, tailscaled and ratio,
so anyone can diff two runs).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import secrets
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sides import (  # noqa: E402
    Side,
    Sunbeam,
    Tailscaled,
    cpu_seconds,
    fetch_blob,
    post_upload,
    pss_bytes,
    rss_bytes,
    save_results,
    version_line,
    wait_reachable,
    write_payload,
)

from sunbeam.refnet import netns, network  # noqa: E402

MB = 1 << 20


def download(info: dict, side: Side, target: dict, size_mb: int, peak: list[int]) -> tuple[float, float]:
    """(MB/s, CPU seconds per 100 MB); ``peak`` gets the highest RSS seen meanwhile."""
    pids = side.pids()
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            peak[0] = max(peak[0], rss_bytes(pids))

    peak[0] = max(peak[0], rss_bytes(pids))
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu0 = cpu_seconds(pids)
    try:
        took = fetch_blob(info, side, target, size_mb, "bench")
    finally:
        done.set()
        sampler.join()
    cpu = cpu_seconds(pids) - cpu0
    peak[0] = max(peak[0], rss_bytes(pids))
    return size_mb / took, cpu * 100 / size_mb


def upload(info: dict, side: Side, target: dict, payload: Path, size_mb: int) -> tuple[float, float]:
    pids = side.pids()
    cpu0 = cpu_seconds(pids)
    took = post_upload(info, side, target, payload, size_mb)
    return size_mb / took, (cpu_seconds(pids) - cpu0) * 100 / size_mb


def latency(info: dict, side: Side, target: dict, count: int = 1000) -> tuple[float, float]:
    """p50, p99 in ms of a 64-byte echo over one SOCKS5 tunnel to the target's echo port."""
    host, port = side.socks.rsplit(":", 1)
    with netns.entered(info["netns"]):
        s = socket.create_connection((host, int(port)), timeout=30)
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        name = target["name"].encode()
        s.sendall(b"\x05\x01\x00")
        s.recv(2)
        s.sendall(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + struct.pack("!H", target["echo_port"]))
        if s.recv(10)[:2] != b"\x05\x00":
            raise RuntimeError(f"{side.name}: SOCKS5 CONNECT to the echo service refused")
        msg = secrets.token_bytes(63) + b"\n"
        rtts = []
        for i in range(count + 20):
            t0 = time.perf_counter()
            s.sendall(msg)
            got = b""
            while len(got) < len(msg):
                got += s.recv(4096)
            if i >= 20:  # the first few warm the path
                rtts.append((time.perf_counter() - t0) * 1000)
    finally:
        s.close()
    rtts.sort()
    return statistics.median(rtts), rtts[int(len(rtts) * 0.99) - 1]


def add_nodes(info: dict, count: int) -> None:
    """Register ``count`` nodes without a client (Headscale's debug create-node + register)."""
    cli = info["headscale_cli"]

    def one(i: int) -> None:
        key = "hskey-authreq-" + secrets.token_urlsafe(18)
        subprocess.run(cli + ["debug", "create-node", "--name", f"bulk-{i}", "--user", "refnet", "--key", key],
                       capture_output=True, check=True, timeout=60)
        subprocess.run(cli + ["auth", "register", "--auth-id", key, "--user", "refnet"], capture_output=True,
                       check=True, timeout=60)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(count)))


def large_netmap(info: dict, sides: list, nodes: int) -> dict:
    before = {s.name: (cpu_seconds(s.control_pids()), s.netmap_peers()) for s in sides}
    t0 = time.monotonic()
    add_nodes(info, nodes)
    made = time.monotonic() - t0
    out: dict = {"nodes": nodes, "register_seconds": round(made, 1)}
    for s in sides:
        want = before[s.name][1] + nodes
        deadline = time.monotonic() + 120
        while s.netmap_peers() < want and time.monotonic() < deadline:
            time.sleep(1)
        out[s.name] = {"peers": s.netmap_peers(), "cpu_s": round(cpu_seconds(s.control_pids()) - before[s.name][0], 2),
                       "rss_mb": round(rss_bytes(s.control_pids()) / MB, 1)}
    return out


def crypto_stage() -> dict:
    from bench_wg_workers import measure

    one = measure(1, 3.0, 1400)
    two = measure(2, 3.0, 1400)
    return {"1_worker_pps": round(one), "2_workers_pps": round(two), "scaling": round(two / one, 2)}


def med(xs: list[float]) -> float:
    return round(statistics.median(xs), 2)


def run(args: argparse.Namespace) -> dict:
    info = network.up(2, name=f"sbbench-{os.getpid()}", log=lambda m: print(f"[refnet] {m}", file=sys.stderr))
    target = info["peers"][1]
    payload = write_payload(info, args.size_mb)
    results: dict = {"machine": version_line(), "size_mb": args.size_mb, "rounds": args.rounds}
    sb, ts = Sunbeam(info), Tailscaled(info)
    try:
        connect = {"sunbeam": [sb.start()], "tailscaled": [ts.start()]}
        sides: list[Side] = [sb, ts]
        for s in sides:
            wait_reachable(info, s, target)
        time.sleep(3)
        results["rss_idle_mb"] = {s.name: round(rss_bytes(s.pids()) / MB, 1) for s in sides}
        results["pss_idle_mb"] = {s.name: round(pss_bytes(s.pids()) / MB, 1) for s in sides}
        rows: dict[str, dict[str, list[float]]] = {k: {"sunbeam": [], "tailscaled": []} for k in (
            "download_mbps", "download_cpu_s_per_100mb", "upload_mbps", "upload_cpu_s_per_100mb",
            "latency_p50_ms", "latency_p99_ms")}
        peak = {s.name: [0] for s in sides}
        for r in range(args.rounds):
            for s in sides if r % 2 == 0 else sides[::-1]:
                print(f"[bench] round {r + 1}: {s.name}", file=sys.stderr)
                mbps, cpu = download(info, s, target, args.size_mb, peak[s.name])
                rows["download_mbps"][s.name].append(mbps)
                rows["download_cpu_s_per_100mb"][s.name].append(cpu)
                mbps, cpu = upload(info, s, target, payload, args.size_mb)
                rows["upload_mbps"][s.name].append(mbps)
                rows["upload_cpu_s_per_100mb"][s.name].append(cpu)
                p50, p99 = latency(info, s, target)
                rows["latency_p50_ms"][s.name].append(p50)
                rows["latency_p99_ms"][s.name].append(p99)
        results["rss_load_mb"] = {n: round(p[0] / MB, 1) for n, p in peak.items()}
        results.update({k: {n: med(v) for n, v in d.items()} for k, d in rows.items()})
        # every round's figures, and each round's ratio (the two sides measured back to
        # back): the spread a median hides on a noisy box
        results["per_round"] = {k: {**{n: [round(x, 3) for x in v] for n, v in d.items()},
                                    "ratio": [round(a / b, 3) if b else None
                                              for a, b in zip(d["sunbeam"], d["tailscaled"], strict=True)]}
                                for k, d in rows.items()}
        results["large_netmap"] = large_netmap(info, [sb, ts], args.nodes) if args.nodes else None
        parts = [sb.connect_parts]
        for r in range(1, args.rounds):  # fresh nodes: connect time from nothing
            fresh_sb = Sunbeam(info, hostname=f"sunbeam-bench{r}", socks_port=1080 + r)
            connect["sunbeam"].append(fresh_sb.start())
            parts.append(fresh_sb.connect_parts)
            fresh_sb.stop()
            fresh_ts = Tailscaled(info)
            connect["tailscaled"].append(fresh_ts.start())
            fresh_ts.stop()
        results["connect_s"] = {n: med(v) for n, v in connect.items()}
        parts = [p for p in parts if p]
        if parts:
            results["sunbeam_connect_parts_s"] = {k: med([p[k] for p in parts]) for k in parts[0]}
    finally:
        sb.stop()
        network.down(info["name"])
    results["crypto_stage"] = crypto_stage()
    return results


LOWER_IS_BETTER = {"latency_p50_ms", "latency_p99_ms", "connect_s", "rss_idle_mb", "pss_idle_mb", "rss_load_mb",
                   "download_cpu_s_per_100mb", "upload_cpu_s_per_100mb"}


def table(results: dict) -> str:
    lines = [f"machine: {results['machine']}; {results['rounds']} rounds, {results['size_mb']} MB transfers",
             f"{'case':28} {'sunbeam':>10} {'tailscaled':>11} {'ratio':>7}  (ratio = sunbeam/tailscaled)"]
    for key in ("download_mbps", "upload_mbps", "download_cpu_s_per_100mb", "upload_cpu_s_per_100mb",
                "latency_p50_ms", "latency_p99_ms", "connect_s", "rss_idle_mb", "pss_idle_mb", "rss_load_mb"):
        v = results.get(key)
        if not v:
            continue
        ratio = v["sunbeam"] / v["tailscaled"] if v["tailscaled"] else float("nan")
        hint = "lower is better" if key in LOWER_IS_BETTER else "higher is better"
        lines.append(f"{key:28} {v['sunbeam']:>10} {v['tailscaled']:>11} {ratio:>7.2f}  {hint}")
    for key, d in (results.get("per_round") or {}).items():
        ratios = [r for r in d["ratio"] if r is not None]
        if ratios:
            lines.append(f"{key:28} per round: ratio {min(ratios):.2f}-{max(ratios):.2f} "
                         f"({', '.join(f'{r:.2f}' for r in ratios)})")
    parts = results.get("sunbeam_connect_parts_s")
    if parts:
        lines.append("sunbeam connect, split (medians, s): " + ", ".join(f"{k} {v}" for k, v in parts.items()))
    nm = results.get("large_netmap")
    if nm:
        for n in ("sunbeam", "tailscaled"):
            lines.append(f"large netmap (+{nm['nodes']} nodes), {n:10}: peers {nm[n]['peers']}, "
                         f"CPU {nm[n]['cpu_s']} s, RSS {nm[n]['rss_mb']} MB (control process)")
    c = results["crypto_stage"]
    lines.append(f"crypto stage (sunbeam): 1 worker {c['1_worker_pps']} pkt/s, 2 workers {c['2_workers_pps']} pkt/s "
                 f"(x{c['scaling']})")
    return "\n".join(lines)


def with_ratios(results: dict) -> dict:
    """Each case ``{"sunbeam": x, "tailscaled": y}`` gains ``"ratio": x / y`` (rounded), so a
    diff of two latest.json files shows the ratio moving, not only the figures."""
    for value in results.values():
        if isinstance(value, dict) and {"sunbeam", "tailscaled"} <= value.keys():
            a, b = value["sunbeam"], value["tailscaled"]
            if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b:
                value["ratio"] = round(a / b, 3)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size-mb", type=int, default=200)
    ap.add_argument("--nodes", type=int, default=200, help="extra registered nodes for the large-netmap case")
    ap.add_argument("--json", default=str(Path(__file__).resolve().parent / "results" / "latest.json"))
    args = ap.parse_args(argv)
    results = with_ratios(run(args))
    print(table(results))
    save_results(results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
