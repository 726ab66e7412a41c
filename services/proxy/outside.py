"""Names outside the tailnet, for the SOCKS5 and HTTP fronts: asked of the netmap's resolvers.

A name the netmap does not know (`NameTable`) is asked of the resolvers control hands out,
through the tunnel (`dnsforward.DnsForwarder`), when ``dns_forward`` is on or an exit node
is in use -- as tailscaled resolves names for its SOCKS5/HTTP users through its exit node.
Never a single-label name, nor one under the MagicDNS domain (those are the tailnet's: not
found means not there). A records first; AAAA only when the A answer was an empty NOERROR
(a timeout or SERVFAIL is not asked twice, so a client waits at most one lookup, 6 s).

`ask` calls back once, later, with an address, or None and the failure reason:
``no_resolvers`` (control sent none for that name) or ``name_not_resolved``.
Owned by the proxy's loop thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .local import LocalSide

__all__ = ["ask", "may_ask"]

Answer = Callable[[str | None, str], None]
"""``(address, "")`` or ``(None, failure reason)``."""


def may_ask(side: LocalSide, host: str) -> bool:
    """Whether ``host`` (not a tailnet name) may be asked of the resolvers at all."""
    forwarder = side.dns
    if forwarder is None or not (forwarder.enabled or side.engine.plane.routes.exit.peer is not None):
        return False
    domain = side.names.domain
    name = host.lower().rstrip(".")
    return "." in name and not (domain and (name == domain or name.endswith("." + domain)))


def ask(side: LocalSide, host: str, answer: Answer) -> None:
    import dns.name
    import dns.rcode

    from .dnsforward import addresses
    from .dnsresolvers import resolvers_for

    forwarder = side.dns
    assert forwarder is not None
    try:
        servers = resolvers_for(forwarder.config, dns.name.from_text(host))
    except ValueError:  # dnspython's name errors are ValueErrors (a label too long ...)
        servers = []
    if not servers:
        side.loop.call_later(0, lambda: answer(None, "no_resolvers"))
        return

    def got(reply: Any, qtype: str) -> None:
        found = addresses(reply) if reply is not None else []
        if found:
            answer(found[0], "")
        elif qtype == "A" and reply is not None and reply.rcode() == dns.rcode.NOERROR:
            forwarder.resolve(host, "AAAA", lambda r: got(r, "AAAA"), for_proxy=True)
        else:
            answer(None, "name_not_resolved")

    forwarder.resolve(host, "A", lambda r: got(r, "A"), for_proxy=True)
