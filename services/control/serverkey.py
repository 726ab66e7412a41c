"""``GET {control_url}/key?v={capver}``: the control server's Noise public key.

Answer: JSON ``{"publicKey": "mkey:<64 hex>", "legacyPublicKey": "mkey:…"}`` (Go decodes
field names case-insensitively, so ``PublicKey`` is accepted too). Headscale answers 400
"unsupported client version" below its minimum capability version: a permanent error.

Any other answer is told in one line (`httpanswer.describe_answer`), with a hint when it
looks like a server that is no control server at all (a 404, or a 200 that is no JSON
object)::

    HTTP 404 Not Found from http://127.0.0.1:8000/key: not a Tailscale/Headscale control
    server? (body: 'Error response Error code: 404 Message: File not found. Error code...')
"""

from __future__ import annotations

import json
import socket
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import h11
from sunbeam.shared.keys import KeyFormatError, from_text
from sunbeam.shared.proto.httpanswer import NOT_CONTROL_SERVER, describe_answer, excerpt
from sunbeam.shared.runtime.tlsctx import client_context

if TYPE_CHECKING:
    import ssl  # only for annotations: an http:// control URL never loads ssl (tlsctx)

MAX_BODY = 64 * 1024


class ServerKeyError(Exception):
    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


def parse_key_response(body: bytes) -> bytes:
    """The key in a 200 answer's body; ServerKeyError's message is a hint for `describe_answer`."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ServerKeyError(f"not JSON; {NOT_CONTROL_SERVER}", permanent=False) from None
    if not isinstance(data, dict):
        raise ServerKeyError(f"not a JSON object; {NOT_CONTROL_SERVER}", permanent=False)
    text = next((v for k, v in data.items() if k.lower() == "publickey"), None)
    if text is None:
        raise ServerKeyError(f"no publicKey; {NOT_CONTROL_SERVER}", permanent=False)
    try:
        return from_text("mkey:", text)
    except KeyFormatError as exc:
        raise ServerKeyError(f"the server's public key is invalid: {excerpt(str(exc))}", permanent=False) from None


def key_path(control_url: str, capability_version: int) -> str:
    return f"{urlsplit(control_url).path.rstrip('/')}/key?v={capability_version}"


def where(control_url: str) -> str:
    """The /key URL as shown to the user (no user:password)."""
    url = urlsplit(control_url)
    return f"{url.scheme}://{url.netloc.rpartition('@')[2]}{url.path.rstrip('/')}/key"


class KeyAnswer:
    """Sans-IO: the request's bytes, then the server's bytes in; ``feed`` returns the key
    once the answer is complete, None while it is not. Raises ServerKeyError when the
    server answered, but not with a key, and `Unanswered` when it closed without a word."""

    def __init__(self, control_url: str, capability_version: int) -> None:
        self.control_url, self.capability_version = control_url, capability_version
        self._conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_BODY)
        host = urlsplit(control_url).netloc.rpartition("@")[2]
        request = h11.Request(method="GET", target=key_path(control_url, capability_version),
                              headers=[("Host", host), ("Accept", "application/json"), ("Connection", "close")])
        self.request = self._conn.send(request) + (self._conn.send(h11.EndOfMessage()) or b"")
        self.got_bytes = False
        self._status = 0
        self._reason = ""
        self._body = bytearray()
        self._head = b""  # the answer's first bytes, to show what a server that is no HTTP server said

    def feed(self, data: bytes) -> bytes | None:
        """``data`` from the server (b"" at its end of stream)."""
        if len(self._head) < 200:
            self._head += data[:200 - len(self._head)]
        self.got_bytes = self.got_bytes or bool(data)
        if not data and not self.got_bytes:
            raise Unanswered("closed the connection without an answer")
        self._conn.receive_data(data)
        while True:
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError:
                said = excerpt(self._head.split(b"\r\n", 1)[0].decode("latin-1"))
                raise ServerKeyError(f"malformed HTTP answer from {where(self.control_url)}: {NOT_CONTROL_SERVER} "
                                     f"(it said: '{said}')", permanent=False) from None
            if event is h11.NEED_DATA:
                if not data:  # the end of the stream before the end of the answer
                    raise ServerKeyError(f"incomplete HTTP answer from {where(self.control_url)}", permanent=False)
                return None
            if isinstance(event, h11.Response):
                self._status, self._reason = event.status_code, event.reason.decode("latin-1")
            elif isinstance(event, h11.Data):
                if len(self._body) + len(event.data) > MAX_BODY:
                    return self._answer()  # enough to tell what it is
                self._body += event.data
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                return self._answer()

    def _answer(self) -> bytes:
        return interpret_answer(self._status, self._reason, bytes(self._body), self.control_url,
                                self.capability_version)


class Unanswered(OSError):
    """The server closed the connection without sending a byte: nobody answered."""


def interpret_answer(status: int, reason: str, body: bytes, control_url: str, capability_version: int) -> bytes:
    """The key from a complete answer, or ServerKeyError in one line."""
    source = where(control_url)
    if status == 200:
        try:
            return parse_key_response(body)
        except ServerKeyError as exc:
            raise ServerKeyError(describe_answer(200, reason, body, source=source, hint=str(exc)),
                                 permanent=exc.permanent) from None
    hint: str | None = None
    if status == 400 and "version" in body[:300].decode(errors="replace").lower():
        hint = f"the server refuses capability version {capability_version}"
    elif status == 404:
        hint = NOT_CONTROL_SERVER
    raise ServerKeyError(describe_answer(status, reason, body, source=source, hint=hint),
                         permanent=400 <= status < 500 and status not in (408, 429))


def fetch_server_key(control_url: str, capability_version: int, timeout: float,
                     tls: ssl.SSLContext | None = None) -> bytes:
    """Blocking: the same request and answer as `KeyAnswer` (for tools and tests; the
    control service fetches without blocking, keyfetch.py). Raises ServerKeyError (the
    server answered, but not with a key) or OSError (no answer)."""
    url = urlsplit(control_url)
    port = url.port or (443 if url.scheme == "https" else 80)
    answer = KeyAnswer(control_url, capability_version)
    with socket.create_connection((url.hostname or "", port), timeout=timeout) as raw:
        sock = (tls or client_context(None)).wrap_socket(raw, server_hostname=url.hostname) \
            if url.scheme == "https" else raw
        sock.sendall(answer.request)
        while True:
            key = answer.feed(sock.recv(65536))
            if key is not None:
                return key
