"""A small, fast, deterministic mutation fuzzer for sunbeam's decoders (pure Python).

A *target* is a function ``bytes -> Outcome`` that feeds one input to a decoder and catches
only the decoder's documented rejection (``DiscoError``, ``StunError``, ``BadMessage``,
``ConfigError``, a ``ProtocolError`` event, ``Decapsulated.error``, ...). It returns None
when the input was accepted, or the rejection's reason (checked with `check_reason` or
`check_token`, so "counted with a reason" is part of the contract). Anything that escapes
a target is a crash: an uncaught exception in product code, or an ``AssertionError`` from
a contract check inside the target.

`fuzz(target, seeds, iterations=..., rng_seed=...)` runs the seeds (real messages made by
our own encoders, golden vectors), then inputs drawn from them by `mutator.Mutator`
(AFL-style havoc, interesting integers at the seeds' length fields, splices, dictionary
tokens). The same ``rng_seed`` gives the same inputs; 10,000 take about a second for a
cheap decoder. With ``track_memory`` (``tracemalloc`` must be running) it measures, per
input, how far the traced heap rose above where it started: ``FuzzResult.peak_bytes`` is
the worst input's rise, the figure the CI test bounds. Crashes are grouped by signature
(exception type and innermost frame), each kept with its shortest input and whether it
reproduces from a fresh target; a `Known` signature (a reported, unfixed bug) is counted
instead.

A `Target` bundles a factory (each call makes a fresh decoder state and returns the
function), its seeds, a maximum input length and dictionary tokens; `run_target` fuzzes
one. `minimize` shrinks a crashing input while it keeps crashing the same way.
"""

from __future__ import annotations

import random
import re
import time
import traceback
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from .mutator import Field, Mutator, Seed

__all__ = [
    "Crash",
    "Field",
    "FuzzResult",
    "Known",
    "Mutator",
    "Outcome",
    "Seed",
    "Target",
    "check_reason",
    "check_token",
    "fuzz",
    "minimize",
    "run_target",
]

Outcome = str | None
"""None: the decoder accepted the input; a str: it rejected it, for that reason."""


@dataclass(frozen=True)
class Known:
    """A crash already reported and not fixed yet: counted as ``known: <note>`` instead of
    failing the run. Matched on exception type, file and function (not the line)."""

    exc: str
    file: str
    func: str
    note: str

    def matches(self, signature: str) -> bool:
        return signature.startswith(f"{self.exc} at {self.file}:") and signature.endswith(f"({self.func})")


@dataclass(frozen=True)
class Target:
    name: str
    make: Callable[[], Callable[[bytes], Outcome]]
    """Returns a fresh target function (fresh decoder state)."""
    seeds: Callable[[], Sequence[bytes | Seed]]
    """Built lazily: real, valid inputs (and golden vectors)."""
    covers: str
    """The decoder entry points the target drives, for reports."""
    max_len: int = 4096
    tokens: tuple[bytes, ...] = ()
    """Dictionary: byte strings worth inserting (keywords, magics, separators)."""
    reasons: frozenset[str] | None = None
    """The closed set of rejection reasons the decoder documents, if it has one."""
    known: tuple[Known, ...] = ()
    """Reported product bugs this target still hits (remove each once it is fixed)."""


_TOKEN = re.compile(r"[a-z0-9][a-z0-9_.\-]{0,47}")


def check_token(reason: object, allowed: Iterable[str] | None = None) -> str:
    """A counter-style reason: short lower-case snake_case (``bad_box``, ``drop.truncated``)."""
    assert isinstance(reason, str) and _TOKEN.fullmatch(reason), f"bad reason token {reason!r}"
    if allowed is not None:
        assert reason in allowed, f"reason {reason!r} not in the documented set"
    return reason


def check_reason(message: object, *, one_line: bool = False) -> str:
    """A message-style reason (``str(exc)`` of HandshakeError, BadMessage, ConfigError...):
    non-empty (and one line where the module promises it: ``one_line``). Returns a
    low-cardinality key for counting: the message with numbers, quoted text and hex runs
    blanked, control characters escaped, cut at 48 characters."""
    assert isinstance(message, str) and message.strip(), f"empty reason {message!r}"
    if one_line:
        assert "\n" not in message and "\r" not in message, f"multi-line reason {message[:200]!r}"
    key = re.sub(r"'[^']*'|\"[^\"]*\"|\b[0-9a-fx]*[0-9][0-9a-fx]*\b", "#", message)
    return key[:48].encode("unicode_escape").decode("ascii")


@dataclass
class Crash:
    signature: str
    """Exception type and the innermost frame (file:line): one bug, one signature."""
    data: bytes
    traceback: str
    count: int = 1
    reproduces: bool | None = None
    """Does the input alone crash a fresh target? (False: it needed earlier state.)"""


@dataclass
class FuzzResult:
    name: str = ""
    inputs: int = 0
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    crashes: dict[str, Crash] = field(default_factory=dict)
    known: Counter[str] = field(default_factory=Counter)
    """Hits of `Known` (reported, unfixed) crashes, by note."""
    seconds: float = 0.0
    peak_bytes: int = 0
    """Worst per-input rise of the traced heap (0 unless memory was tracked)."""
    peak_input_len: int = 0
    slowest: float = 0.0
    """Seconds taken by the slowest single input."""

    @property
    def crash_count(self) -> int:
        return sum(c.count for c in self.crashes.values())

    def summary(self) -> str:
        top = ", ".join(f"{r} {n}" for r, n in self.rejected.most_common(4))
        return (f"{self.name}: {self.inputs} inputs in {self.seconds:.2f}s, {self.accepted} accepted, "
                f"{sum(self.rejected.values())} rejected ({top}), "
                f"{self.crash_count} crashes{f' (+{sum(self.known.values())} known)' if self.known else ''}, "
                f"peak +{self.peak_bytes / 1024:.0f} KiB, "
                f"slowest {self.slowest * 1000:.1f} ms")


