"""What one ChaCha20-Poly1305 call costs from Python, on the CPU timer (not wall clock).

    python bench/bench_aead.py [--calls 100000] [--repeats 7]

For `cryptography` (the AEAD the WireGuard workers use) and PyNaCl (libsodium), encrypt of
an empty message (the fixed cost of a call) and of 1280 bytes (a full-MTU tailnet packet),
and decrypt of the latter; each the median over ``--repeats`` runs of ``--calls`` calls,
measured with ``time.thread_time_ns`` so that other processes on the machine do not count.
The empty Python loop's cost is subtracted. Prints a table and the versions.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import cryptography
import nacl
import nacl.bindings as sodium
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305


def per_call_us(fn: Callable[[], object], calls: int, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        start = time.thread_time_ns()
        for _ in range(calls):
            fn()
        runs.append((time.thread_time_ns() - start) / calls / 1000)
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=100_000, help="calls per run")
    ap.add_argument("--repeats", type=int, default=7, help="runs per figure (the median is shown)")
    args = ap.parse_args()
    key, nonce = os.urandom(32), bytes(12)
    aead = ChaCha20Poly1305(key)
    packet = os.urandom(1280)
    sealed = aead.encrypt(nonce, packet, None)
    sealed_nacl = sodium.crypto_aead_chacha20poly1305_ietf_encrypt(packet, None, nonce, key)
    cases: dict[str, Callable[[], object]] = {
        "cryptography encrypt, empty": lambda: aead.encrypt(nonce, b"", None),
        "cryptography encrypt, 1280 B": lambda: aead.encrypt(nonce, packet, None),
        "cryptography decrypt, 1280 B": lambda: aead.decrypt(nonce, sealed, None),
        "PyNaCl encrypt, empty": lambda: sodium.crypto_aead_chacha20poly1305_ietf_encrypt(b"", None, nonce, key),
        "PyNaCl encrypt, 1280 B": lambda: sodium.crypto_aead_chacha20poly1305_ietf_encrypt(packet, None, nonce, key),
        "PyNaCl decrypt, 1280 B": lambda: sodium.crypto_aead_chacha20poly1305_ietf_decrypt(sealed_nacl, None, nonce,
                                                                                            key),
    }
    loop = per_call_us(lambda: None, args.calls, args.repeats)
    print(f"Python {platform.python_version()}, cryptography {cryptography.__version__}, PyNaCl {nacl.__version__};"
          f" {args.repeats} x {args.calls} calls, CPU timer, median; empty loop {loop:.3f} us subtracted")
    for name, fn in cases.items():
        print(f"  {name:32s} {per_call_us(fn, args.calls, args.repeats) - loop:6.3f} us")


if __name__ == "__main__":
    main()
