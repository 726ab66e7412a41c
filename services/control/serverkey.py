"""``GET {control_url}/key?v={capver}``: the control server's Noise public key.

Answer: JSON ``{"publicKey": "mkey:<64 hex>", "legacyPublicKey": "mkey:…"}`` (Go decodes
field names case-insensitively, so ``PublicKey`` is accepted too). Headscale answers 400
"unsupported client version" below its minimum capability version: a permanent error.
"""

from __future__ import annotations

import http.client
import json
import ssl
from urllib.parse import urlsplit

from sunbeam.shared.keys import KeyFormatError, from_text

MAX_BODY = 64 * 1024


class ServerKeyError(Exception):
    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


def parse_key_response(body: bytes) -> bytes:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ServerKeyError("control server's /key answer is not JSON", permanent=False) from None
    if not isinstance(data, dict):
        raise ServerKeyError("control server's /key answer is not a JSON object", permanent=False)
    text = next((v for k, v in data.items() if k.lower() == "publickey"), None)
    try:
        return from_text("mkey:", text)
    except KeyFormatError as exc:
        raise ServerKeyError(f"control server's public key is invalid: {exc}", permanent=False) from None


def fetch_server_key(control_url: str, capability_version: int, timeout: float) -> bytes:
    """Raises ServerKeyError (the server answered, but not with a key) or OSError (no answer)."""
    url = urlsplit(control_url)
    cls = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    kwargs = {"context": ssl.create_default_context()} if url.scheme == "https" else {}
    conn = cls(url.hostname, url.port, timeout=timeout, **kwargs)
    try:
        conn.request("GET", f"{url.path.rstrip('/')}/key?v={capability_version}")
        resp = conn.getresponse()
        body = resp.read(MAX_BODY)
    except http.client.RemoteDisconnected:  # closed without a word: nobody answered (an OSError)
        raise
    except http.client.HTTPException as exc:
        raise ServerKeyError(f"control server sent a malformed HTTP answer to /key: {exc!r}", permanent=False) from None
    finally:
        conn.close()
    if resp.status == 200:
        return parse_key_response(body)
    text = body[:300].decode(errors="replace").strip()
    if resp.status == 400 and "version" in text.lower():
        raise ServerKeyError(f"the control server refused capability version {capability_version}: {text}",
                             permanent=True)
    raise ServerKeyError(f"control server answered /key with HTTP {resp.status}: {text or resp.reason}",
                         permanent=400 <= resp.status < 500 and resp.status not in (408, 429))
