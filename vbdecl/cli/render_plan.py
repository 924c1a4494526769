"""Printing plans for people: the plain text of :mod:`vbdecl.plan.text`,
coloured with rich when stdout is a terminal (rich is imported only then)."""

from __future__ import annotations

import os
import sys
from typing import TextIO

_STYLES = {"+": "green", "~": "yellow", "-": "red", "-/+": "magenta"}


def _use_color(stream: TextIO) -> bool:
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return bool(getattr(stream, "isatty", lambda: False)())


def print_lines(lines: list[str], stream: TextIO | None = None) -> None:
    out = stream or sys.stdout
    if not _use_color(out):
        out.write("\n".join(lines) + "\n")
        return
    from rich.console import Console
    from rich.text import Text

    console = Console(file=out, highlight=False, soft_wrap=True)
    for line in lines:
        stripped = line.lstrip()
        indent = line[: len(line) - len(stripped)]
        symbol = stripped.split(" ", 1)[0]
        style = _STYLES.get(symbol)
        if style is None:
            bold = line.startswith(("Plan:", "Environment ", "No changes"))
            console.print(Text(line, style="bold" if bold else ""))
            continue
        text = Text(indent)
        text.append(symbol, style=f"bold {style}")
        rest = stripped[len(symbol):]
        body, sep, comment = rest.partition("  # ")
        text.append(body)
        if sep:
            text.append(sep + comment, style="dim")
        console.print(text)
