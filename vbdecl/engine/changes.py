"""Plan-level changes: what an apply must do to get from the state to a plan.

When the planner's ``vbdecl.plan.diff.changes`` exists it is preferred for
the params diff; this module is the engine's own diff (state resources vs
plan actions), plus drift from live probes, plus the replace rules:

- ``+``   an action with no resource;
- ``~``   params changed and the op can update in place (``update``);
- ``-``   a resource no action wants any more;
- ``-/+`` params changed on an action marked ``replace`` (the whole
  environment is replaced), or the op cannot update, or the object is gone
  (drift); dependents of a replaced action are replaced too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Resource = dict[str, Any]
Action = dict[str, Any]


@dataclass
class Change:
    symbol: str                      # "+", "~", "-", "-/+"
    id: str
    kind: str
    reason: str = ""
    action: Action | None = None     # the new action (None for "-")
    old: Resource | None = None      # the current resource (None for "+")
    drift: bool = False

    def line(self) -> str:
        text = f"{self.symbol} {self.id}"
        return f"{text}  # {self.reason}" if self.reason else text

    def to_json(self) -> dict[str, Any]:
        return {"symbol": self.symbol, "id": self.id, "kind": self.kind, "reason": self.reason,
                "drift": self.drift}


@dataclass
class ChangeSet:
    """Changes (ours or the planner's ``vbdecl.plan.diff.Change``; same fields).

    Entries with ``drift=True`` are observations shown first; they are not steps.
    """

    changes: list[Any] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def todo(self) -> list[Any]:
        return [c for c in self.changes if c.symbol and not c.drift]

    @property
    def drift(self) -> list[Any]:
        return [c for c in self.changes if c.drift]

    def __bool__(self) -> bool:
        return bool(self.todo)

    def counts(self) -> dict[str, int]:
        out = {"+": 0, "~": 0, "-": 0, "-/+": 0}
        for c in self.todo:
            out[c.symbol] += 1
        return out

    def summary(self) -> str:
        c = self.counts()
        return (f"Plan: {c['+'] + c['-/+']} to add, {c['~']} to change, "
                f"{c['-'] + c['-/+']} to destroy.")


# A probe result per resource id: "gone", "drifted: <why>" or None (as recorded).
Prober = Callable[[str, Resource], str | None]


def compute(resources: dict[str, Resource], old_plan: dict[str, Any] | None,
            plan: dict[str, Any], *, can_update: Callable[[str], bool],
            probe: Prober | None = None) -> ChangeSet:
    actions: list[Action] = plan["actions"]
    wanted = {a["id"]: a for a in actions}
    dependents: dict[str, set[str]] = {a["id"]: set() for a in actions}
    for a in actions:
        for dep in a.get("deps", ()):
            dependents.setdefault(dep, set()).add(a["id"])

    symbol: dict[str, str] = {}
    reason: dict[str, str] = {}
    drift: set[str] = set()
    replace_all = False
    for a in actions:
        old = resources.get(a["id"])
        if old is None:
            symbol[a["id"]], reason[a["id"]] = "+", "new"
            continue
        if old.get("kind") != a["kind"]:
            symbol[a["id"]], reason[a["id"]] = "-/+", f"kind {old.get('kind')} -> {a['kind']}"
            continue
        if old.get("params") != a.get("params"):
            keys = sorted(k for k in set(old.get("params") or {}) | set(a.get("params") or {})
                          if (old.get("params") or {}).get(k) != (a.get("params") or {}).get(k))
            why = f"{', '.join(keys) or 'params'} changed"
            if a.get("replace"):
                replace_all = True
                symbol[a["id"]], reason[a["id"]] = "-/+", why + " (forces replacement)"
            elif can_update(a["kind"]):
                symbol[a["id"]], reason[a["id"]] = "~", why
            else:
                symbol[a["id"]], reason[a["id"]] = "-/+", why + " (cannot update in place)"
            continue
        if probe is not None:
            found = probe(a["id"], old)
            if found == "gone":
                symbol[a["id"]], reason[a["id"]] = "-/+", "drift: gone, recreate"
                drift.add(a["id"])
            elif found:
                drift.add(a["id"])
                if can_update(a["kind"]):
                    symbol[a["id"]], reason[a["id"]] = "~", f"drift: {found}, repair"
                else:
                    symbol[a["id"]], reason[a["id"]] = "-/+", f"drift: {found}, recreate"

    if replace_all:
        for a in actions:
            if a["id"] in resources and symbol.get(a["id"]) != "-/+":
                symbol[a["id"]], reason[a["id"]] = "-/+", "the environment is replaced"
    # Replacing an action replaces everything that depends on it.
    queue = [i for i, s in symbol.items() if s == "-/+"]
    while queue:
        cur = queue.pop()
        for dep in dependents.get(cur, ()):
            if dep in resources and symbol.get(dep) not in ("-/+",):
                symbol[dep] = "-/+"
                reason[dep] = reason.get(dep) or f"depends on {cur}, which is replaced"
                if not reason[dep].startswith("depends"):
                    reason[dep] += f"; depends on {cur}"
                queue.append(dep)

    out = ChangeSet()
    for a in actions:  # drift first, as observations (not steps)
        if a["id"] in drift:
            gone = reason[a["id"]].startswith("drift: gone")
            out.changes.append(Change("-" if gone else "~", a["id"], a["kind"],
                                      "deleted outside vbdecl" if gone else
                                      "changed outside vbdecl: " + reason[a["id"]][7:],
                                      old=resources.get(a["id"]), drift=True))
    old_order = [a["id"] for a in (old_plan or {}).get("actions", [])] if old_plan else []
    old_order += [i for i in resources if i not in old_order]
    for rid in reversed(old_order):
        if rid in resources and rid not in wanted:
            res = resources[rid]
            out.changes.append(Change("-", rid, res.get("kind", "?"), "no longer in the manifest",
                                      old=res))
    for a in actions:
        s = symbol.get(a["id"])
        if s is None:
            out.unchanged.append(a["id"])
            continue
        out.changes.append(Change(s, a["id"], a["kind"], reason.get(a["id"], ""), action=a,
                                  old=resources.get(a["id"])))
    return out
