"""Loading a :class:`Context` from the TOML file and ``SUNBEAM_*`` environment variables.

The file (``tomllib``) holds named contexts; see ``example.EXAMPLE_TOML`` for a full one::

    default_context = "home"              # optional

    [contexts.home]                       # names: letters, digits, "-", "_"
    control_url = "https://headscale.example.com"   # required; http:// or https://
    auth_key_file = "~/.config/sunbeam/home.key"    # or auth_key = "..."; exactly one
    hostname = "laptop"            # DNS label; default: this machine's host name
    state_dir = "~/.local/state/sunbeam/home"       # default $XDG_STATE_HOME/sunbeam/<name>
    runtime_dir = "/run/user/1000/sunbeam/home"     # default $XDG_RUNTIME_DIR/sunbeam/<name>,
                                                    #   else /tmp/sunbeam-<uid>/<name>
    ephemeral = false
    wg_workers = 2                 # 1..64
    log_level = "info"             # debug | info | warning | error
    capability_version = 130       # >= 113 (Headscale 0.29 minimum)
    ca_file = "~/.config/sunbeam/ca.pem"    # optional: a CA to trust besides the system store
    accept_routes = false          # use the subnet routes peers advertise
    exit_node = "gateway"          # optional: a peer's name or tailnet IP for non-tailnet traffic
    dns_forward = false            # forward non-tailnet names to the netmap's resolvers

    [[contexts.home.listeners]]    # see listeners.py
    kind = "socks5"
    listen = "127.0.0.1:1080"

File: the *path* argument, else ``$SUNBEAM_CONFIG``, else
``$XDG_CONFIG_HOME/sunbeam/config.toml`` (``~/.config/...``). In files, ``~`` is
expanded and relative paths are relative to the file's directory.

Context: the *context* argument, else ``$SUNBEAM_CONTEXT``, else ``default_context``,
else the only context. Every context in the file is checked, but only the chosen
one's key file is read.

Environment overrides (applied after the file; empty = unset; relative paths are
relative to the working directory): see ``ENV_VARS``. ``SUNBEAM_AUTH_KEY`` or
``SUNBEAM_AUTH_KEY_FILE`` replaces the file's auth setting. When no file exists at the
default location and ``SUNBEAM_CONTROL_URL`` is set, the environment alone supplies
the context, named by *context*, ``$SUNBEAM_CONTEXT`` or ``"default"``. A missing
file named explicitly (argument or ``SUNBEAM_CONFIG``) is always an error.
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigError, ConfigNotFound, check_keys, describe, fail, key_repr, type_name
from .fields import CONTEXT_KEYS, check_ca_file, home_dir, parse_field
from .keyfile import read_key_file
from .listeners import parse_listeners
from .model import Config, Context, Secret

ENV_VARS: dict[str, str] = {
    "SUNBEAM_CONTROL_URL": "control_url",
    "SUNBEAM_AUTH_KEY": "auth_key",
    "SUNBEAM_AUTH_KEY_FILE": "auth_key_file",
    "SUNBEAM_HOSTNAME": "hostname",
    "SUNBEAM_STATE_DIR": "state_dir",
    "SUNBEAM_RUNTIME_DIR": "runtime_dir",
    "SUNBEAM_WG_WORKERS": "wg_workers",
    "SUNBEAM_LOG_LEVEL": "log_level",
    "SUNBEAM_EPHEMERAL": "ephemeral",
    "SUNBEAM_CAPABILITY_VERSION": "capability_version",
    "SUNBEAM_CA_FILE": "ca_file",
    "SUNBEAM_ACCEPT_ROUTES": "accept_routes",
    "SUNBEAM_EXIT_NODE": "exit_node",
    "SUNBEAM_DNS_FORWARD": "dns_forward",
}
_CONTEXT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}", re.ASCII)
_MAX_FILE_BYTES = 1024 * 1024
# Parsed values of one context: key -> (value, where it came from).
Values = dict[str, tuple[Any, str]]


def _env(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    return value if value and value.strip() else None


def _xdg(env: Mapping[str, str], var: str, fallback: str) -> Path:
    value = env.get(var, "")
    return Path(value) if os.path.isabs(value) else home_dir(env) / fallback


def default_config_path(env: Mapping[str, str] = os.environ) -> Path:
    return _xdg(env, "XDG_CONFIG_HOME", ".config") / "sunbeam" / "config.toml"


def default_runtime_dir(context: str, env: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_RUNTIME_DIR/sunbeam/<context>`` when XDG_RUNTIME_DIR is an absolute path,
    else ``/tmp/sunbeam-<uid>/<context>``."""
    base = _env(env, "XDG_RUNTIME_DIR")
    root = Path(base) / "sunbeam" if base and os.path.isabs(base) else Path(f"/tmp/sunbeam-{os.getuid()}")
    return root / context


