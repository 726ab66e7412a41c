"""sunbeam against a real tailscaled over the same emulated real link (issue 20 item 1).

One reference network made for a second host (``network.up(2, hosts=True)``): Headscale and
two tailscaled peers in namespace A; peer-2 is the target (its /blob and /upload service).
For each link profile, host B (split) is attached behind the link emulator
(``topology.attach(info, "split", link=PROFILE)``, refnet/linkemu.py: namespace E on the
wire, each direction delayed/lossy on its own), and both contestants run in B:

    sunbeam      `sunbeam-ctl connect` in B (SOCKS5 127.0.0.1:1080, 2 WireGuard workers)
    tailscaled   a real tailscaled in B, userspace networking, its SOCKS5 (127.0.0.1:11130)

Both reach peer-2 over a direct path (checked: peer-2 sees each at 10.77.0.2) that crosses
the emulated link; curl in B fetches ``--size-mb`` MB (download: peer-2's userspace TCP
sends, the contestant's receives) and posts as much (upload: the contestant's TCP sends).
Runs alternate sunbeam / tailscaled (the order flips each repeat); medians are reported
with the ratio sunbeam/tailscaled (> 1: sunbeam faster). Per run also: CPU of the
emulator (if near 100 % of a core the emulator, not the contestant, was the limit), what
the emulator dropped/held, and sunbeam's proxy TCP counters (retransmits, RTO, ...).
Downloads also get a second row, "at the mean loss rate": every run's MB/s scaled by
sqrt(its loss rate / the case's mean), as a Reno sender's rate goes with 1/sqrt(p), so the
luck of the loss draw cancels (`loss_normalized`; JSON key ``loss_normalized``).

Before the cases, ``--ceiling-mb`` MB of kernel TCP from A to B through a 0 ms link
measure the emulator's own ceiling (MB/s and its CPU).

    python bench/bench_links.py [--profiles "20ms/0.5%" "50ms/1%+reorder=1%"] [--size-mb 50]
                                [--repeats 2] [--ceiling-mb 200] [--variants flows=1 ...] [--json PATH]

``--variants`` adds sunbeam sides with other TCP settings of the proxy (``flows=1``: one
RFC 9438 CUBIC flow instead of the default two; ``congestion=newreno``; ``quick_acks=N``;
``split_acks=0``: one ACK per batch however sparse), each its own node
and SOCKS5 port, taking turns with the others: a before/after of a TCP change in one run.

Needs root and the reference binaries. Traffic stays in the namespaces. Prints a table,
writes JSON (``--json``): {case: {"sunbeam": MB/s, "tailscaled": MB/s, "ratio": x,
["loss_normalized": {the same}]}, ...}
plus "machine", "ceiling" and "details" (per run figures).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sides import (  # noqa: E402
    SUNBEAM_SOCKS,
    Side,
    Sunbeam,
    cpu_seconds,
    fetch_blob,
    post_upload,
    save_results,
    version_line,
    wait_reachable,
    write_payload,
)

from sunbeam.refnet import network, topology  # noqa: E402
from sunbeam.refnet.install import install  # noqa: E402
from sunbeam.refnet.tailscale import Peer  # noqa: E402
from sunbeam.refnet.transfer import tcp_transfer  # noqa: E402

MB = 1 << 20
DEFAULT_PROFILES = ["20ms/0.5%", "50ms/1%+reorder=1%"]
VARIANT_ENV = {"flows": "SUNBEAM_TCP_FLOWS", "congestion": "SUNBEAM_TCP_CONGESTION",
               "quick_acks": "SUNBEAM_TCP_QUICK_ACKS", "split_acks": "SUNBEAM_TCP_SPLIT_ACKS"}
"""``--variants`` keys -> the proxy's environment (services/proxy/tcpengine.py)."""
TS_INDEX = 50  # the tailscaled in B: SOCKS5 127.0.0.1:11130


