"""Configuration errors and the helpers that phrase them.

Every problem with the configuration file (see ``sunbeam.shared.config.load`` for the
format) or the ``SUNBEAM_*`` environment variables is reported as a single
:class:`ConfigError` whose text is one line naming *where* and *what*::

    /home/me/.config/sunbeam/config.toml: contexts.home.wg_workers: expected an integer from 1 to 64, got "two"
    SUNBEAM_WG_WORKERS: expected an integer from 1 to 64, got "x"

The auth key is never quoted in an error: values of secret fields are described only by
their type (see :func:`type_name`).
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Iterable
from typing import NoReturn

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


class ConfigError(Exception):
    """An invalid configuration, as one line: ``<where>: <key path>: <problem>``."""

    def __init__(self, message: str) -> None:
        super().__init__(message.replace("\r", " ").replace("\n", " "))


class ConfigNotFound(ConfigError):
    """No configuration file where one was looked for (the message names the path)."""


def fail(where: str, problem: str) -> NoReturn:
    """Raise ``ConfigError("<where>: <problem>")``."""
    raise ConfigError(f"{where}: {problem}")


def type_name(value: object) -> str:
    """A TOML-flavoured name for the type of *value* ("a string", "a table", ...)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, (datetime.date, datetime.time)):
        return "a date/time"
    return type(value).__name__


def _quote(text: str) -> str:
    if len(text) > 60:
        text = text[:57] + "..."
    quoted = json.dumps(text, ensure_ascii=False)
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in quoted)


def describe(value: object) -> str:
    """Render a (non-secret) value for an error message, on one short line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if abs(value) < 10**30 else "a very large integer"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return _quote(value)
    return type_name(value)


def key_repr(key: str) -> str:
    """A key as it appears in a TOML key path: bare when possible, else quoted."""
    return key if _BARE_KEY.fullmatch(key) else _quote(key)


def suggest(key: str, allowed: Iterable[str]) -> str:
    """Say what an unknown *key* may have meant: a close match, else the allowed keys."""
    options = sorted(allowed)
    import difflib  # here: only a config mistake needs it, and every service loads this module

    close = difflib.get_close_matches(key, options, n=1, cutoff=0.6)
    if close:
        return f'did you mean "{close[0]}"?'
    return "expected one of: " + ", ".join(options)


def child(where: str, key: str) -> str:
    """The path of *key* inside the table at *where* (``"file:"`` for the top level)."""
    return f"{where} {key_repr(key)}" if where.endswith(":") else f"{where}.{key_repr(key)}"


def check_keys(table: dict[str, object], allowed: Iterable[str], where: str) -> None:
    """Reject the first key of *table* not in *allowed*; *where* is the table's path."""
    allowed = frozenset(allowed)
    for key in table:
        if key not in allowed:
            fail(child(where, key), f"unknown key ({suggest(key, allowed)})")
