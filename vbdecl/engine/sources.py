"""What ``apply``/``destroy`` were pointed at: a manifest, a saved plan, a directory.

A *saved plan* is what ``vbdecl plan -o`` writes (``vbdecl.plan.saved``): a
compiled plan (``"format"`` and ``"actions"``) plus the state it was made
against (``"state"``: ``{"lineage", "serial"}``) and where it came from
(``"saved"``). Manifests are compiled through the planner (imported lazily).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vbdecl.errors import UsageError

MANIFEST_SUFFIXES = (".yaml", ".yml")


@dataclass
class Source:
    plan: dict[str, Any]
    saved: dict[str, Any] | None = None     # the saved-plan file's content, if a PLAN
    path: str | None = None


def is_saved_plan(path: Path) -> dict[str, Any] | None:
    if path.suffix in MANIFEST_SUFFIXES:
        return None
    try:
        with open(path, "rb") as f:
            head = f.read(1)
            if head not in (b"{", b" ", b"\n"):
                return None
            data = json.loads(head + f.read())
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and "actions" in data and "format" in data:
        return data
    return None


def compile_manifest(path: Path) -> list[dict[str, Any]]:
    """Every environment of a manifest file, compiled to plans."""
    from vbdecl.plan import compile as planner

    fn = getattr(planner, "compile_file", None)
    if fn is not None:
        return list(fn(str(path)))
    from vbdecl.model import load as loader
    from vbdecl.model import normalize as norm

    abspath = os.path.abspath(path)
    result = loader.load_path(abspath, display=str(path))
    result.raise_for_problems()
    plans = []
    for index, env in result.environments:
        doc = norm.normalize(env, base_dir=os.path.dirname(abspath),
                             source={"path": abspath, "document": index})
        plans.append(planner.compile_doc(doc))
    return plans


def manifests_in(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir()
                  if p.is_file() and p.suffix in MANIFEST_SUFFIXES and not p.name.startswith("."))


def load(target: str) -> list[Source]:
    """Plans for a FILE, PLAN or DIR argument."""
    path = Path(target)
    if not path.exists():
        raise UsageError(f"{target}: no such file or directory",
                         hint="give a manifest, a saved plan, or a directory of manifests")
    if path.is_dir():
        out = []
        for p in manifests_in(path):
            out += [Source(plan, None, str(p)) for plan in compile_manifest(p)]
        return out
    saved = is_saved_plan(path)
    if saved is not None:
        from vbdecl.plan.saved import plan_of

        plan = plan_of(saved)
        return [Source(plan, saved, str(path))]
    return [Source(plan, None, str(path)) for plan in compile_manifest(path)]

