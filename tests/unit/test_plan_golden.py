"""Golden plans: tests/plans/<case>/ (see tests/plans/README.md).

Each case has ``manifest.yaml``; optionally ``before.yaml`` (the manifest
last applied, from which ``state.json`` is made), ``records.json`` (records
to put in that state) and ``live.json`` (probe results: drift). The
expected output is ``plan.txt`` (text of ``vbdecl plan``) and ``plan.json``
(``vbdecl plan --json``). ``VBDECL_REGEN_GOLDEN=1`` rewrites them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from vbdecl.model import load_normalized
from vbdecl.plan.compile import compile_doc
from vbdecl.plan.diff import changes, state_of
from vbdecl.plan.text import render_all

CASES = Path(__file__).resolve().parents[1] / "plans"
REGEN = os.environ.get("VBDECL_REGEN_GOLDEN") == "1"
NAMES = sorted(p.name for p in CASES.iterdir() if (p / "manifest.yaml").is_file())


def _compile(path: Path) -> list[dict[str, Any]]:
    plans = [compile_doc(doc) for doc in load_normalized(str(path))]
    for plan in plans:
        plan["source"] = None  # keep fixtures independent of the checkout's location
    return plans


def _state(case: Path, name: str) -> dict[str, Any] | None:
    path = case / "state.json"
    before = case / "before.yaml"
    if before.is_file() and (REGEN or not path.is_file()):
        records = {}
        if (case / "records.json").is_file():
            records = json.loads((case / "records.json").read_text())
        (plan,) = _compile(before)
        state = state_of(plan, records)
        state.update(instance="vb-1a2b3c4d", lineage="5b7c0e9a-2f64-4c1e-9d0b-6a3e8f1c2d40",
                     serial=3, revision=3)
        path.write_text(json.dumps(state, indent=1, sort_keys=True) + "\n")
    if not path.is_file():
        return None
    state = json.loads(path.read_text())
    return state if state.get("name") == name else None


def _render(case: Path) -> tuple[str, str]:
    live = None
    if (case / "live.json").is_file():
        live = json.loads((case / "live.json").read_text())
    results = []
    for plan in _compile(case / "manifest.yaml"):
        state = _state(case, plan["name"])
        results.append((plan, state, changes(plan, state, live)))
    lines, doc = render_all(results)
    return "\n".join(lines) + "\n", json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_there_are_enough_cases():
    assert len(NAMES) >= 25


@pytest.mark.parametrize("name", NAMES)
def test_golden(name: str) -> None:
    case = CASES / name
    text, doc = _render(case)
    if REGEN:
        (case / "plan.txt").write_text(text)
        (case / "plan.json").write_text(doc)
    assert text == (case / "plan.txt").read_text(), f"plan.txt of {name} differs (VBDECL_REGEN_GOLDEN=1 rewrites it)"
    assert doc == (case / "plan.json").read_text(), f"plan.json of {name} differs"
