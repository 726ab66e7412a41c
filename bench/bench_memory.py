"""Idle memory of a real sunbeam, per process, and what each service's imports cost.

1. processes  a reference network (Headscale + ``--peers`` tailscaled peers), sunbeam joins
              it with ``sunbeam-ctl connect`` (supervisord + every service, ``--workers``
              WireGuard workers, a SOCKS5 listener), fetches one page through the SOCKS5
              proxy from each peer (paths set up, as bench_vs_tailscaled.py does), waits
              ``--settle`` s, then reads /proc/<pid>/smaps_rollup of every process: RSS, PSS
              (shared pages split among the processes mapping them: the fair total), USS
              (Private_Clean + Private_Dirty: what the process alone costs) and Anonymous.
2. imports    per service, the modules ``import sunbeam.services.<svc>.main`` loads beyond a
              bare interpreter, by top-level package, and for each package its cost alone,
              each in a fresh interpreter: anonymous memory and RSS before/after ``import <package>``
              (anonymous, not USS: a library's file pages count as shared as soon as any other
              process on the machine maps them, so USS moves with what else runs)
              and ``-X importtime``'s cumulative time. Packages overlap (ssl comes with
              several), so the column does not add up; the service's row is exact.

    python bench/bench_memory.py [--workers 2] [--peers 2] [--top 12] [--json PATH] [--imports-only]

Needs root (network namespaces) and the reference binaries (`sunbeam-refnet install`),
except with --imports-only. Timing figures are noisy on a shared machine; memory figures are
not, with one trap: a service whose modules have no up-to-date ``__pycache__`` compiles them
from source at every start (PYTHONDONTWRITEBYTECODE is set here, so nothing writes them)
and keeps ~0.2-0.5 MB more heap. An installed package has its bytecode; so the bench first
compiles sunbeam's (``compileall``; ``--no-compile`` skips it) and says how many were stale.

A package's cost "alone" includes what it imports that the service loads anyway (``re``,
``typing``, ``enum``...): its real cost inside a service is often a third of that. To see
that, import everything else first (the service's row is exact).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from array import array
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

KB = 1024
MB = 1 << 20
PAGE = 4096
PFN_MASK = (1 << 55) - 1  # /proc/<pid>/pagemap: bits 0-54 the page frame, bit 63 present
SERVICES = ("control", "derp", "udp", "wg", "proxy")
ROLLUP_KEYS = ("Rss", "Pss", "Private_Clean", "Private_Dirty", "Anonymous", "Shared_Clean", "Shared_Dirty")

# Run in a fresh interpreter: smaps_rollup (kB) and sys.modules before and after importing argv[1].
_PROBE = r"""
import sys
def rollup():
    out = {}
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            p = line.split()
            if p[0].endswith(":") and len(p) >= 2 and p[1].isdigit():
                out[p[0][:-1]] = int(p[1])
    return out
