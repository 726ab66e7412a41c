"""Which subnet routes and exit node are in use, for ``whois``, ``exit-node list`` and ``peers``.

The proxy reads ``accept_routes`` and ``exit_node`` once, when it starts, and routes by
them until it stops; its `StatusReply` carries them (``routing``). So the ctl asks the
running proxy, and reads the context's config as it is now only when the proxy does not
answer (sunbeam is not running, or a proxy older than this field). When the config file
was edited since the proxy started, `RoutesInUse.note` says so in one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from .client import service_status

if TYPE_CHECKING:
    from ..shared.config import Context
    from ..shared.messages.ctl import RoutingSettings

__all__ = ["RoutesInUse", "proxy_routing", "routes_in_use"]

PROXY_TIMEOUT = 0.5  # the proxy answers its ctl socket in well under a millisecond


class RoutesInUse(NamedTuple):
    accept_routes: bool
    exit_node: str | None
    running: RoutingSettings | None
    """What the running proxy reported; None: it did not answer (the values are the config's)."""
    note: str | None
    """``(the running proxy uses ...; the config now says ...: restart to apply)``, or None."""


def proxy_routing(rundir: Path, timeout: float = PROXY_TIMEOUT) -> RoutingSettings | None:
    """The routing settings the running proxy uses; None when it is not running, does not
    answer within ``timeout``, or does not say (an older proxy)."""
    from ..shared.messages.codec import BadMessage

    try:
        reply = service_status(Path(rundir), "proxy", timeout=timeout)
    except (BadMessage, OSError):
        return None
    return reply.routing if reply is not None else None


def _settings(accept_routes: bool, exit_node: str | None, keys: list[str]) -> str:
    shown = {"exit_node": f"exit_node = {exit_node!r}" if exit_node else "no exit_node",
             "accept_routes": f"accept_routes = {str(accept_routes).lower()}"}
    return ", ".join(shown[k] for k in keys)


def routes_in_use(rundir: Path, ctx: Context | None) -> RoutesInUse:
    """The running proxy's settings, else ``ctx``'s (None: no config: neither)."""
    conf_accept, conf_exit = bool(ctx and ctx.accept_routes), (ctx.exit_node or None) if ctx else None
    running = proxy_routing(rundir)
    if running is None:
        return RoutesInUse(conf_accept, conf_exit, None, None)
    run_accept, run_exit = running.accept_routes, running.exit_node or None
    differ = [k for k, run, conf in (("exit_node", run_exit, conf_exit), ("accept_routes", run_accept, conf_accept))
              if run != conf]
    note = None
    if ctx is not None and differ:  # (no config: nothing to compare with)
        note = (f"(the running proxy uses {_settings(run_accept, run_exit, differ)}; the config now says "
                f"{_settings(conf_accept, conf_exit, differ)}: restart to apply)")
    return RoutesInUse(run_accept, run_exit, running, note)
