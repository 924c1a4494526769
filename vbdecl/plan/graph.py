"""Ordering of the action graph: a stable topological order, cycles, teardown.

``order`` uses :class:`graphlib.TopologicalSorter` and breaks ties by the
order in which the compiler emitted the actions (which follows the
manifest), so the same graph always gives the same order.
"""

from __future__ import annotations

from vbdecl.errors import PlanError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    Action = dict[str, Any]


def order(actions: list[Action]) -> list[Action]:
    """Return ``actions`` in a valid topological order (stable tie-break).

    Raises :class:`PlanError` naming the actions when a dependency is not in
    the graph (unsatisfiable) or when the dependencies form a cycle.
    """
    index: dict[str, int] = {}
    backward = True
    for i, action in enumerate(actions):
        if action["id"] in index:
            raise PlanError(f"two actions have the id {action['id']!r}",
                            hint="this is a bug in the compiler; report it with the manifest")
        for dep in action["deps"]:
            if index.get(dep, i) >= i:
                backward = False
        index[action["id"]] = i
    if backward:
        # every dependency was emitted before its dependent: the emission
        # order is already the stable topological order the sorter would give
        return list(actions)
    return sorted_with_graphlib(actions, index)


def sorted_with_graphlib(actions: list[Action], index: dict[str, int] | None = None) -> list[Action]:
    """Kahn's algorithm through graphlib, ties broken by emission order."""
    # Imported here: the compiler emits dependencies first, so order() rarely gets
    # here, and vb compiles a plan on every start (graphlib and heapq: ~0.5 ms).
    import graphlib
    import heapq

    if index is None:
        index = {a["id"]: i for i, a in enumerate(actions)}
    sorter: graphlib.TopologicalSorter[int] = graphlib.TopologicalSorter()
    for i, action in enumerate(actions):
        deps = []
        for dep in action["deps"]:
            j = index.get(dep)
            if j is None:
                raise PlanError(
                    f"action {action['id']} depends on {dep}, which is not in the plan",
                    where=action["id"],
                    hint=f"add what {dep} stands for to the manifest, or remove what needs it",
                )
            deps.append(j)
        sorter.add(i, *deps)
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        cycle = [actions[i]["id"] for i in exc.args[1]]
        raise PlanError(
            "dependency cycle: " + " -> ".join(cycle),
            where=cycle[0],
            hint="these actions each need another one of them first; "
                 "reorder or change the manifest entries behind them",
        ) from None
    ready: list[int] = list(sorter.get_ready())
    heapq.heapify(ready)
    out: list[Action] = []
    while ready:
        i = heapq.heappop(ready)
        out.append(actions[i])
        sorter.done(i)
        for j in sorter.get_ready():
            heapq.heappush(ready, j)
    return out


def teardown(actions: list[Action]) -> list[Action]:
    """The order in which landed actions are reverted: the reverse."""
    return list(reversed(actions))


def check_order(actions: list[Action]) -> list[str]:
    """Problems with an ordered action list (empty when it is valid)."""
    seen: set[str] = set()
    problems = []
    for action in actions:
        for dep in action["deps"]:
            if dep not in seen:
                problems.append(f"{action['id']} comes before its dependency {dep}")
        seen.add(action["id"])
    return problems
