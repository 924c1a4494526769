"""Formatting of values for plans and reasons (sizes, modes, commands)."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


_UNITS = (("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10))


def size(n: int | None) -> str:
    """``536870912`` -> ``512Mi``; bytes when no binary unit divides it."""
    if n is None:
        return "none"
    for unit, mult in _UNITS:
        if n and n % mult == 0:
            return f"{n // mult}{unit}"
    return str(n)


def mode(m: int | None) -> str:
    return "default" if m is None else f"{m:04o}"


# What shlex.quote leaves as it is ([^\w@%+=:,./-] with re.ASCII needs quoting).
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@%+=:,./-")


def command(argv: list[str] | None) -> str:
    if not argv:
        return "/bin/sh"
    if all(a and _PLAIN.issuperset(a) for a in argv):
        return " ".join(argv)       # the common case, without importing shlex (and re) for vb
    import shlex

    return " ".join(shlex.quote(a) for a in argv)


_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(c: str) -> str:
    if c in _NAMED:
        return _NAMED[c]
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def printable(text: str) -> str:
    """``text`` on one line: characters that are not printable (newlines, other
    control characters, line and paragraph separators) as backslash escapes
    (``\\n``, ``\\x1b``, ``\\u2028``). For reasons: other text stays as it is."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape_char(c) for c in text)


#: what separates an action id from its reason in plan text
SEPARATOR = "  # "


def action_id(ident: str) -> str:
    """An action id for a line of text, unambiguously: backslashes doubled and
    unprintable characters escaped as :func:`printable` does, and the ``#`` of a
    ``"  # "`` in the id (a target may hold one) as ``\\x23``, so the first
    ``"  # "`` of a plan line always ends its id. The escapes are Python's
    string escapes; ``--json`` has the ids as they are."""
    if ident.isprintable() and "\\" not in ident and SEPARATOR not in ident:
        return ident
    text = "".join(c if c.isprintable() and c != "\\" else "\\\\" if c == "\\" else _escape_char(c)
                   for c in ident)
    while SEPARATOR in text:   # (a loop: "  #  # " holds a second one once the first goes)
        text = text.replace(SEPARATOR, "  \\x23 ")
    return text


def rlimit(pair: list[int], infinity: int) -> str:
    """``[1024, 1024]`` -> ``1024``; ``[1024, 4096]`` -> ``1024:4096`` (soft:hard)."""
    soft, hard = ("unlimited" if x == infinity else str(x) for x in pair)
    return soft if soft == hard else f"{soft}:{hard}"


def value(v: Any, limit: int = 48) -> str:
    """A short, stable rendering of any plain value for a reason line."""
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    import json

    if isinstance(v, str):
        text = json.dumps(v, ensure_ascii=False)
        if text == f'"{v}"' and v and " " not in v and "#" not in v:
            text = v
    else:
        text = json.dumps(v, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    if len(text) > limit and isinstance(v, str):
        # the middle goes: two long paths differ at their ends as often as not
        keep = limit - 3
        text = text[: keep - keep // 2] + "..." + text[len(text) - keep // 2:]
    elif len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def where_differ(a: str, b: str, limit: int = 48) -> tuple[str, str]:
    """Two long texts, each cut to ``limit`` around where they first differ (``...``
    where they are cut), so that two that read alike once shortened do not."""
    start = 0
    while start < min(len(a), len(b)) and a[start] == b[start]:
        start += 1
    start = max(0, start - limit // 3)

    def cut(text: str) -> str:
        head = "..." if start else ""
        body = text[start:]
        return head + (body if len(head + body) <= limit else body[: limit - len(head) - 3] + "...")

    return cut(a), cut(b)
