"""Saved plans (``vbdecl plan FILE -o PLAN``) and their staleness check.

A saved plan is the compiled plan of one environment (so it can be applied
as it is) plus ``state``: the lineage and serial of the state it was made
against (``null`` and 0 for an environment never applied), ``summary``,
and ``saved``: the tool version, the manifest file and the hash of its
bytes, and the changes shown. ``vbdecl apply PLAN`` refuses it when any of
those no longer match (:func:`check_fresh`).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from vbdecl import __version__
from vbdecl.errors import StalePlanError

KIND = "vbdecl.saved-plan"


def file_hash(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def build(plan: dict[str, Any], state: dict[str, Any], summary: dict[str, int],
          changes: list[dict[str, Any]], source_path: str | None,
          source_bytes: bytes | None) -> dict[str, Any]:
    """The saved plan of one environment: the compiled plan itself (so the
    engine can apply it as is) plus ``state`` (``{"lineage", "serial"}``),
    ``summary`` and ``saved`` (what makes it checkable)."""
    return {
        **plan,
        "state": state,
        "summary": summary,
        "saved": {
            "kind": KIND,
            "tool_version": __version__,
            "file": None if source_path is None else os.path.abspath(source_path),
            "file_hash": None if source_bytes is None else file_hash(source_bytes),
            "changes": changes,
        },
    }


def plan_of(saved: dict[str, Any]) -> dict[str, Any]:
    """The compiled plan inside a saved plan."""
    return {k: v for k, v in saved.items() if k not in ("state", "summary", "saved")}


def stale_reason(saved: dict[str, Any], state: dict[str, Any] | None) -> str | None:
    """Why a saved plan can no longer be applied to ``state``, or None."""
    meta = saved.get("saved") or {}
    made_by = meta.get("tool_version") or saved.get("tool_version")
    if made_by != __version__:
        return f"it was made by vbdecl {made_by}, this is {__version__}"
    if meta.get("file") and meta.get("file_hash"):
        try:
            with open(meta["file"], "rb") as f:
                now = file_hash(f.read())
        except OSError as err:
            return f"the manifest {meta['file']} can no longer be read ({err.strerror})"
        if now != meta["file_hash"]:
            return f"the manifest {meta['file']} changed since the plan was made"
    want = saved.get("state") or {}
    lineage = state.get("lineage") if state else None
    serial = int(state.get("serial") or 0) if state else 0
    if want.get("lineage") != lineage or int(want.get("serial") or 0) != serial:
        return _state_moved(str(saved.get("name")), want, state)
    return None


def _state_moved(name: str, want: dict[str, Any], state: dict[str, Any] | None) -> str:
    """How the state of ``name`` moved on from ``want`` (the saved plan's lineage and
    serial) to ``state``, in words: a lineage is an id no reader knows."""
    was_serial = int(want.get("serial") or 0)
    if state is None:
        return f"{name} was destroyed since the plan was made (at serial {was_serial})"
    now = f"{name} is now at revision {int(state.get('revision') or 0)} " \
          f"(serial {int(state.get('serial') or 0)})"
    if want.get("lineage") is None:
        return f"the plan was made before {name} was applied; {now}"
    if want.get("lineage") != state.get("lineage"):
        return f"{name} was destroyed and applied anew since the plan was made; {now}"
    return f"{name} changed since the plan was made at serial {was_serial}; {now}"


def check_fresh(saved: dict[str, Any], state: dict[str, Any] | None) -> None:
    """Raise :class:`StalePlanError` when the saved plan is stale."""
    why = stale_reason(saved, state)
    if why:
        raise StalePlanError(f"the saved plan is stale: {why}", where=saved.get("name"),
                             hint="run `vbdecl plan` again (with -o to save it) and apply that")
