"""Short-connection load: N HTTP requests, each on a new connection, through a proxy.

Used by the soak test (tests/realnet/test_soak.py) and bench/bench_conns.py. Every request
is one ``GET <path>`` with ``Connection: close`` to a reference peer's test service, on a
connection of its own, through one of these (`Via.kind`)::

    direct        plain TCP to host:port (only for a service on a local address, e.g. in a
                  namespace; never for a tailnet or remote address)
    forward       plain TCP to a forward listener (``Via.addr``), which is bound to the target
    socks5        SOCKS5 CONNECT (RFC 1928, no authentication; names go as ATYP 3, literals
                  as ATYP 1/4), then the request
    http          an HTTP proxy, absolute-form: ``GET http://host:port/path``
    http-connect  an HTTP proxy, ``CONNECT host:port``, then the request in the tunnel

One request (`fetch`) is a success when the proxy accepted it, the response is ``200`` with
a ``Content-Length`` body of that length (for ``/blob/<size>?seed=S``: the blob, whose
sha256 is checked against blobs.py and the ``X-Blob-Sha256`` header), and the server then
closed the connection (EOF reached us through the proxy). Everything must happen within
``timeout`` seconds, so a hang is a failure (``timeout:<phase>``), never a stalled run.

Who closes first decides which end keeps the connection in TIME_WAIT. By default the
server does (``Connection: close``), so the TIME_WAIT is held by the peer that serves, and
the connecting side, which does not see it, may pick the same 4-tuple again for a later
connection: the case that needs a TCP whose port choice avoids recently closed tuples.
``client_closes=True`` asks for keep-alive and closes as soon as the body arrived, so the
TIME_WAIT stays on the connecting side, which knows to avoid it.

Failure kinds (`Outcome.kind`), ``<phase>`` one of ``connect`` (TCP to the proxy or
service), ``handshake`` (waiting for the proxy's answer), ``response`` (head and body),
``eof`` (waiting for the close after a complete response)::

    timeout:<phase>      nothing (more) arrived before the deadline
    refused:<phase>      ECONNREFUSED (nothing listens on the proxy's or service's port)
    reset:<phase>        ECONNRESET / EPIPE
    closed:<phase>       EOF before the phase was complete (e.g. a forward listener that
                         closes because its tailnet connection failed)
    error:<phase>        another OSError (errno name in ``detail``)
    socks5_reply_<n>     the SOCKS5 proxy refused the CONNECT with reply code n
    socks5_method        the SOCKS5 proxy accepted no method we offered
    http_<status>        an HTTP status other than 200 (from the proxy or the service)
    bad_response         a head that does not parse, trailing bytes after the body
    bad_body             a body of the wrong length or sha256

Latencies (seconds from before the socket is made): ``connect_s`` until the tunnel is up
as far as the client can see (SOCKS5 success reply, CONNECT 200; for ``direct``,
``forward`` and ``http`` only the TCP connect to the listener, since their tailnet
connection is not visible to the client), ``total_s`` until the whole body arrived.

`run` makes ``count`` requests with ``concurrency`` worker threads (1: sequential) and
returns a `Summary` (``client_closes`` as for `fetch`); ``netns`` puts the worker threads in a network namespace (the
reference network's), ``stop_after`` ends a run early after that many failures.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import ipaddress
import math
import os
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from .blobs import blob_sha256
from .testservice import parse_size

KINDS = ("direct", "forward", "socks5", "http", "http-connect")
DEFAULT_PATH = "/blob/1K?seed=loadgen"
MAX_HEAD = 16 * 1024


@dataclass(frozen=True, slots=True)
class Via:
    """How requests reach the service: `KINDS`; ``addr`` the proxy/listener (None: direct)."""

    kind: str
    addr: tuple[str, int] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {self.kind!r}")
        if (self.addr is None) != (self.kind == "direct"):
            raise ValueError(f"{self.kind}: addr {'is required' if self.addr is None else 'makes no sense'}")

    def __str__(self) -> str:
        return self.kind if self.addr is None else f"{self.kind}@{self.addr[0]}:{self.addr[1]}"


@dataclass(slots=True)
class Outcome:
    """One request: ``kind`` is ``"ok"`` or a failure kind (module docstring)."""

    kind: str
    connect_s: float | None = None
    total_s: float | None = None
    detail: str = ""
    elapsed_s: float = 0.0
    """Until the outcome was known: the close after the body, or the failure."""

    @property
    def ok(self) -> bool:
        return self.kind == "ok"


class _Fail(Exception):
    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(kind, detail)
        self.kind, self.detail = kind, detail


def expected_blob(path: str) -> tuple[int, str] | None:
    """(size, sha256) when ``path`` is ``/blob/<size>[?seed=S]``, else None."""
    url = urlsplit(path)
    parts = [p for p in url.path.split("/") if p]
    if len(parts) != 2 or parts[0] != "blob":
        return None
    size = parse_size(parts[1])
    seed = parse_qs(url.query).get("seed", ["0"])[0]
    return size, blob_sha256(size, seed)


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def socks5_request(host: str, port: int) -> bytes:
    """A SOCKS5 CONNECT request for ``host``:``port`` (IP literal -> ATYP 1/4, name -> 3)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        name = host.encode("idna")
        if not 0 < len(name) < 256:
            raise ValueError(f"a SOCKS5 name is 1..255 bytes: {host!r}") from None
        addr = b"\x03" + bytes([len(name)]) + name
    else:
        addr = (b"\x01" if ip.version == 4 else b"\x04") + ip.packed
    return b"\x05\x01\x00" + addr + struct.pack("!H", port)