class TailscaledInB:
    """A real tailscaled (userspace networking) in host B's namespace, joined through B's
    control URL; its SOCKS5 is the contestant."""

    name = "tailscaled"

    def __init__(self, info: dict, host: dict, hostname: str) -> None:
        bins = install(log=lambda m: None)
        self.peer = Peer(TS_INDEX, Path(info["workdir"]), bins["tailscaled"], bins["tailscale"], host["netns"], False,
                         label=hostname)
        self.host, self.info = host, info
        self.socks = f"127.0.0.1:{self.peer.socks5_port}"
        self.proc: subprocess.Popen | None = None

    @property
    def hostname(self) -> str:
        return self.peer.name

    def start(self) -> float:
        t0 = time.monotonic()
        self.proc = self.peer.start_daemon()
        self.peer.wait_socket(self.proc)
        res = subprocess.run(self.peer.up_command(self.host["control_url"], self.info["auth_keys"]["ephemeral"]),
                             capture_output=True, text=True, timeout=120)
        if res.returncode != 0:
            raise RuntimeError(f"tailscale up in B failed: {res.stdout}{res.stderr}\n{self.peer.log_tail()}")
        return time.monotonic() - t0

    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc else []

    def stop(self) -> None:
        if self.proc is None:
            return
        subprocess.run(self.peer.cli + ["logout"], capture_output=True, timeout=30)  # ephemeral: node deleted
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _wait_direct(info: dict, target: dict, hostname: str, timeout: float = 90) -> str:
    """Until the target peer (in A) reaches ``hostname`` directly (at B's 10.77.0.2); its CurAddr."""
    cli = target["tailscale_cli"]
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        st = json.loads(subprocess.run(cli + ["status", "--json"], capture_output=True, text=True,
                                       timeout=30).stdout or "{}")
        for p in (st.get("Peer") or {}).values():
            if p.get("HostName") == hostname and p.get("TailscaleIPs"):
                last = p.get("CurAddr") or ""
                if last.startswith(topology.B_SPLIT_ADDR + ":"):
                    return last
                subprocess.run(cli + ["ping", "--c=10", "--until-direct=true", p["TailscaleIPs"][0]],
                               capture_output=True, text=True, timeout=60)
        time.sleep(0.5)
    raise RuntimeError(f"{hostname}: no direct path from {target['name']} within {timeout}s (CurAddr {last!r})")


def _proxy_counters(sb: Sunbeam) -> dict[str, int]:
    """sunbeam's proxy service counters (tcp_retransmit, tcp_rto, ...) from `status --json`."""
    try:
        services = sb.services()
    except subprocess.TimeoutExpired:
        return {}
    for svc in services:
        if svc.get("service") == "proxy":
            counters = svc.get("counters") or {}
            return {k: v for k, v in counters.items() if isinstance(v, int)}
    return {}


def _delta(after: dict[str, int], before: dict[str, int], prefix: str = "") -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if k.startswith(prefix) and v != before.get(k, 0)}


def _emu_cpu(info: dict) -> float:
    return cpu_seconds([int(info["host"]["link"]["pid"])])


def _link_counts(info: dict) -> dict[str, dict[str, int]]:
    stats = topology.link_stats(info)
    return {d: {k: stats[d][k] for k in ("frames", "lost", "held", "gso_frames")} for d in ("to_b", "to_a")}


def _one_run(info: dict, host: dict, side: Side, target: dict, direction: str, size_mb: int, payload: Path,
             sb: Sunbeam | None) -> dict:
    pids = side.pids()
    cpu0, emu0, link0 = cpu_seconds(pids), _emu_cpu(info), _link_counts(info)
    counters0 = _proxy_counters(sb) if sb is not None else {}
    if direction == "download":
        secs = fetch_blob(host, side, target, size_mb, "links", timeout=900)
    else:
        secs = post_upload(host, side, target, payload, size_mb, timeout=900)
    link1 = _link_counts(info)
    out: dict = {"mbps": round(size_mb / secs, 3), "seconds": round(secs, 2),
                 "cpu_s": round(cpu_seconds(pids) - cpu0, 2),
                 "emulator_cpu_pct": round((_emu_cpu(info) - emu0) / secs * 100, 1),
                 "link": {d: {k: link1[d][k] - link0[d][k] for k in link1[d]} for d in link1}}
    if sb is not None:
        out["proxy_tcp"] = _delta(_proxy_counters(sb), counters0, "tcp_")
    return out