before, mods = rollup(), set(sys.modules)
__import__(sys.argv[1])
after = rollup()
import json
print(json.dumps({"before": before, "after": after, "new": sorted(set(sys.modules) - mods)}))
"""


def rollup(pid: int) -> dict[str, int]:
    """smaps_rollup of ``pid`` in bytes (empty if it is gone)."""
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
            out[parts[0][:-1]] = int(parts[1]) * KB
    return out


def figures(r: dict[str, int]) -> dict[str, float]:
    return {"rss_mb": round(r.get("Rss", 0) / MB, 2), "pss_mb": round(r.get("Pss", 0) / MB, 2),
            "uss_mb": round((r.get("Private_Clean", 0) + r.get("Private_Dirty", 0)) / MB, 2),
            "anon_mb": round(r.get("Anonymous", 0) / MB, 2)}


def probe(module: str, python: str = sys.executable) -> dict:
    res = subprocess.run([python, "-c", _PROBE, module], check=False, capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        raise RuntimeError(f"import {module} failed: {res.stderr[-2000:]}")
    return json.loads(res.stdout.splitlines()[-1])


def delta(p: dict, key: str) -> int:
    return p["after"].get(key, 0) - p["before"].get(key, 0)


def anon_delta(p: dict) -> int:
    return delta(p, "Anonymous")


def importtime(module: str, python: str = sys.executable) -> dict[str, float]:
    """Cumulative import time (s) of each top-level package under ``import module``."""
    res = subprocess.run([python, "-X", "importtime", "-c", f"import {module}"], check=False, capture_output=True, text=True,
                         timeout=120)
    out: dict[str, float] = {}
    for line in res.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        try:
            _, cumulative, name = (x.strip() for x in line[len("import time:"):].split("|"))
            us = int(cumulative)
        except ValueError:
            continue
        top = name.strip().split(".")[0]
        out[top] = max(out.get(top, 0.0), us / 1e6)
    return out


def service_imports(top: int) -> dict:
    """Per service: its import's exact cost, and the ``top`` costliest packages it loads."""
    cache: dict[str, int] = {}
    result: dict = {}
    for svc in SERVICES:
        module = f"sunbeam.services.{svc}.main"
        p = probe(module)
        times = importtime(module)
        tops = sorted({m.split(".")[0] for m in p["new"]} - {"sunbeam"})
        for pkg in tops:
            if pkg not in cache:
                try:
                    cache[pkg] = anon_delta(probe(pkg))
                except (RuntimeError, subprocess.TimeoutExpired):
                    cache[pkg] = -1
        ranked = sorted(tops, key=lambda m: -cache[m])
        result[svc] = {
            "anon_mb": round(anon_delta(p) * KB / MB, 2), "rss_mb": round(delta(p, "Rss") * KB / MB, 2),
            "modules": len(p["new"]), "packages": tops,
            "import_s": round(times.get("sunbeam", 0.0), 3),
            "top": [{"package": m, "anon_mb": round(cache[m] * KB / MB, 2), "import_s": round(times.get(m, 0.0), 3)}
                    for m in ranked[:top]],
        }
    base = probe("sys")  # a bare interpreter, for scale
    result["bare_interpreter"] = {"rss_mb": round(base["after"]["Rss"] * KB / MB, 2),
                                  "anon_mb": round(base["after"]["Anonymous"] * KB / MB, 2)}
    sup = probe("supervisor.supervisord")
    result["supervisord_import"] = {"anon_mb": round(anon_delta(sup) * KB / MB, 2),
                                    "rss_mb": round(delta(sup, "Rss") * KB / MB, 2), "modules": len(sup["new"])}
    return result


def _curl(info: dict, socks: str, url: str) -> bool:
    res = subprocess.run(info["exec_prefix"] + ["curl", "-sS", "--fail", "--max-time", "20", "--socks5-hostname",
                                                socks, "-o", "/dev/null", url], check=False, capture_output=True, timeout=60)
    return res.returncode == 0


def compile_bytecode() -> int:
    """Write sunbeam's missing or stale ``__pycache__`` files (as an install does); how
    many modules it compiled."""
    import compileall
    import importlib.util

    import sunbeam.services
    import sunbeam.shared

    roots = [Path(p) for pkg in (sunbeam.shared, sunbeam.services) for p in pkg.__path__]
    stale = 0
    for root in roots:
        for src in root.rglob("*.py"):
            pyc = Path(importlib.util.cache_from_source(str(src)))
            if not pyc.exists() or pyc.stat().st_mtime < src.stat().st_mtime:
                stale += 1
        compileall.compile_dir(str(root), quiet=1)
    return stale


def processes(args: argparse.Namespace) -> dict:
    from sides import Sunbeam
    from sunbeam.refnet import network

    info = network.up(args.peers, name=f"sbmem-{os.getpid()}", log=lambda m: print(f"[refnet] {m}", file=sys.stderr))
    sb = Sunbeam(info, workers=args.workers, hostname="sunbeam-mem")
    try:
        took = sb.start()
        for peer in info["peers"]:
            url = f"http://{peer['name']}:{peer['service_port']}/whoami"
            deadline = time.monotonic() + 60
            while not _curl(info, sb.socks, url) and time.monotonic() < deadline:
                time.sleep(1)
        time.sleep(args.settle)
        status = json.loads(sb.ctl("status", "--json").stdout or "{}")
        procs = [(s["service"], int(s["pid"])) for s in status.get("services", [])]
        try:
            procs.append(("supervisord", int((sb.rundir / "supervisord.pid").read_text())))
        except (OSError, ValueError):
            pass
        rows = {name: figures(rollup(pid)) | {"pid": pid} for name, pid in procs}
        own = own_pss(dict(procs))
        for name, mb in own.items():
            rows[name]["own_pss_mb"] = mb
        total = {k: round(sum(r.get(k, 0.0) for r in rows.values()), 1)
                 for k in ("rss_mb", "pss_mb", "own_pss_mb", "uss_mb", "anon_mb")}
        return {"connect_s": round(took, 2), "workers": args.workers, "processes": rows, "total": total}
    finally:
        sb.stop()
        network.down(info["name"])


