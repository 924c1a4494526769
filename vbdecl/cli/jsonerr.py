"""An error as the last JSON line of a command's output (``--json``).

Standard library only, and small: ``vbdecl exec --json`` loads it before it
enters an environment, where vbdecl's own files are out of sight.
"""

from __future__ import annotations

import json

from vbdecl.errors import VbdeclError


def print_json_error(about: dict[str, object], code: int) -> None:
    """The error as the last JSON line of a command's output (stdout)."""
    try:
        print(json.dumps({"event": "error", "error": {**about, "exit_code": code}}), flush=True)
    except BrokenPipeError:
        pass


def error_json(err: VbdeclError) -> dict[str, object]:
    about: dict[str, object] = {"message": err.message, "where": err.where, "hint": err.hint}
    problems = getattr(err, "problems", None)
    if problems:
        about["problems"] = [p.to_json() for p in problems]
    reverts = getattr(err, "revert_errors", None)
    if reverts:
        about["revert_errors"] = [{"where": e.where, "message": e.message} for e in reverts]
    return about
