"""A server's HTTP answer, told in one line a person can read::

    HTTP 404 Not Found from http://127.0.0.1:8000/key: not a Tailscale/Headscale control
    server? (body: 'Error response Error code: 404 Message: File not found. Error code...')

(one line; wrapped here). Status code, reason phrase (the server's, else the standard one),
where from, a hint, and at most `MAX_EXCERPT` characters of the body: an HTML page loses
its ``<head>``, scripts, styles, comments and tags, entities are decoded, whitespace runs
become one space. The server chose every byte of the reason and the body, so control and
format characters (C0, C1, DEL, bidi overrides, line separators) become spaces before
anything is shown: no escape sequence of theirs reaches a terminal that prints our status.

Sans-IO: text in, text out.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["MAX_EXCERPT", "NOT_CONTROL_SERVER", "describe_answer", "excerpt", "printable"]

MAX_EXCERPT = 80
MAX_REASON = 40
NOT_CONTROL_SERVER = "not a Tailscale/Headscale control server?"

_UNSHOWN = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_HIDDEN_BLOCKS = re.compile(r"<(head|script|style)\b.*?</\1\s*>|<!--.*?-->", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]*>")


def printable(text: str) -> str:
    """``text`` on one line: control and format characters become spaces, whitespace runs
    one space, no leading or trailing space."""
    shown = "".join(" " if unicodedata.category(c) in _UNSHOWN else c for c in text)
    return " ".join(shown.split())


def _decode(data: bytes | str) -> str:
    return data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data


def excerpt(body: bytes | str, limit: int = MAX_EXCERPT) -> str:
    """At most ``limit`` characters of ``body``'s text; cut at a word, ``...`` marks a cut.
    A body that starts with ``<`` is taken for markup and its tags are dropped (plain text
    keeps its angle brackets: Go prints ``<nil>``)."""
    text = _decode(body[: 16 * 1024])
    if text.lstrip().startswith("<"):
        text = _TAG.sub(" ", _HIDDEN_BLOCKS.sub(" ", text))
        import html  # only for an unexpected answer: html.entities is a ~0.3 MB table

        text = html.unescape(text)  # before `printable`: "&#27;" is an escape character too
    text = printable(text)
    if len(text) <= limit:
        return text
    cut = text[: limit - 3]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" .,;:") + "..."


def describe_answer(status: int, reason: bytes | str = "", body: bytes | str = b"", *,
                    source: str | None = None, hint: str | None = None) -> str:
    """One line for an HTTP answer: ``HTTP <status> <reason>[ from <source>][: <hint>]
    [ (body: '<excerpt>')]``. ``reason`` empty (HTTP/2 has none): the standard phrase."""
    phrase = printable(_decode(reason))[:MAX_REASON]
    if not phrase:
        from http import HTTPStatus  # a rare path: the enum costs ~0.1 MB

        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
    line = f"HTTP {status} {phrase}".rstrip()
    if source:
        line += f" from {printable(source)}"
    if hint:
        line += f": {hint}"
    text = excerpt(body)
    return f"{line} (body: '{text}')" if text else line