def ceiling(info: dict, size_mb: int) -> dict:
    """Kernel TCP, A -> B, through a 0 ms link: what the emulator forwards at most."""
    topology.attach(info, "split", link="0ms")
    try:
        emu0, t0 = _emu_cpu(info), time.monotonic()
        sent = tcp_transfer(info["netns"], info["host"]["netns"], topology.B_SPLIT_ADDR, size_mb * MB)
        took = time.monotonic() - t0
        cpu = (_emu_cpu(info) - emu0) / took * 100
        counts = _link_counts(info)
    finally:
        topology.detach(info)
    if not sent.intact:
        raise RuntimeError(f"the ceiling transfer arrived damaged: {sent}")
    return {"mbps": round(sent.mb_per_s, 1), "emulator_cpu_pct": round(cpu, 1), "frames": counts["to_b"]["frames"]}


def run_profile(info: dict, profile: str, args: argparse.Namespace, payload: Path, seed: int) -> dict:
    target = info["peers"][1]
    host = topology.attach(info, "split", link=profile, seed=seed)
    sb: Sunbeam | None = None
    ts: TailscaledInB | None = None
    variants: list[Sunbeam] = []
    try:
        sb = Sunbeam(host, hostname=f"sunbeam-links-{seed}")  # fresh names: no stale node to confuse
        ts = TailscaledInB(info, host, f"ts-links-{seed}")
        print(f"[bench] {profile}: sunbeam connect {sb.start():.1f}s, tailscaled up {ts.start():.1f}s", file=sys.stderr)
        hostnames = [f"sunbeam-links-{seed}", ts.hostname]
        for i, variant in enumerate(args.variants):
            v = Sunbeam(host, hostname=f"sunbeam-links-{seed}-v{i}", socks_port=SUNBEAM_SOCKS + 1 + i)
            v.name = f"sunbeam[{variant}]"
            v.env.update(variant_env(variant))
            variants.append(v)
            print(f"[bench] {profile}: {v.name} connect {v.start():.1f}s", file=sys.stderr)
            hostnames.append(f"sunbeam-links-{seed}-v{i}")
        sides: list[Side] = [sb, ts, *variants]
        runs: dict[str, dict[str, list[dict]]] = {d: {side.name: [] for side in sides} for d in args.directions}
        for side, hostname in zip(sides, hostnames, strict=True):
            wait_reachable(host, side, target, timeout=90)
            print(f"[bench] {profile}: {side.name} direct at {_wait_direct(info, target, hostname)}", file=sys.stderr)
        for r in range(args.repeats):
            for side in sides if r % 2 == 0 else list(reversed(sides)):
                for direction in args.directions:
                    res = _one_run(info, host, side, target, direction, args.size_mb, payload,
                                   side if isinstance(side, Sunbeam) else None)
                    print(f"[bench] {profile} {direction} #{r + 1} {side.name}: {res['mbps']} MB/s "
                          f"(emulator {res['emulator_cpu_pct']} % CPU) {res.get('proxy_tcp', '')}", file=sys.stderr)
                    runs[direction][side.name].append(res)
    finally:
        if ts is not None:
            ts.stop()
        for one in (sb, *variants):
            if one is not None:
                one.stop()
        topology.detach(info)
    return runs


def loss_normalized(by_side: dict[str, list[dict]]) -> dict[str, float] | None:
    """For downloads (the same sender, peer-2's Reno, for every side): each side's median
    MB/s with every run scaled to the case's mean loss rate toward B,
    ``mbps * sqrt(p_run / p_mean)``, p = frames lost / frames offered. A Reno sender's rate
    goes with 1/sqrt(p) (Mathis et al. 1997), so this takes out the part of a run's figure
    that is the emulator's loss draw (binomial: 0.5 % of ~45 000 frames is 226 +- 15),
    which the contestants share only on average. None without loss."""
    runs = [r for rs in by_side.values() for r in rs]
    if not runs or any(not r["link"]["to_b"]["frames"] for r in runs):
        return None
    p = {id(r): r["link"]["to_b"]["lost"] / r["link"]["to_b"]["frames"] for r in runs}
    mean = statistics.fmean(p.values())
    if not mean or not all(p.values()):
        return None
    return {n: round(statistics.median(r["mbps"] * math.sqrt(p[id(r)] / mean) for r in rs), 3)
            for n, rs in by_side.items() if rs}


def _with_ratios(row: dict) -> dict:
    if row.get("tailscaled"):
        for name in [n for n in row if n.startswith("sunbeam")]:
            key = "ratio" if name == "sunbeam" else f"ratio {name}"
            row[key] = round(row[name] / row["tailscaled"], 3)
    return row


