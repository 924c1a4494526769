"""The engine's own change computation (used when the planner's diff is absent)
and the executor's step ordering, on fixtures."""

from __future__ import annotations

from typing import Any

from vbdecl.engine.changes import compute


def _a(aid: str, kind: str = "k", params: Any = None, deps: list[str] | None = None,
       replace: bool = False) -> dict[str, Any]:
    return {"id": aid, "kind": kind, "params": params or {}, "deps": deps or [], "replace": replace}


def _res(plan: dict[str, Any]) -> dict[str, Any]:
    return {a["id"]: {"kind": a["kind"], "params": a["params"], "record": {"ok": 1}}
            for a in plan["actions"]}


def test_no_changes_for_the_same_plan() -> None:
    plan = {"actions": [_a("env"), _a("x", deps=["env"])]}
    cs = compute(_res(plan), plan, plan, can_update=lambda k: True)
    assert not cs and cs.todo == []


def test_create_update_destroy_replace() -> None:
    old = {"actions": [_a("env"), _a("a", params={"v": 1}, deps=["env"]),
                       _a("b", params={"v": 1}, deps=["env"]), _a("gone", deps=["env"])]}
    new = {"actions": [_a("env"), _a("a", params={"v": 2}, deps=["env"]),
                       _a("b", kind="noupd", params={"v": 2}, deps=["env"]),
                       _a("c", deps=["b"]), _a("new", deps=["env"])]}
    res = _res(old)
    res["c"] = {"kind": "k", "params": {}, "record": {}}
    cs = compute(res, old, new, can_update=lambda k: k != "noupd")
    sym = {c.id: c.symbol for c in cs.todo}
    assert sym == {"gone": "-", "a": "~", "b": "-/+", "c": "-/+", "new": "+"}
    assert cs.todo[0].line() == "- gone  # no longer in the manifest"


def test_replace_flag_replaces_everything() -> None:
    old = {"actions": [_a("env", params={"ns": 1}, replace=True), _a("x", deps=["env"])]}
    new = {"actions": [_a("env", params={"ns": 2}, replace=True), _a("x", deps=["env"])]}
    cs = compute(_res(old), old, new, can_update=lambda k: True)
    assert {c.id: c.symbol for c in cs.todo} == {"env": "-/+", "x": "-/+"}


def test_drift_gone_recreates() -> None:
    plan = {"actions": [_a("env"), _a("x", deps=["env"]), _a("y", deps=["x"])]}
    cs = compute(_res(plan), plan, plan, can_update=lambda k: True,
                 probe=lambda rid, res: "gone" if rid == "x" else None)
    assert {c.id: c.symbol for c in cs.todo} == {"x": "-/+", "y": "-/+"}
    assert [(c.symbol, c.id) for c in cs.drift] == [("-", "x")]
