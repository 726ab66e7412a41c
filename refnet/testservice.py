"""The test service each reference peer serves on its tailnet address.

tailscaled in userspace-networking mode forwards inbound TCP for ``<tailnet IP>:<port>`` to
``127.0.0.1:<port>``, so this server binds loopback inside the namespace.

HTTP endpoints (HTTP/1.1, keep-alive)::

    GET  /                      small HTML page naming the peer
    GET  /whoami                JSON {"peer": name, "client": "ip:port"}
    GET  /blob/<size>[?seed=S]  deterministic blob (see blobs.py); <size> may end in K/M/G;
                                header X-Blob-Sha256 carries its sha256
    GET  /sha256/<size>[?seed=S]  the hex sha256 of that blob, nothing else
    POST /upload                JSON {"bytes": n, "sha256": hex} of the body received
                                (Content-Length or chunked; streamed, never stored)
    POST /echo                  the request body, back
    GET  /echo?msg=TEXT         TEXT, back

Plus a raw TCP echo server on ``--echo-port`` (bytes in, same bytes out) for interactive tests.

Run: ``python -m sunbeam.refnet.testservice --name peer-1 --port 18001 --echo-port 19001``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import socketserver
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from .blobs import MAX_BLOB, blob_sha256, iter_blob

_SUFFIX = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
MAX_ECHO = 16 << 20


def parse_size(text: str) -> int:
    """``"10M"`` -> 10485760. Raises ValueError on anything else than digits + K/M/G."""
    text = text.strip().upper()
    suffix = text[-1] if text and text[-1] in "KMG" else ""
    digits = text[: len(text) - len(suffix)]
    if not digits.isdigit():
        raise ValueError(f"bad size {text!r}")
    size = int(digits) * _SUFFIX[suffix]
    if size > MAX_BLOB:
        raise ValueError(f"size {size} exceeds {MAX_BLOB}")
    return size


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sunbeam-refnet-testservice"
    peer_name = "peer"

    def log_message(self, fmt: str, *args) -> None:  # one line per request to stderr
        sys.stderr.write(f"{self.peer_name} {self.address_string()} {fmt % args}\n")

    def _reply(self, code: int, body: bytes, ctype: str = "text/plain", headers: dict | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj: dict, code: int = 200) -> None:
        self._reply(code, json.dumps(obj).encode() + b"\n", "application/json")

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        seed = query.get("seed", ["0"])[0]
        parts = [p for p in url.path.split("/") if p]
        try:
            if not parts:
                page = f"<html><body><h1>hello from {self.peer_name}</h1></body></html>\n"
                return self._reply(200, page.encode(), "text/html")
            if parts == ["whoami"]:
                return self._json({"peer": self.peer_name, "client": f"{self.client_address[0]}:{self.client_address[1]}"})
            if parts[0] == "echo" and len(parts) == 1:
                return self._reply(200, query.get("msg", [""])[0].encode())
            if parts[0] in ("blob", "sha256") and len(parts) == 2:
                size = parse_size(parts[1])
                digest = blob_sha256(size, seed)
                if parts[0] == "sha256":
                    return self._reply(200, digest.encode() + b"\n")
                return self._send_blob(size, seed, digest)
        except ValueError as exc:
            return self._reply(400, f"{exc}\n".encode())
        self._reply(404, b"not found\n")

    do_HEAD = do_GET

    def _send_blob(self, size: int, seed: str, digest: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.send_header("X-Blob-Sha256", digest)
        self.end_headers()
        if self.command == "HEAD":
            return
        for piece in iter_blob(size, seed):
            self.wfile.write(piece)

    def _body_chunks(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                line = self.rfile.readline(1024)
                length = int(line.split(b";")[0].strip() or b"0", 16)
                if length == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return
                remaining = length
                while remaining:
                    data = self.rfile.read(min(remaining, 1 << 16))
                    if not data:
                        raise ValueError("body ended early")
                    remaining -= len(data)
                    yield data
                self.rfile.readline(16)
        else:
            remaining = int(self.headers.get("Content-Length", "0"))
            while remaining > 0:
                data = self.rfile.read(min(remaining, 1 << 16))
                if not data:
                    raise ValueError("body ended early")
                remaining -= len(data)
                yield data

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        try:
            if path == "/upload":
                h = hashlib.sha256()
                n = 0
                for data in self._body_chunks():
                    h.update(data)
                    n += len(data)
                return self._json({"bytes": n, "sha256": h.hexdigest()})
            if path == "/echo":
                body = bytearray()
                for data in self._body_chunks():
                    body += data
                    if len(body) > MAX_ECHO:
                        raise ValueError(f"echo body over {MAX_ECHO} bytes")
                return self._reply(200, bytes(body), "application/octet-stream")
        except ValueError as exc:
            self.close_connection = True
            return self._reply(400, f"{exc}\n".encode())
        self._reply(404, b"not found\n")


class EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


# socketserver listens with a backlog of 5 (``request_queue_size``): a burst of new
# connections beyond that, arriving while the accept loop waits for the GIL, overflows the
# accept queue and the kernel drops their SYNs (1 s, 3 s, ... retransmits; tailscaled's
# forwarder gave up on some: 125 of 200 concurrent streams were served). The kernel caps the
# backlog at net.core.somaxconn (4096 by default). Threads are daemons, and the server keeps
# no list of them (``block_on_close``), so thousands of short connections leave nothing behind.
BACKLOG = 1024


class ThreadingTCP(socketserver.ThreadingMixIn, socketserver.TCPServer):
    allow_reuse_address = True
    daemon_threads = True
    block_on_close = False
    request_queue_size = BACKLOG


class HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = BACKLOG


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--echo-port", type=int, required=True)
    ap.add_argument("--bind", default="127.0.0.1")
    args = ap.parse_args(argv)
    Handler.peer_name = args.name
    http = HTTPServer((args.bind, args.port), Handler)
    echo = ThreadingTCP((args.bind, args.echo_port), EchoHandler)
    threading.Thread(target=echo.serve_forever, daemon=True).start()
    print(f"testservice {args.name} http={args.bind}:{args.port} echo={args.bind}:{args.echo_port}", flush=True)
    http.serve_forever()


if __name__ == "__main__":
    main()