def summarise(results: dict, profile: str, runs: dict[str, dict[str, list[dict]]]) -> None:
    for direction, by_side in runs.items():
        case = f"{profile} {direction}"
        row = _with_ratios({n: round(statistics.median(r["mbps"] for r in rs), 3) for n, rs in by_side.items() if rs})
        normalized = loss_normalized(by_side) if direction == "download" else None
        if normalized:
            row["loss_normalized"] = _with_ratios(normalized)
        results["cases"][case] = row
        results["details"][case] = by_side


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--profiles", nargs="+", default=DEFAULT_PROFILES, help="link profiles (linkemu.py text form)")
    ap.add_argument("--size-mb", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=2, help="runs per side, case and direction (alternating)")
    ap.add_argument("--directions", nargs="+", default=["download", "upload"], choices=["download", "upload"])
    ap.add_argument("--ceiling-mb", type=int, default=200, help="0: skip the emulator's ceiling")
    ap.add_argument("--seed", type=int, default=20)
    ap.add_argument("--variants", nargs="*", default=[],
                    help="more sunbeam sides with other TCP settings, e.g. flows=1 'congestion=newreno,flows=1'")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)
    for variant in args.variants:
        variant_env(variant)  # a typo fails here, not after the network is up
    info = network.up(2, name=f"sblinks-{os.getpid()}", hosts=True,
                      log=lambda m: print(f"[refnet] {m}", file=sys.stderr))
    results: dict = {"machine": version_line(), "size_mb": args.size_mb, "repeats": args.repeats, "cases": {},
                     "details": {}}
    try:
        payload = write_payload(info, args.size_mb)
        if args.ceiling_mb:
            results["ceiling"] = ceiling(info, args.ceiling_mb)
            print(f"[bench] emulator ceiling: {results['ceiling']}", file=sys.stderr)
        for i, profile in enumerate(args.profiles):
            summarise(results, profile, run_profile(info, profile, args, payload, args.seed + i))
    finally:
        network.down(info["name"])
    print(table(results))
    flat = {**results["cases"], "machine": results["machine"], "size_mb": args.size_mb, "repeats": args.repeats,
            "ceiling": results.get("ceiling"), "details": results["details"]}
    if args.json:
        save_results(flat, args.json)
    return 0


def table(results: dict) -> str:
    lines = [f"machine: {results['machine']}; {results['size_mb']} MB per run, {results['repeats']} runs per side "
             "(alternating), medians; the machine is shared, figures are noisy"]
    c = results.get("ceiling")
    if c:
        lines.append(f"emulator ceiling (kernel TCP A->B, 0 ms link): {c['mbps']} MB/s at {c['emulator_cpu_pct']} % "
                     "of a core")
    lines.append(f"{'case':40} {'sunbeam':>9} {'tailscaled':>11} {'ratio':>7}  (MB/s; ratio = sunbeam/tailscaled)")
    for case, row in results["cases"].items():
        lines.append(f"{case:40} {row.get('sunbeam', float('nan')):>9} {row.get('tailscaled', float('nan')):>11} "
                     f"{row.get('ratio', float('nan')):>7}")
        for name in [n for n in row if n.startswith("sunbeam[")]:
            lines.append(f"{'  ' + name:40} {row[name]:>9} {'':>11} {row.get(f'ratio {name}', float('nan')):>7}")
        norm = row.get("loss_normalized")
        if norm:
            lines.append(f"{'  at the mean loss rate (Reno: 1/sqrt(p))':40} {norm.get('sunbeam', float('nan')):>9} "
                         f"{norm.get('tailscaled', float('nan')):>11} {norm.get('ratio', float('nan')):>7}")
    return "\n".join(lines)


def variant_env(variant: str) -> dict[str, str]:
    """``flows=1,congestion=newreno`` -> the proxy's environment for that sunbeam side."""
    env = {}
    for item in variant.split(","):
        key, sep, value = item.partition("=")
        if not sep or key not in VARIANT_ENV:
            raise SystemExit(f"--variants {variant!r}: expected key=value with keys {', '.join(VARIANT_ENV)}")
        env[VARIANT_ENV[key]] = value
    return env


if __name__ == "__main__":
    sys.exit(main())
