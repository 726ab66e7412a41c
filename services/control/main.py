"""sunbeam-control: the control-plane service.

Will own: the node, disco and machine keys; the TS2021 connection to the control server;
registration; the streaming map and the netmap published to every other service; the
state machine shown by ``sunbeam-ctl status``.

Runs today as the supervised service shell (config, runtime dir, ctl socket answering
health/status/stop, clean shutdown); the control protocol is built on it next.
"""

from __future__ import annotations

from sunbeam.shared.runtime.service import run_service


def main(argv: list[str] | None = None) -> int:
    return run_service("control", argv=argv)
