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

import http.client
import json
import ssl
from urllib.parse import urlsplit

from sunbeam.shared.keys import KeyFormatError, from_text
from sunbeam.shared.proto.httpanswer import NOT_CONTROL_SERVER, describe_answer, excerpt
from sunbeam.shared.runtime.tlsctx import client_context

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


def fetch_server_key(control_url: str, capability_version: int, timeout: float,
                     tls: ssl.SSLContext | None = None) -> bytes:
    """Raises ServerKeyError (the server answered, but not with a key) or OSError (no answer)."""
    url = urlsplit(control_url)
    where = f"{url.scheme}://{url.netloc.rpartition('@')[2]}{url.path.rstrip('/')}/key"  # no user:password
    conn: http.client.HTTPConnection
    if url.scheme == "https":
        conn = http.client.HTTPSConnection(url.hostname or "", url.port, timeout=timeout,
                                           context=tls or client_context(None))
    else:
        conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=timeout)
    try:
        conn.request("GET", f"{url.path.rstrip('/')}/key?v={capability_version}")
        resp = conn.getresponse()
        body = resp.read(MAX_BODY)
    except http.client.RemoteDisconnected:  # closed without a word: nobody answered (an OSError)
        raise
    except http.client.HTTPException as exc:
        not_http = f" {NOT_CONTROL_SERVER}" if isinstance(exc, http.client.BadStatusLine) else ""
        raise ServerKeyError(f"malformed HTTP answer from {where}:{not_http} "
                             f"({exc.__class__.__name__}: '{excerpt(str(exc))}')", permanent=False) from None
    finally:
        conn.close()
    if resp.status == 200:
        try:
            return parse_key_response(body)
        except ServerKeyError as exc:
            raise ServerKeyError(describe_answer(200, resp.reason, body, source=where, hint=str(exc)),
                                 permanent=exc.permanent) from None
    hint: str | None = None
    if resp.status == 400 and "version" in body[:300].decode(errors="replace").lower():
        hint = f"the server refuses capability version {capability_version}"
    elif resp.status == 404:
        hint = NOT_CONTROL_SERVER
    raise ServerKeyError(describe_answer(resp.status, resp.reason, body, source=where, hint=hint),
                         permanent=400 <= resp.status < 500 and resp.status not in (408, 429))
