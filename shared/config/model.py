"""The validated configuration: frozen values built by ``load_config``.

One :class:`Context` describes one tailnet login (one ``[contexts.<name>]`` table of the
TOML file, after environment overrides and defaults; the format is documented in
``sunbeam.shared.config.load`` and shown in ``sunbeam.shared.config.example``). Its
``listeners`` are :class:`Listener` values, one per ``[[contexts.<name>.listeners]]``:

* ``socks5`` / ``http``: a proxy on the local ``listen`` address;
* ``forward``: ``listen`` locally, forward each connection to ``target`` on the tailnet;
* ``inbound``: tailnet peers connecting to ``port`` on our tailnet address reach the
  local ``target``;
* ``dns``: a DNS server (UDP and TCP) on the local ``listen`` address answering for
  tailnet names.

Routing beyond the tailnet's own addresses, as tailscale's ``--accept-routes`` and
``--exit-node``: ``accept_routes`` uses the subnet routes peers advertise (off by
default); ``exit_node`` (a peer's name or tailnet IP) carries every destination outside
the tailnet. ``dns_forward`` lets the dns listener (and the proxies, for names outside
the tailnet) forward other names to the netmap's resolvers through the tunnel.

The auth key is a :class:`Secret`: its repr and str are ``<redacted>``, so printing or
logging a Context never shows it; call :meth:`Secret.reveal` where the key is sent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import msgspec

from ..runtime.secret import Secret

ListenerKind = Literal["socks5", "http", "forward", "inbound", "dns"]
LISTENER_KINDS: tuple[str, ...] = ("socks5", "http", "forward", "inbound", "dns")
LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error")

DEFAULT_WG_WORKERS = 2
MAX_WG_WORKERS = 64
MIN_CAPABILITY_VERSION = 113  # Headscale 0.29 refuses older clients
DEFAULT_CAPABILITY_VERSION = 130
DEFAULT_LOG_LEVEL = "info"


class Address(msgspec.Struct, frozen=True, kw_only=True):
    """A host (IP literal without brackets, or DNS name) and a port (TCP; a dns listener's
    UDP too)."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class Listener(msgspec.Struct, frozen=True, kw_only=True):
    """One proxy service. ``listen`` is set for socks5/http/forward/dns, ``port`` for
    inbound; ``target`` is set for forward and inbound only."""

    kind: ListenerKind
    listen: Address | None = None
    port: int | None = None
    target: Address | None = None


class Context(msgspec.Struct, frozen=True, kw_only=True):
    """Everything one sunbeam instance needs, validated and with defaults filled in."""

    name: str
    control_url: str
    auth_key: Secret
    hostname: str
    state_dir: Path
    runtime_dir: Path
    ephemeral: bool = False
    wg_workers: int = DEFAULT_WG_WORKERS
    log_level: str = DEFAULT_LOG_LEVEL
    capability_version: int = DEFAULT_CAPABILITY_VERSION
    listeners: tuple[Listener, ...] = ()
    accept_routes: bool = False  # use peers' subnet routes (tailscale --accept-routes)
    exit_node: str | None = None  # a peer's name or tailnet IP: where non-tailnet traffic goes
    dns_forward: bool = False  # forward non-tailnet names to the netmap's resolvers
    ca_file: Path | None = None  # a CA to trust besides the system store (https control URLs)
    auth_key_file: Path | None = None  # where auth_key was read from, if a file
    config_path: Path | None = None  # the file this came from; None if env-only


class Config(msgspec.Struct, frozen=True, kw_only=True):
    """A configuration file's outline: its contexts (all checked) and the default."""

    path: Path
    default_context: str | None
    contexts: tuple[str, ...]
