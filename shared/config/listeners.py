"""Parsing ``[[contexts.<name>.listeners]]`` tables into :class:`Listener` values.

Each listener table has a ``kind`` and the keys that kind needs::

    kind = "socks5"   listen = "127.0.0.1:1080"                        # SOCKS5 proxy
    kind = "http"     listen = "127.0.0.1:8080"                        # HTTP CONNECT proxy
    kind = "forward"  listen = "127.0.0.1:16579"  target = "peer-a:80" # local port -> tailnet
    kind = "inbound"  port = 22                   target = "127.0.0.1:22" # tailnet port -> local
    kind = "dns"      listen = "127.0.0.1:5353"                        # tailnet DNS (UDP + TCP)

``listen`` is ``host:port`` (IPv6 in brackets, ``[::1]:1080``; port 0-65535, 0 = any
free port); ``target`` is ``host:port`` with a host name or IP and port 1-65535;
``port`` is the port (1-65535) on our tailnet address. Other keys, and keys the kind
does not use, are errors; so are two listeners on the same address or inbound port.
"""

from __future__ import annotations

from typing import cast

from .errors import check_keys, describe, fail, type_name
from .fields import parse_address, parse_int
from .model import LISTENER_KINDS, Address, Listener, ListenerKind

LISTENER_KEYS: tuple[str, ...] = ("kind", "listen", "target", "port")
_NEEDS: dict[str, tuple[str, ...]] = {
    "socks5": ("listen",),
    "http": ("listen",),
    "forward": ("listen", "target"),
    "inbound": ("port", "target"),
    "dns": ("listen",),
}


def parse_listener(table: object, where: str) -> Listener:
    """One listener table; *where* is its key path, e.g. ``...listeners[0]``."""
    if not isinstance(table, dict):
        fail(where, f"expected a table ([[...listeners]]), got {type_name(table)}")
    check_keys(table, LISTENER_KEYS, where)
    if "kind" not in table:
        fail(where, f"missing kind (one of {', '.join(LISTENER_KINDS)})")
    kind = table["kind"]
    if kind not in LISTENER_KINDS or not isinstance(kind, str):
        fail(f"{where}.kind", f"expected one of {', '.join(LISTENER_KINDS)}, got {describe(kind)}")
    needs = _NEEDS[kind]
    for key in LISTENER_KEYS[1:]:
        if key in needs and key not in table:
            fail(where, f'kind "{kind}" requires {key}')
        if key not in needs and key in table:
            users = [k for k, n in _NEEDS.items() if key in n]
            fail(f"{where}.{key}", f'not allowed for kind "{kind}" (only for {" and ".join(users)})')
    listen = parse_address(table["listen"], f"{where}.listen") if "listen" in table else None
    target = (parse_address(table["target"], f"{where}.target", min_port=1)
              if "target" in table else None)
    port = parse_int(table["port"], f"{where}.port", 1, 65535) if "port" in table else None
    return Listener(kind=cast(ListenerKind, kind), listen=listen, port=port, target=target)


def _overlaps(a: Address, b: Address) -> bool:
    return a.port != 0 and a.port == b.port and a.host == b.host



def parse_listeners(value: object, where: str) -> tuple[Listener, ...]:
    """The ``listeners`` array; *where* is its key path (``...contexts.home.listeners``)."""
    if not isinstance(value, list):
        fail(where, f"expected an array of tables ([[...listeners]]), got {type_name(value)}")
    result: list[Listener] = []
    for index, table in enumerate(value):
        here = f"{where}[{index}]"
        listener = parse_listener(table, here)
        for other_index, other in enumerate(result):
            if listener.listen and other.listen and _overlaps(listener.listen, other.listen):
                fail(f"{here}.listen", f'"{listener.listen}" is already used by listeners[{other_index}]')
            if listener.port is not None and listener.port == other.port:
                fail(f"{here}.port", f"inbound port {listener.port} is already used by listeners[{other_index}]")
        result.append(listener)
    return tuple(result)
