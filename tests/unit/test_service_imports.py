"""What each service loads at start (issue 20 item 3: idle memory per process).

Each service is imported in a fresh interpreter, the way ``python -m
sunbeam.services.<svc>.main`` does. These fail when a module that the idle service does
not need comes back into its imports, or when msgspec, imported without typing_extensions
(see services/__init__.py), stops resolving our messages' annotations.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# module -> the services that must not load it at start
NOT_AT_START = {
    "typing_extensions": ("control", "derp", "udp", "wg", "proxy"),  # msgspec's, for nothing (~1.3 MB)
    "h11": ("udp", "wg", "proxy"),  # the proxy: only with a client on an http listener
    "nacl": ("wg", "proxy"),  # the workers tell disco apart without opening it (discohead)
    "numpy": ("control", "derp", "udp", "wg", "proxy"),  # the proxy: on a thread, at its first bulk batch
    "ssl": ("control", "derp", "udp", "wg", "proxy"),  # control, derp: only with TLS in use (tlsctx)
    "logging": ("derp", "udp", "wg", "proxy"),  # our JSON lines need none (control: hpack uses it)
    "traceback": ("derp", "udp", "wg", "proxy"),  # only for a line with an exception
}


ROOT = Path(__file__).resolve().parents[2]


def _probe(code: str) -> dict:
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60,
                         check=False, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.splitlines()[-1])


@pytest.mark.parametrize("svc", ["control", "derp", "udp", "wg", "proxy"])
def test_a_service_loads_only_what_it_needs_at_start(svc):
    seen = _probe(f"""
        import json, sys
        import sunbeam.services.{svc}.main
        print(json.dumps(sorted(sys.modules)))
    """)
    loaded = [m for m, services in NOT_AT_START.items() if svc in services and m in seen]
    assert loaded == [], f"{svc} imports at start: {loaded}"


def test_messages_decode_with_msgspec_imported_the_services_way():
    # every message type of every channel round-trips (typing.get_type_hints resolves them),
    # and typing_extensions still imports afterwards for whoever wants it
    out = _probe("""
        import json, sys
        import sunbeam.services
        from tests.unit.test_channels import REPLIES, SAMPLES
        from sunbeam.shared.channels import ALL
        n = 0
        for ch in ALL:
            for codec, samples in ((ch.codec, SAMPLES[ch.name]), (ch.reply_codec, REPLIES.get(ch.name))):
                for msg in samples or ():
                    assert codec.decode(codec.encode(msg)) == msg, msg
                    n += 1
        blocked = "typing_extensions" in sys.modules
        import typing_extensions
        print(json.dumps({"n": n, "blocked": not blocked}))
    """)
    assert out["blocked"] and out["n"] > 20


def test_the_http_proxy_loads_h11_with_its_first_connection():
    out = _probe("""
        import json, sys
        from sunbeam.services.proxy import httpproxy
        before = "h11" in sys.modules
        server = httpproxy.HttpProxyServer()
        events = server.receive_data(b"CONNECT peer-2:80 HTTP/1.1\\r\\nHost: peer-2:80\\r\\n\\r\\n")
        print(json.dumps({"before": before, "after": "h11" in sys.modules, "events": [type(e).__name__ for e in events]}))
    """)
    assert out == {"before": False, "after": True, "events": ["ConnectRequest"]}