def default_hostname() -> str:
    """This machine's host name made into a DNS label ("sunbeam" if nothing is left)."""
    first = socket.gethostname().split(".")[0].lower()
    return re.sub(r"[^a-z0-9-]+", "-", first).strip("-")[:63].strip("-") or "sunbeam"


def _locate(path: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path | None:
    if path is not None:
        where, chosen = "config file", Path(os.path.abspath(os.path.expanduser(path)))
    elif (value := _env(env, "SUNBEAM_CONFIG")) is not None:
        where, chosen = "SUNBEAM_CONFIG", Path(os.path.abspath(os.path.expanduser(value)))
    else:
        default = default_config_path(env)
        try:
            return default if default.exists() else None
        except OSError as exc:  # e.g. a home directory we may not enter
            fail(str(default), f"cannot look for the config file: {exc.strerror or exc}")
    try:
        exists = chosen.exists()
    except OSError as exc:
        fail(str(chosen), f"cannot look for the config file: {exc.strerror or exc}")
    if not exists:
        if where == "config file":
            raise ConfigNotFound(f"{chosen}: config file not found")
        raise ConfigNotFound(f"{where}: config file {chosen} not found")
    return chosen


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            data = handle.read(_MAX_FILE_BYTES + 1)
    except OSError as exc:
        fail(str(path), f"cannot read: {exc.strerror or exc}")
    if len(data) > _MAX_FILE_BYTES:
        fail(str(path), "file too large for a configuration (over 1 MiB)")
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        fail(str(path), f"invalid TOML: not UTF-8 (byte {exc.start})")
    except tomllib.TOMLDecodeError as exc:
        fail(str(path), f"invalid TOML: {exc}")
    except (ValueError, RecursionError) as exc:
        fail(str(path), f"invalid TOML: {type(exc).__name__}: {str(exc)[:100]}")


def _check_name(name: object, where: str) -> str:
    if not isinstance(name, str) or not _CONTEXT_NAME.fullmatch(name):
        fail(where, "invalid context name (1-63 letters, digits, '-' or '_', starting "
                    f"with a letter or digit), got {describe(name)}")
    return name


def _parse_table(table: Any, where: str, base: Path, env: Mapping[str, str]) -> Values:
    if not isinstance(table, dict):
        fail(where, f"expected a table ([{where.rsplit(': ', 1)[-1]}]), got {type_name(table)}")
    check_keys(table, CONTEXT_KEYS, where)
    if "auth_key" in table and "auth_key_file" in table:
        fail(where, "set only one of auth_key and auth_key_file, not both")
    values: Values = {}
    for key, raw in table.items():
        here = f"{where}.{key}"
        parsed = (parse_listeners(raw, here) if key == "listeners"
                  else parse_field(key, raw, here, from_env=False, base=base, env=env))
        values[key] = (parsed, here)
    return values


def _parse_file(path: Path, env: Mapping[str, str]) -> tuple[Config, dict[str, Values]]:
    doc = _read_toml(path)
    check_keys(doc, ("default_context", "contexts"), f"{path}:")
    contexts = doc.get("contexts")
    if not isinstance(contexts, dict) or not contexts:
        fail(str(path), "no contexts defined (add a [contexts.<name>] table)"
             if contexts is None or contexts == {} else
             f"contexts: expected a table of [contexts.<name>] tables, got {type_name(contexts)}")
    parsed: dict[str, Values] = {}
    for name, table in contexts.items():
        where = f"{path}: contexts.{key_repr(name)}"
        _check_name(name, where)
        parsed[name] = _parse_table(table, where, path.parent, env)
    default = doc.get("default_context")
    if default is not None and not isinstance(default, str):
        fail(f"{path}: default_context", f"expected a context name, got {type_name(default)}")
    if default is not None and default not in parsed:
        fail(f"{path}: default_context",
             f"no context {describe(default)} (available: {', '.join(parsed)})")
    config = Config(path=path, default_context=default, contexts=tuple(parsed))
    return config, parsed


def _select(config: Config, context: str | None, env: Mapping[str, str]) -> str:
    available = f"(available: {', '.join(config.contexts)})"
    if context is not None:
        where, name = str(config.path), context
    elif (value := _env(env, "SUNBEAM_CONTEXT")) is not None:
        where, name = "SUNBEAM_CONTEXT", value.strip()
    elif config.default_context is not None:
        return config.default_context
    elif len(config.contexts) == 1:
        return config.contexts[0]
    else:
        fail(str(config.path), "several contexts and no default_context; pick one with the "
                               f"context option, SUNBEAM_CONTEXT or default_context {available}")
    if name not in config.contexts:
        where_file = "" if where == str(config.path) else f" in {config.path}"
        fail(where, f"no context {describe(name)}{where_file} {available}")
    return name


def _apply_env(values: Values, env: Mapping[str, str]) -> None:
    try:
        cwd = Path.cwd()
    except OSError:
        cwd = Path("/")
    if _env(env, "SUNBEAM_AUTH_KEY") and _env(env, "SUNBEAM_AUTH_KEY_FILE"):
        fail("SUNBEAM_AUTH_KEY, SUNBEAM_AUTH_KEY_FILE", "set only one of them, not both")
    for var, key in ENV_VARS.items():
        if (text := _env(env, var)) is None:
            continue
        if key in ("auth_key", "auth_key_file"):
            values.pop("auth_key", None)
            values.pop("auth_key_file", None)
        values[key] = (parse_field(key, text, var, from_env=True, base=cwd, env=env), var)


def _build(name: str, values: Values, where: str, path: Path | None,
           env: Mapping[str, str], need_auth: bool = True) -> Context:
    if "control_url" not in values:
        fail(f"{where}.control_url" if path else where, "required (or set SUNBEAM_CONTROL_URL)")
    if "auth_key_file" in values:
        key_path, key_where = values["auth_key_file"]
        auth_key, key_file = read_key_file(key_path, key_where), key_path
    elif "auth_key" in values:
        auth_key, key_file = values["auth_key"][0], None
    elif not need_auth:
        auth_key, key_file = Secret(""), None
    else:
        fail(where, "needs auth_key or auth_key_file (or set SUNBEAM_AUTH_KEY or SUNBEAM_AUTH_KEY_FILE)")
    if "ca_file" in values:
        check_ca_file(*values["ca_file"])
    given = {key: value for key, (value, _) in values.items()}
    given.pop("auth_key", None)
    given.pop("auth_key_file", None)
    given.setdefault("hostname", default_hostname())
    given.setdefault("state_dir", _xdg(env, "XDG_STATE_HOME", ".local/state") / "sunbeam" / name)
    given.setdefault("runtime_dir", default_runtime_dir(name, env))
    return Context(name=name, auth_key=auth_key, auth_key_file=key_file,
                   config_path=path, **given)


def read_config(path: str | os.PathLike[str] | None = None, *,
                env: Mapping[str, str] = os.environ) -> Config:
    """Check a whole configuration file and outline it (key files are not read)."""
    found = _locate(path, env)
    if found is None:
        raise ConfigNotFound(f"{default_config_path(env)}: config file not found")
    return _parse_file(found, env)[0]


def load_config(path: str | os.PathLike[str] | None = None, *, context: str | None = None,
                env: Mapping[str, str] = os.environ, need_auth: bool = True) -> Context:
    """Load, validate and complete one context; raises :class:`ConfigError` (one line).

    ``need_auth=False`` (sunbeam-ctl, which only needs the runtime dir) accepts a context
    without an auth key; its ``auth_key`` is then an empty `Secret`."""
    found = _locate(path, env)
    if found is None:
        if _env(env, "SUNBEAM_CONTROL_URL") is None:
            raise ConfigNotFound(f"{default_config_path(env)}: config file not found (create it, name one with "
                                 "SUNBEAM_CONFIG, or configure with SUNBEAM_CONTROL_URL and SUNBEAM_AUTH_KEY)")
        if context is not None:
            name = _check_name(context, "context")
        elif (value := _env(env, "SUNBEAM_CONTEXT")) is not None:
            name = _check_name(value.strip(), "SUNBEAM_CONTEXT")
        else:
            name = "default"
        values: Values = {}
        _apply_env(values, env)
        return _build(name, values, "environment", None, env, need_auth)
    config, parsed = _parse_file(found, env)
    name = _select(config, context, env)
    values = dict(parsed[name])
    _apply_env(values, env)
    return _build(name, values, f"{found}: contexts.{name}", found, env, need_auth)


__all__ = ["ENV_VARS", "ConfigError", "ConfigNotFound", "default_config_path", "default_runtime_dir", "load_config", "read_config"]
