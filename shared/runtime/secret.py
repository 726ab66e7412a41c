"""`Secret`: a value that must never reach a log line, a repr or an exception message.

Wrap private keys, auth keys and tokens in `Secret` where they are loaded. ``str()``,
``repr()`` and ``format()`` all give ``'<redacted>'``; the JSON log formatter replaces a
`Secret` anywhere in a record's fields with the same string. The wrapped value comes out
only through `reveal()`, so every use of the secret is greppable. `Secret` is deliberately
not a ``str`` subclass: string concatenation or ``msgspec`` encoding fails instead of
silently leaking the value.
"""

from __future__ import annotations

from typing import NoReturn

__all__ = ["REDACTED", "Secret"]

REDACTED = "<redacted>"


class Secret:
    """An immutable wrapper around a secret ``str`` or ``bytes``."""

    __slots__ = ("_value",)
    _value: str | bytes

    def __init__(self, value: str | bytes) -> None:
        if not isinstance(value, (str, bytes)):
            raise TypeError("Secret wraps str or bytes")
        object.__setattr__(self, "_value", value)

    def reveal(self) -> str | bytes:
        """The wrapped value. Call it only where the secret is actually used."""
        return self._value

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Secret is immutable")

    def __repr__(self) -> str:
        return REDACTED

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret) or type(self._value) is not type(other._value):
            return NotImplemented
        import hmac  # here, not at the top: hmac loads OpenSSL's libcrypto (~0.5 MB per process)

        a, b = self._value, other._value
        if isinstance(a, str):
            return hmac.compare_digest(a.encode(), b.encode())  # type: ignore[union-attr]
        return hmac.compare_digest(a, b)  # type: ignore[arg-type]

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __reduce__(self) -> NoReturn:
        raise TypeError("Secret values are not pickled")