def _resident_pfns(pid: int) -> set[int]:
    """The physical page frames ``pid`` maps (needs root: without it the kernel shows 0)."""
    pfns: set[int] = set()
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        for line in maps:
            start, end = (int(x, 16) for x in line.split()[0].split("-"))
            try:
                pagemap.seek(start // PAGE * 8)
                entries = array("Q", pagemap.read((end - start) // PAGE * 8))
            except (OSError, ValueError):  # [vsyscall]
                continue
            pfns.update(e & PFN_MASK for e in entries if e >> 63 and e & PFN_MASK)
    return pfns


def own_pss(procs: dict[str, int]) -> dict[str, float]:
    """PSS counted among ``procs`` alone: each resident page split among those of them that
    map it, as if nothing else ran. Plain PSS also splits the pages of libpython, libzmq,
    OpenSSL... with every other process mapping them (another sunbeam, a test run, the
    bench's own peers' Python services), so it moves with what else runs on the machine;
    this does not. The total is the set's real footprint (its distinct pages). Empty
    without root."""
    pages: dict[str, set[int]] = {}
    for name, pid in procs.items():
        try:
            pages[name] = _resident_pfns(pid)
        except OSError:
            return {}
    counts: dict[int, int] = {}
    for pfns in pages.values():
        for pfn in pfns:
            counts[pfn] = counts.get(pfn, 0) + 1
    if not counts:
        return {}
    return {name: round(sum(PAGE / counts[p] for p in pfns) / MB, 2) for name, pfns in pages.items()}


def table(results: dict) -> str:
    lines = []
    run = results.get("run")
    if run:
        lines.append(f"idle, {run['workers']} workers (MB)      RSS      PSS  own PSS      USS     anon")
        for name, r in sorted(run["processes"].items()):
            lines.append(f"  {name:22} {r['rss_mb']:8.1f} {r['pss_mb']:8.1f} {r.get('own_pss_mb', 0.0):8.1f} "
                         f"{r['uss_mb']:8.1f} {r['anon_mb']:8.1f}")
        t = run["total"]
        lines.append(f"  {'total':22} {t['rss_mb']:8.1f} {t['pss_mb']:8.1f} {t['own_pss_mb']:8.1f} {t['uss_mb']:8.1f} "
                     f"{t['anon_mb']:8.1f}")
    imp = results.get("imports")
    if imp:
        b = imp["bare_interpreter"]
        lines.append(f"bare interpreter: RSS {b['rss_mb']} MB, anon {b['anon_mb']} MB; supervisor.supervisord import: "
                     f"anon +{imp['supervisord_import']['anon_mb']} MB")
        for svc in SERVICES:
            s = imp[svc]
            lines.append(f"{svc}: import main = anon +{s['anon_mb']} MB, RSS +{s['rss_mb']} MB, {s['modules']} modules, "
                         f"{s['import_s']} s; costliest packages alone (anon MB / import s):")
            lines.append("    " + ", ".join(f"{t['package']} {t['anon_mb']}/{t['import_s']}" for t in s["top"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--peers", type=int, default=2)
    ap.add_argument("--settle", type=float, default=5.0, help="seconds idle before measuring")
    ap.add_argument("--top", type=int, default=12, help="packages listed per service")
    ap.add_argument("--imports-only", action="store_true", help="skip the real run (no root needed)")
    ap.add_argument("--no-compile", action="store_true", help="do not write sunbeam's missing or stale bytecode first")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    if not args.no_compile:
        print(f"bytecode: {compile_bytecode()} of sunbeam's modules were missing or stale, now compiled", file=sys.stderr)
    results: dict = {"imports": service_imports(args.top)}
    if not args.imports_only:
        results["run"] = processes(args)
    print(table(results))
    if args.json:
        from sides import save_results

        save_results(results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
