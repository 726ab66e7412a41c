"""Parsers for the values of a context table (format: ``sunbeam.shared.config.load``).

Each parser takes the raw value and ``where`` it came from -- a key path such as
``/etc/sunbeam.toml: contexts.home.wg_workers`` or an environment variable name such as
``SUNBEAM_WG_WORKERS`` -- and returns the typed value or raises a one-line
:class:`ConfigError` ``<where>: <problem>``. Values from the environment are strings,
so parsers given ``from_env=True`` also accept ``"2"`` for an integer or ``"yes"`` for
a boolean.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

from .errors import describe, fail, type_name
from .model import LOG_LEVELS, MAX_WG_WORKERS, MIN_CAPABILITY_VERSION, Address, Secret

_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)", re.ASCII)
_INT_TEXT = re.compile(r"\s*[+-]?[0-9]{1,18}\s*")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_ADDRESS_HELP = "host:port (IPv6 as [::1]:1080)"
_MAX_CA_BYTES = 16 * 1024 * 1024

CONTEXT_KEYS: tuple[str, ...] = (
    "control_url", "auth_key", "auth_key_file", "hostname", "state_dir", "runtime_dir",
    "ephemeral", "wg_workers", "log_level", "capability_version", "ca_file", "listeners",
    "accept_routes", "exit_node", "dns_forward",
)


def parse_int(value: object, where: str, lo: int, hi: int | None = None, *,
              from_env: bool = False, note: str = "") -> int:
    want = f"an integer from {lo} to {hi}" if hi is not None else f"an integer >= {lo}{note}"
    number = value
    if from_env and isinstance(value, str) and _INT_TEXT.fullmatch(value):
        number = int(value)
    if (isinstance(number, bool) or not isinstance(number, int)
            or number < lo or (hi is not None and number > hi)):
        fail(where, f"expected {want}, got {describe(value)}")
    return number


def parse_bool(value: object, where: str, *, from_env: bool = False) -> bool:
    if isinstance(value, bool):
        return value
    if from_env and isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        fail(where, f"expected one of {'/'.join(_TRUE)} or {'/'.join(_FALSE)}, got {describe(value)}")
    fail(where, f"expected true or false, got {describe(value)}")


def parse_log_level(value: object, where: str) -> str:
    if isinstance(value, str) and value.strip().lower() in LOG_LEVELS:
        return value.strip().lower()
    fail(where, f"expected one of {', '.join(LOG_LEVELS)}, got {describe(value)}")


def parse_url(value: object, where: str) -> str:
    """An http(s) URL with a host and no query or fragment; trailing "/" dropped."""
    want = 'expected an http:// or https:// URL like "https://headscale.example.com"'
    if not isinstance(value, str):
        fail(where, f"{want}, got {describe(value)}")
    text = value.strip()
    try:
        parts = urllib.parse.urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a bad port
        host = parts.hostname
    except ValueError:
        fail(where, f"{want}, got {describe(value)}")
    if "@" in parts.netloc:
        fail(where, "must not contain a user name or password")
    if (parts.scheme.lower() not in ("http", "https") or not host
            or any(c.isspace() or not c.isprintable() for c in text)
            or parts.query or parts.fragment):
        fail(where, f"{want}, got {describe(value)}")
    return parts._replace(scheme=parts.scheme.lower()).geturl().rstrip("/")


def is_dns_label(text: str) -> bool:
    return _LABEL.fullmatch(text) is not None


def parse_hostname(value: object, where: str) -> str:
    if isinstance(value, str) and is_dns_label(value):
        return value
    fail(where, "expected a DNS label (1-63 letters, digits or hyphens, not starting or "
                f"ending with a hyphen), got {describe(value)}")


def parse_secret(value: object, where: str) -> Secret:
    """A key: the value itself never appears in an error, only its type."""
    if not isinstance(value, str):
        fail(where, f"expected a non-empty string, got {type_name(value)}")
    text = value.strip()
    if not text:
        fail(where, "is empty")
    if any(c.isspace() or not c.isprintable() for c in text):
        fail(where, "must be a single key without whitespace or control characters")
    return Secret(text)


def home_dir(env: Mapping[str, str]) -> Path:
    home = env.get("HOME", "")
    return Path(home) if os.path.isabs(home) else Path(os.path.expanduser("~"))


def expand_path(text: str, base: Path, env: Mapping[str, str]) -> Path:
    """Expand ``~`` (``$HOME`` from *env*) and make relative paths relative to *base*."""
    if text == "~" or text.startswith("~/"):
        text = str(home_dir(env)) + text[1:]
    elif text.startswith("~"):
        text = os.path.expanduser(text)
    return Path(os.path.normpath(os.path.join(base, text)))


def parse_path(value: object, where: str, base: Path, env: Mapping[str, str]) -> Path:
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        fail(where, f"expected a non-empty path, got {describe(value)}")
    text = value.strip()
    if text.startswith("~") and not (text == "~" or text.startswith("~/")):
        if os.path.expanduser(text).startswith("~"):
            fail(where, f"cannot expand the user in {describe(value)}")
    return expand_path(text, base, env)


def check_ca_file(path: Path, where: str) -> Path:
    """``ca_file``: a readable file with at least one PEM certificate (the CA to trust
    besides the system's). Checked for the chosen context only, like the key file."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the read
            fail(where, f"{path} is not a regular file")
        with open(path, "rb") as handle:
            data = handle.read(_MAX_CA_BYTES + 1)
    except OSError as exc:
        fail(where, f"cannot read {path}: {exc.strerror or exc}")
    if len(data) > _MAX_CA_BYTES:
        fail(where, f"{path} is too large for a CA file (over 16 MiB)")
    import ssl  # only with a ca_file: ssl loads libssl and libcrypto (~1 MB per process)

    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=data.decode("ascii"))
    except (UnicodeDecodeError, ssl.SSLError, ValueError):
        fail(where, f"{path} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)")
    return path