class _Conn:
    """A blocking socket whose every read and write must finish by one deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.buf = bytearray()
        self.phase = "connect"

    def _arm(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise _Fail(f"timeout:{self.phase}")
        self.sock.settimeout(left)

    def send(self, data: bytes) -> None:
        self._arm()
        self.sock.sendall(data)

    def fill(self) -> bool:
        """One recv into ``buf``; False at EOF."""
        self._arm()
        data = self.sock.recv(65536)
        self.buf += data
        return bool(data)

    def take(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self.fill():
                raise _Fail(f"closed:{self.phase}", f"after {len(self.buf)} of {n} bytes")
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def head(self) -> bytes:
        """An HTTP head up to and including the blank line."""
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            if len(self.buf) > MAX_HEAD:
                raise _Fail("bad_response", "head over 16 KiB")
            if not self.fill():
                raise _Fail(f"closed:{self.phase}", f"head incomplete: {bytes(self.buf[:80])!r}")
        out = bytes(self.buf[: end + 4])
        del self.buf[: end + 4]
        return out


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise _Fail("bad_response", f"status line {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        if line:
            name, sep, value = line.partition(":")
            if not sep:
                raise _Fail("bad_response", f"header line {line[:80]!r}")
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


def _socks5(c: _Conn, host: str, port: int) -> None:
    c.send(b"\x05\x01\x00")
    if c.take(2) != b"\x05\x00":
        raise _Fail("socks5_method")
    c.send(socks5_request(host, port))
    ver, rep, _rsv, atyp = c.take(4)
    if ver != 5:
        raise _Fail("bad_response", f"SOCKS5 reply version {ver}")
    if rep != 0:
        raise _Fail(f"socks5_reply_{rep}")
    if atyp == 3:
        c.take(c.take(1)[0] + 2)
    else:
        c.take({1: 4, 4: 16}.get(atyp, 0) + 2)


def _http_connect(c: _Conn, host: str, port: int) -> None:
    auth = _authority(host, port)
    c.send(f"CONNECT {auth} HTTP/1.1\r\nHost: {auth}\r\n\r\n".encode())
    status, _ = _parse_head(c.head())
    if status != 200:
        raise _Fail(f"http_{status}")


def _os_fail(exc: OSError, phase: str) -> _Fail:
    if isinstance(exc, TimeoutError):  # socket.timeout
        return _Fail(f"timeout:{phase}")
    if exc.errno == errno.ECONNREFUSED:
        return _Fail(f"refused:{phase}")
    if exc.errno in (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED):
        return _Fail(f"reset:{phase}", errno.errorcode.get(exc.errno, ""))
    name = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
    return _Fail(f"error:{phase}", f"{name} {exc.strerror or exc}")


def fetch(via: Via, host: str, port: int, path: str = DEFAULT_PATH, *, timeout: float = 10.0,
          expect: tuple[int, str] | None = None, client_closes: bool = False) -> Outcome:
    """One ``GET path`` with ``Connection: close`` to ``host``:``port`` through ``via``.
    ``expect``: the blob's (size, sha256), default from ``path`` (`expected_blob`).
    ``client_closes``: ``Connection: keep-alive`` instead, and we close after the body."""
    expect = expect or expected_blob(path)
    t0 = time.monotonic()
    sock = socket.socket(socket.AF_INET6 if ":" in (via.addr or (host,))[0] else socket.AF_INET)
    c = _Conn(sock, t0 + timeout)
    out = Outcome("ok")
    try:
        c._arm()
        sock.connect(via.addr or (host, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.phase = "handshake"
        if via.kind == "socks5":
            _socks5(c, host, port)
        elif via.kind == "http-connect":
            _http_connect(c, host, port)
        out.connect_s = time.monotonic() - t0
        c.phase = "response"
        auth = _authority(host, port)
        target = f"http://{auth}{path}" if via.kind == "http" else path
        connection = "keep-alive" if client_closes else "close"
        c.send(f"GET {target} HTTP/1.1\r\nHost: {auth}\r\nConnection: {connection}\r\n"
               f"User-Agent: sunbeam-loadgen\r\n\r\n".encode())
        status, headers = _parse_head(c.head())
        if status != 200:
            raise _Fail(f"http_{status}")
        if not headers.get("content-length", "").isdigit():
            raise _Fail("bad_response", "no Content-Length")
        body = c.take(int(headers["content-length"]))
        out.total_s = time.monotonic() - t0
        if expect is not None:
            size, digest = expect
            if len(body) != size or hashlib.sha256(body).hexdigest() != digest:
                raise _Fail("bad_body", f"{len(body)} bytes, sha256 {hashlib.sha256(body).hexdigest()[:16]}")
            if headers.get("x-blob-sha256", digest) != digest:
                raise _Fail("bad_body", f"X-Blob-Sha256 {headers['x-blob-sha256'][:16]}")
        c.phase = "eof"
        while not client_closes and c.fill():
            pass
        if c.buf:
            raise _Fail("bad_response", f"{len(c.buf)} bytes after the body")
    except _Fail as fail:
        out.kind, out.detail = fail.kind, fail.detail
    except OSError as exc:
        fail = _os_fail(exc, c.phase)
        out.kind, out.detail = fail.kind, fail.detail
    finally:
        sock.close()
    out.elapsed_s = time.monotonic() - t0
    return out


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (``p`` in 0..100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


@dataclass
class Summary:
    """What `run` did: counts, failures by kind (with a few examples), latencies (s)."""

    via: str
    count: int
    concurrency: int
    attempted: int = 0
    ok: int = 0
    failures: Counter = field(default_factory=Counter)
    examples: list[tuple[int, str, str, float]] = field(default_factory=list)
    """(request index, kind, detail, seconds into the run) of the first failures."""
    connect_s: list[float] = field(default_factory=list)
    total_s: list[float] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    @property
    def rate(self) -> float:
        """Successful requests (new connections) per second of the run."""
        return self.ok / self.wall_s if self.wall_s else 0.0

    def figures(self) -> dict:
        ms = lambda v: None if v is None else round(v * 1000, 2)  # noqa: E731
        return {"via": self.via, "count": self.count, "concurrency": self.concurrency, "attempted": self.attempted,
                "ok": self.ok, "failures": dict(self.failures), "wall_s": round(self.wall_s, 2),
                "conns_per_s": round(self.rate, 1),
                "connect_p50_ms": ms(percentile(self.connect_s, 50)),
                "connect_p99_ms": ms(percentile(self.connect_s, 99)),
                "total_p50_ms": ms(percentile(self.total_s, 50)), "total_p99_ms": ms(percentile(self.total_s, 99))}

    def line(self) -> str:
        f = self.figures()
        fails = ", ".join(f"{k} {v}" for k, v in sorted(self.failures.items())) or "none"
        return (f"{self.via} x{self.count} c{self.concurrency}: {self.ok}/{self.attempted} ok, failures: {fails}; "
                f"{f['conns_per_s']} conn/s, connect p50/p99 {f['connect_p50_ms']}/{f['connect_p99_ms']} ms, "
                f"connect+request p50/p99 {f['total_p50_ms']}/{f['total_p99_ms']} ms")


_libc = ctypes.CDLL(None, use_errno=True)


def enter_netns(name: str) -> None:
    """Move the calling thread into network namespace ``name`` for good (worker threads)."""
    fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
            raise OSError(ctypes.get_errno(), f"setns {name}: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(fd)


def run(via: Via, host: str, port: int, *, count: int, concurrency: int = 1, path: str = DEFAULT_PATH,
        timeout: float = 10.0, netns: str | None = None, stop_after: int | None = None,
        max_examples: int = 10, client_closes: bool = False) -> Summary:
    """``count`` requests (`fetch`) by ``concurrency`` worker threads, each taking the next
    request as it finishes one. ``stop_after``: no new request once that many failed."""
    if count < 1 or concurrency < 1:
        raise ValueError("count and concurrency must be >= 1")
    expect = expected_blob(path)
    summary = Summary(str(via), count, concurrency)
    lock = threading.Lock()
    next_index = iter(range(count))
    errors: list[BaseException] = []
    t0 = time.monotonic()

    def worker() -> None:
        try:
            if netns:
                enter_netns(netns)
            while True:
                with lock:
                    if stop_after is not None and summary.failed >= stop_after:
                        return
                    i = next(next_index, None)
                    if i is None:
                        return
                    summary.attempted += 1
                o = fetch(via, host, port, path, timeout=timeout, expect=expect, client_closes=client_closes)
                with lock:
                    if o.ok:
                        summary.ok += 1
                        summary.total_s.append(o.total_s)
                        summary.connect_s.append(o.connect_s)
                    else:
                        summary.failures[o.kind] += 1
                        if len(summary.examples) < max_examples:
                            summary.examples.append((i, o.kind, o.detail, round(time.monotonic() - t0, 3)))
        except BaseException as exc:  # noqa: BLE001 - a bug here must not look like a clean run
            errors.append(exc)

    threads = [threading.Thread(target=worker, name=f"loadgen-{k}", daemon=True)
               for k in range(min(concurrency, count))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    summary.wall_s = time.monotonic() - t0
    if errors:
        raise RuntimeError(f"loadgen worker crashed: {errors[0]!r}") from errors[0]
    return summary

