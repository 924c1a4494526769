"""Reading the recorded state of an environment (read-only for the planner).

The engine writes ``<state>/envs/<name>/state.json``; the planner only
reads it, to compare it with the desired plan.
"""

from __future__ import annotations

import json
import os
from typing import Any

from vbdecl.errors import StateError


def state_path(name: str, state_dir: str | None = None) -> str:
    from vbdecl.engine import paths

    return os.fspath(paths.state_file(name, state_dir))


def read_state(name: str, state_dir: str | None = None) -> dict[str, Any] | None:
    """The recorded state of ``name``, or None when it was never applied."""
    path = state_path(name, state_dir)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StateError(f"cannot read the state of {name}: {exc}", where=path,
                         hint="run `vbdecl recover " + name + "`, or move the file away to start over") from None
    if not isinstance(data, dict) or data.get("format") != 1:
        raise StateError(f"unknown state format in {path}", where=path,
                         hint="this state was written by another vbdecl version")
    return data