def _check_host(host: str, value: str, where: str) -> str:
    if host.startswith("[") and host.endswith("]"):
        try:
            return str(ipaddress.IPv6Address(host[1:-1]))
        except ValueError:
            fail(where, f"invalid IPv6 address in {describe(value)}")
    if ":" in host or "[" in host or "]" in host:
        fail(where, f"expected {_ADDRESS_HELP}, got {describe(value)}")
    if re.fullmatch(r"[0-9.]+", host):
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            fail(where, f"invalid IPv4 address in {describe(value)}")
    labels = host.rstrip(".").split(".") if host != "." else [""]
    if len(host) > 253 or not all(is_dns_label(label) for label in labels):
        fail(where, f"invalid host name in {describe(value)}")
    return host.rstrip(".")


def parse_address(value: object, where: str, *, min_port: int = 0) -> Address:
    """``host:port``: IPv4, bracketed IPv6 or a DNS name; port *min_port*-65535."""
    if not isinstance(value, str):
        fail(where, f"expected {_ADDRESS_HELP}, got {describe(value)}")
    host, sep, port_text = value.strip().rpartition(":")
    if not sep or not host:
        fail(where, f"expected {_ADDRESS_HELP}, got {describe(value)}")
    clean_host = _check_host(host, value, where)
    if not re.fullmatch(r"[0-9]{1,5}", port_text) or not min_port <= int(port_text) <= 65535:
        fail(where, f"port must be {min_port}-65535, got {describe(value)}")
    return Address(host=clean_host, port=int(port_text))


def parse_exit_node(value: object, where: str) -> str | None:
    """A peer's name (short, MagicDNS FQDN or host name) or tailnet IP; "" = none."""
    if not isinstance(value, str):
        fail(where, f"expected a peer's name or tailnet IP, got {describe(value)}")
    text = value.strip()
    if not text:
        return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    name = text.rstrip(".")
    if len(name) > 253 or not name or not all(is_dns_label(label) for label in name.split(".")):
        fail(where, f"expected a peer's name or tailnet IP, got {describe(value)}")
    return name.lower()


def parse_field(key: str, value: object, where: str, *, from_env: bool,
                base: Path, env: Mapping[str, str]) -> object:
    """Parse one context value (any key of CONTEXT_KEYS except ``listeners``)."""
    if key == "control_url":
        return parse_url(value, where)
    if key == "auth_key":
        return parse_secret(value, where)
    if key in ("auth_key_file", "state_dir", "runtime_dir", "ca_file"):
        return parse_path(value, where, base, env)
    if key == "hostname":
        return parse_hostname(value, where)
    if key in ("ephemeral", "accept_routes", "dns_forward"):
        return parse_bool(value, where, from_env=from_env)
    if key == "exit_node":
        return parse_exit_node(value, where)
    if key == "wg_workers":
        return parse_int(value, where, 1, MAX_WG_WORKERS, from_env=from_env)
    if key == "log_level":
        return parse_log_level(value, where)
    if key == "capability_version":
        return parse_int(value, where, MIN_CAPABILITY_VERSION, from_env=from_env,
                         note=" (Headscale 0.29 minimum)")
    raise KeyError(key)