# --- running -------------------------------------------------------------------------

def _signature(exc: BaseException) -> str:
    """Exception type and the innermost frame: one bug, one signature."""
    tb = traceback.extract_tb(exc.__traceback__)
    if not tb:
        return type(exc).__name__
    return f"{type(exc).__name__} at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno} ({tb[-1].name})"


def fuzz(target: Callable[[bytes], Outcome], seeds: Sequence[bytes | Seed], *, iterations: int, rng_seed: int,
         max_len: int = 4096, tokens: Sequence[bytes] = (), name: str = "", track_memory: bool = False,
         remake: Callable[[], Callable[[bytes], Outcome]] | None = None, max_crashes: int = 20,
         inputs: Iterable[bytes] | None = None, known: Sequence[Known] = ()) -> FuzzResult:
    """Run ``iterations`` inputs (the seeds themselves first, then mutations) through
    ``target``. ``remake`` gives a fresh target after a crash (its state may be broken) and
    checks whether a crash reproduces from a fresh state. ``inputs`` replaces the
    mutator (replaying a corpus)."""
    if track_memory and not tracemalloc.is_tracing():
        raise RuntimeError("track_memory needs tracemalloc.start() first")
    rng = random.Random(rng_seed)
    mutator = Mutator(seeds, rng, max_len=max_len, tokens=tokens)
    result = FuzzResult(name=name)
    stream = iter(inputs) if inputs is not None else None
    first = [s if isinstance(s, bytes) else s.data for s in seeds][:iterations] if stream is None else []
    perf = time.perf_counter
    get_mem, reset_peak = tracemalloc.get_traced_memory, tracemalloc.reset_peak
    start = perf()
    for n in range(iterations):
        if stream is not None:
            data = next(stream, None)
            if data is None:
                break
        else:
            data = first[n][:max_len] if n < len(first) else mutator.next()
        if track_memory:
            reset_peak()
            base = get_mem()[0]
        t0 = perf()
        caught: Exception | None = None
        try:
            outcome = target(data)
        except Exception as exc:  # noqa: BLE001 - every escape is a finding
            caught = exc
        else:
            if outcome is None:
                result.accepted += 1
            else:
                result.rejected[outcome if len(result.rejected) < 200 or outcome in result.rejected
                                else "(other)"] += 1
        spent = perf() - t0
        if spent > result.slowest:
            result.slowest = spent
        if track_memory:
            rise = get_mem()[1] - base
            if rise > result.peak_bytes:
                result.peak_bytes, result.peak_input_len = rise, len(data)
        result.inputs += 1
        if caught is not None:
            sig = _signature(caught)
            hit = next((k for k in known if k.matches(sig)), None)
            if hit is not None:
                result.known[hit.note] += 1
            else:
                _record_crash(result, caught, data, remake, max_crashes)
            del caught
            if remake is not None:  # its state may be inconsistent now
                target = remake()
    result.seconds = perf() - start
    return result


def _record_crash(result: FuzzResult, exc: BaseException, data: bytes,
                  remake: Callable[[], Callable[[bytes], Outcome]] | None, max_crashes: int) -> None:
    sig = _signature(exc)
    seen = result.crashes.get(sig)
    if seen is not None:
        seen.count += 1
        if len(data) < len(seen.data):
            seen.data = data
        return
    if len(result.crashes) >= max_crashes:
        sig = "(more crash signatures)"
        result.crashes.setdefault(sig, Crash(sig, data, "")).count += 1
        return
    crash = Crash(sig, data, "".join(traceback.format_exception(exc)))
    if remake is not None:
        crash.reproduces = crashes_the_same(remake, data, sig)
    result.crashes[sig] = crash


def crashes_the_same(make: Callable[[], Callable[[bytes], Outcome]], data: bytes, sig: str) -> bool:
    try:
        make()(data)
    except Exception as exc:  # noqa: BLE001
        return _signature(exc) == sig
    return False


def minimize(make: Callable[[], Callable[[bytes], Outcome]], data: bytes, sig: str, *, budget: int = 20_000) -> bytes:
    """Delta-debug ``data`` to a shorter input that still crashes a fresh target with ``sig``."""
    tries = 0
    chunk = max(len(data) // 2, 1)
    while chunk >= 1 and tries < budget:
        i, shrunk = 0, False
        while i < len(data) and tries < budget:
            candidate = data[:i] + data[i + chunk:]
            tries += 1
            if crashes_the_same(make, candidate, sig):
                data, shrunk = candidate, True
            else:
                i += chunk
        if not shrunk:
            chunk //= 2
    for i in range(len(data)):  # then simplify bytes towards zero
        if tries >= budget:
            break
        if data[i]:
            candidate = data[:i] + b"\x00" + data[i + 1:]
            tries += 1
            if crashes_the_same(make, candidate, sig):
                data = candidate
    return data


def run_target(t: Target, *, iterations: int, rng_seed: int = 0, track_memory: bool = False,
               seeds: Sequence[bytes | Seed] | None = None) -> FuzzResult:
    return fuzz(t.make(), t.seeds() if seeds is None else seeds, iterations=iterations, rng_seed=rng_seed,
                max_len=t.max_len, tokens=t.tokens, name=t.name, track_memory=track_memory, remake=t.make,
                known=t.known)
