"""Plain-text rendering of plans and graphs (the golden files are this text).

The CLI colours it with rich when writing to a terminal; the words and the
line shapes are fixed here: ``<symbol> <action id>  # reason``.
"""

from __future__ import annotations

from typing import Any

from vbdecl.plan import fmt
from vbdecl.plan.diff import METADATA, Change, summary

LEGEND = (("+", "create"), ("~", "update in place"), ("-", "destroy"),
          ("-/+", "replace (destroy, then create)"))


def summary_line(changes: list[Change]) -> str:
    s = summary(changes)
    return f"Plan: {s['add']} to add, {s['change']} to change, {s['destroy']} to destroy."


def render_plan(name: str, changes: list[Change], *, compared: bool = False) -> list[str]:
    """The lines for one environment's plan (``compared``: of a comparison, `vbdecl
    diff`, where there is no manifest to match and nothing is applied)."""
    lines = [f"Environment {name}:"]
    drift = [c for c in changes if c.drift]
    todo = [c for c in changes if not c.drift]
    used = {c.symbol for c in todo if c.symbol}
    if drift:
        lines.append("")
        lines.append("Note: objects changed outside vbdecl since the last apply:")
        lines += ["  " + c.line() for c in drift]
    if not any(c.symbol for c in todo):
        lines.append("")
        if any(not c.symbol for c in todo):
            lines += [c.line() for c in todo]
            lines.append("")
        if any(c.kind == METADATA for c in todo):
            lines.append(f"No changes on the host: only {name}'s metadata differs"
                         + ("." if compared else " from its manifest."))
        else:
            lines.append(f"No changes: {name} is the same in both." if compared
                         else f"No changes: {name} matches its manifest.")
        return lines
    lines.append("")
    lines.append("Actions are shown with these symbols:")
    lines += [f"  {sym} {word}" for sym, word in LEGEND if sym in used]
    lines.append("")
    lines += [c.line() for c in todo]
    lines.append("")
    lines.append(summary_line(changes))
    return lines


def plan_json(plan: dict[str, Any], changes: list[Change], state: dict[str, Any] | None) -> dict[str, Any]:
    """The documented JSON of one environment's plan (``vbdecl plan --json``):
    ``unchanged`` lists the plan's actions no change touches, with or without -v
    (which only adds them to the text)."""
    touched = {c.id for c in changes if not c.drift and c.symbol}
    return {
        "name": plan["name"],
        "manifest_hash": plan["manifest_hash"],
        "tool_version": plan["tool_version"],
        "state": state_ref(state),
        "drift": [c.to_json() for c in changes if c.drift],
        "changes": [c.to_json() for c in changes if not c.drift and c.symbol],
        "metadata_changed": any(c.kind == METADATA for c in changes),
        "unchanged": [a["id"] for a in plan.get("actions") or [] if a["id"] not in touched],
        "summary": summary(changes),
    }


def render_all(results: list[tuple[dict[str, Any], dict[str, Any] | None, list[Change]]], *,
               compared: bool = False) -> tuple[list[str], dict[str, Any]]:
    """Text lines and the ``--json`` document for the plans of one file:
    ``results`` holds (plan, recorded state, changes) per environment."""
    from vbdecl.plan.diff import has_changes

    lines: list[str] = []
    docs = []
    for i, (plan, state, found) in enumerate(results):
        if i:
            lines.append("")
        lines += render_plan(plan["name"], found, compared=compared)
        docs.append(plan_json(plan, found, state))
    changed = any(has_changes(found) for _, _, found in results)
    return lines, {"format": 1, "changed": changed, "plans": docs}


def state_ref(state: dict[str, Any] | None) -> dict[str, Any]:
    """Lineage and serial of a recorded state (``null``/0 for no state)."""
    if not state:
        return {"lineage": None, "serial": 0}
    return {"lineage": state.get("lineage"), "serial": int(state.get("serial") or 0)}


# --- graphs -----------------------------------------------------------------


def _covers(parent: str, path: str) -> bool:
    return path == parent or parent == "/" or path.startswith(parent.rstrip("/") + "/")


def _parent(action: dict[str, Any], by_id: dict[str, dict[str, Any]]) -> str | None:
    """The dependency an action is drawn under: for a filesystem entry the
    entry on its nearest ancestor target, else its first dependency."""
    if action["id"] == "process":
        return "env"
    deps: list[str] = action["deps"]
    target = action["params"].get("target") if action["kind"].startswith("fs.") else None
    if isinstance(target, str):
        for dep in deps:
            dep_target = by_id.get(dep, {}).get("params", {}).get("target")
            if isinstance(dep_target, str) and _covers(dep_target, target):
                return dep
        if "rootfs" in by_id and action["id"] != "rootfs":
            return "rootfs"
    return deps[0] if deps else None


def render_tree(plan: dict[str, Any]) -> list[str]:
    """The action graph as a tree: each action under its first dependency
    (``process`` under ``env``); other dependencies are listed after it."""
    actions: list[dict[str, Any]] = plan["actions"]
    by_id = {a["id"]: a for a in actions}
    parent = {a["id"]: _parent(a, by_id) for a in actions}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for a in actions:
        children.setdefault(parent[a["id"]], []).append(a)
    lines: list[str] = []

    def walk(a: dict[str, Any], prefix: str, last: bool, top: bool) -> None:
        others = [fmt.action_id(d) for d in a["deps"] if d != parent[a["id"]]]
        note = f"  (after {', '.join(others)})" if others else ""
        label = f"{fmt.action_id(a['id'])}  [{a['kind']}]{note}"
        if top:
            lines.append(label)
            child_prefix = ""
        else:
            lines.append(prefix + ("└── " if last else "├── ") + label)
            child_prefix = prefix + ("    " if last else "│   ")
        kids = children.get(a["id"], [])
        for i, kid in enumerate(kids):
            walk(kid, child_prefix, i == len(kids) - 1, False)

    for root in children.get(None, []):
        walk(root, "", True, True)
    return lines


def render_dot(plan: dict[str, Any]) -> list[str]:
    """Graphviz: an edge from each dependency to its dependent."""

    def q(s: str) -> str:
        # one statement per line: a newline as DOT's own \n (a line break in a label)
        return '"' + fmt.printable(s.replace("\\", "\\\\").replace('"', '\\"')) + '"'

    lines = [f"digraph {q(plan['name'])} {{", "  rankdir=LR;", "  node [shape=box];"]
    for a in plan["actions"]:
        lines.append(f"  {q(a['id'])} [tooltip={q(a['describe'])}];")
    for a in plan["actions"]:
        for dep in a["deps"]:
            lines.append(f"  {q(dep)} -> {q(a['id'])};")
    lines.append("}")
    return lines
