"""sunbeam-proxy: the userspace TCP/IP engine and the local listeners.

Will own: the TCP connections (our sans-IO TCP), port forwards, SOCKS5 and HTTP proxy
listeners on 127.0.0.1, and inbound connections from tailnet peers.

Runs today as the supervised service shell (config, runtime dir, ctl socket answering
health/status/stop, clean shutdown).
"""

from __future__ import annotations

from sunbeam.shared.runtime.service import run_service


def main(argv: list[str] | None = None) -> int:
    return run_service("proxy", argv=argv)
