"""The long fuzz run: ``python -m tests.fuzz.long --target NAME --runs 1000000``.

Engines: ``atheris`` (coverage-guided libFuzzer over instrumented sunbeam, h11, h2, hpack
and tomllib bytecode; ``pip install atheris``, never a test dependency) or ``pure`` (the
`harness` mutation fuzzer). ``--engine auto`` (the default) takes atheris when it imports.

One target runs in this process. ``--all`` (or several ``--target``) runs each target in
its own child process, at most ``--jobs`` at a time (logs and results in
``/tmp/sunbeam-fuzz/<engine>/``), and prints a table; ``--json FILE`` collects every
target's result. Every child caps its address space (``--as-limit-mb``,
default 4096) so a length field that makes us allocate gigabytes fails as a MemoryError
crash instead of swapping, and reports its peak RSS.

Results per target (JSON): inputs, seconds, accepted, rejections by reason, crashes with
signature, traceback and a minimised input (hex), known (reported) crashes, peak RSS.
atheris also leaves its corpus in ``/tmp/sunbeam-fuzz/atheris/<target>/corpus`` and any
crash input as ``/tmp/sunbeam-fuzz/atheris/<target>/crash-*``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from .harness import _signature, fuzz, minimize

WORK = Path("/tmp/sunbeam-fuzz")
INSTRUMENT = ["sunbeam", "h11", "h2", "hpack", "tomllib"]


def _limit_memory(mb: int) -> None:
    if mb > 0:
        resource.setrlimit(resource.RLIMIT_AS, (mb << 20, mb << 20))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _result_json(name: str, engine: str, inputs: int, seconds: float, accepted: int, rejected: Counter,
                 crashes: list[dict], known: Counter) -> dict:
    return {"target": name, "engine": engine, "inputs": inputs, "seconds": round(seconds, 1),
            "accepted": accepted, "rejected": sum(rejected.values()), "reasons": dict(rejected.most_common(12)),
            "distinct_reasons": len(rejected), "crashes": crashes, "known": dict(known),
            "peak_rss_mb": round(_peak_rss_mb(), 1)}


def run_pure(name: str, runs: int, seed: int) -> dict:
    from .targets import TARGETS

    t = TARGETS[name]
    result = fuzz(t.make(), t.seeds(), iterations=runs, rng_seed=seed, max_len=t.max_len, tokens=t.tokens,
                  name=name, remake=t.make, known=t.known)
    crashes = []
    for c in result.crashes.values():
        small = minimize(t.make, c.data, c.signature, budget=5000) if c.reproduces else c.data
        crashes.append({"signature": c.signature, "count": c.count, "reproduces": c.reproduces,
                        "input_hex": small.hex(), "traceback": c.traceback})
    return _result_json(name, "pure", result.inputs, result.seconds, result.accepted, result.rejected, crashes,
                        result.known)


def run_atheris(name: str, runs: int, seed: int, out: Path | None, rss_limit_mb: int) -> None:
    """Never returns: libFuzzer exits the process when done (or on a crash)."""
    import atheris

    with atheris.instrument_imports(include=INSTRUMENT):
        from .targets import TARGETS

    t = TARGETS[name]
    state = {"run": t.make(), "n": 0, "accepted": 0, "start": time.perf_counter()}
    rejected: Counter[str] = Counter()
    known: Counter[str] = Counter()

    def dump(crash: dict | None = None) -> None:
        report = _result_json(name, "atheris", state["n"], time.perf_counter() - state["start"], state["accepted"],
                              rejected, [crash] if crash else [], known)
        text = json.dumps(report, indent=1)
        if out is not None:
            out.write_text(text)
        else:
            print(text, file=sys.stderr)

    def one(data: bytes) -> None:
        state["n"] += 1
        try:
            outcome = state["run"](data)
        except Exception as exc:
            sig = _signature(exc)
            hit = next((k for k in t.known if k.matches(sig)), None)
            state["run"] = t.make()
            if hit is None:
                import traceback

                dump({"signature": sig, "count": 1, "reproduces": None, "input_hex": data.hex(),
                      "traceback": "".join(traceback.format_exception(exc))})
                raise
            known[hit.note] += 1
        else:
            if outcome is None:
                state["accepted"] += 1
            else:
                rejected[outcome if len(rejected) < 200 or outcome in rejected else "(other)"] += 1
        if state["n"] % 50_000 == 0 or state["n"] >= runs:
            dump()

    work = WORK / "atheris" / name
    corpus = work / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(t.seeds()):
        (corpus / f"seed-{i:03d}").write_bytes((s if isinstance(s, bytes) else s.data)[: t.max_len])
    args = [sys.argv[0], str(corpus), f"-runs={runs}", f"-max_len={t.max_len}", f"-seed={seed or 1}",
            f"-rss_limit_mb={rss_limit_mb}", "-print_final_stats=1", f"-artifact_prefix={work}/", "-timeout=10"]
    if t.tokens:
        dictionary = work / "dict"
        dictionary.write_text("".join('"' + "".join(f"\\x{b:02x}" for b in tok) + '"\n' for tok in t.tokens))
        args.append(f"-dict={dictionary}")
    atheris.Setup(args, one)
    atheris.Fuzz()


def _children(names: list[str], args: argparse.Namespace) -> list[dict]:
    """Each target in its own process, ``args.jobs`` at a time."""
    work = WORK / args.engine
    work.mkdir(parents=True, exist_ok=True)
    pending, running, results = list(names), [], []
    while pending or running:
        while pending and len(running) < args.jobs:
            name = pending.pop(0)
            out = work / f"{name}.json"
            out.unlink(missing_ok=True)
            cmd = [sys.executable, "-m", "tests.fuzz.long", "--target", name, "--runs", str(args.runs),
                   "--engine", args.engine, "--seed", str(args.seed), "--json", str(out),
                   "--as-limit-mb", str(args.as_limit_mb)]
            log = open(work / f"{name}.log", "w")  # noqa: SIM115 - closed when the child ends
            running.append((name, out, time.time(), subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT),
                            log))
        time.sleep(0.5)
        for item in list(running):
            name, out, started, proc, log = item
            if proc.poll() is None:
                continue
            running.remove(item)
            log.close()
            report = json.loads(out.read_text()) if out.exists() else {"target": name, "inputs": 0, "crashes": []}
            report["exit"] = proc.returncode
            report["wall"] = round(time.time() - started, 1)
            results.append(report)
            print(f"{name:22s} {report.get('engine', '?'):8s} {report['inputs']:>9} inputs "
                  f"{report.get('seconds', 0):>7}s  crashes {len(report['crashes'])}  known "
                  f"{sum(report.get('known', {}).values())}  rss {report.get('peak_rss_mb', '?')} MiB  "
                  f"exit {proc.returncode}", flush=True)
    return results


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tests.fuzz.long", description=__doc__.splitlines()[0])
    p.add_argument("--target", action="append", default=[], help="target name (repeatable)")
    p.add_argument("--all", action="store_true", help="every target, one child process each")
    p.add_argument("--list", action="store_true", help="list the targets and what they cover")
    p.add_argument("--runs", type=int, default=1_000_000)
    p.add_argument("--engine", choices=["auto", "atheris", "pure"], default="auto")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--jobs", type=int, default=2, help="child processes at once (--all)")
    p.add_argument("--json", type=Path, help="write the result(s) here")
    p.add_argument("--as-limit-mb", type=int, default=4096, help="address-space cap per process (0: none)")
    args, _ = p.parse_known_args(argv)
    if args.engine == "auto":
        try:
            import atheris  # noqa: F401
            args.engine = "atheris"
        except ImportError:
            args.engine = "pure"
    if args.list:
        from .targets import TARGETS

        for t in TARGETS.values():
            print(f"{t.name:22s} {t.covers}")
        return
    if args.all or len(args.target) > 1:
        from .targets import TARGETS

        results = _children(list(TARGETS) if args.all else args.target, args)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
        sys.exit(1 if any(r["crashes"] for r in results) else 0)
    if len(args.target) != 1:
        p.error("name a --target (or --all)")
    _limit_memory(args.as_limit_mb)
    if args.engine == "atheris":
        run_atheris(args.target[0], args.runs, args.seed, args.json, rss_limit_mb=max(args.as_limit_mb // 2, 512))
    report = run_pure(args.target[0], args.runs, args.seed)
    text = json.dumps(report, indent=1)
    if args.json:
        args.json.write_text(text)
    print(text)
    sys.exit(1 if report["crashes"] else 0)


if __name__ == "__main__":
    main()
