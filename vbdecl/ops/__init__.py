"""Ops: what to do for each kind of resource. ``sys`` knows how to ask the kernel.

An op is looked up by the action's ``kind`` through :data:`REGISTRY`, which
maps a kind to ``"module:Class"`` and is imported lazily, so that a plan
without networking never imports the network ops (or pyroute2).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:   # base imports dataclasses (and inspect): ~7 ms the run path does not need
    from collections.abc import Collection
    from typing import Any

    from vbdecl.ops.base import Op

REGISTRY: dict[str, str] = {
    # filled in by the families as they land; kind -> "vbdecl.ops.<module>:<Class>"
}


def register(kind: str, target: str) -> None:
    REGISTRY[kind] = target


_cache: dict[str, Op] = {}


def op_for(kind: str) -> Op:
    """The op that executes actions of ``kind``."""
    op = _cache.get(kind)
    if op is None:
        import importlib  # here: the run path imports this package but never looks up an op

        target = REGISTRY.get(kind)
        if target is None:
            # Families register themselves on import; try the family module by prefix.
            family = kind.split(".", 1)[0]
            try:
                importlib.import_module(f"vbdecl.ops.{family}")
            except ModuleNotFoundError:
                pass
            target = REGISTRY.get(kind)
        if target is None:
            raise KeyError(f"no op for action kind {kind!r}")
        module_name, _, cls_name = target.partition(":")
        cls: Any = getattr(importlib.import_module(module_name), cls_name)
        op = cls()
        _cache[kind] = op
    return op


def tidy_shared(ctx: Any, kinds: Collection[str], writer: int | None = None) -> None:
    """What a vbdecl killed in an action of ``kinds`` may have left of what the
    environments share, once its actions are reverted: the network's and NAT's files
    (ops.net.tidy, ops.nat.tidy; ``writer``: the killed vbdecl's pid), the cgroups'
    ``vbdecl`` parents (ops.cgroup.tidy)."""
    families = {kind.partition(".")[0] for kind in kinds}
    if "cgroup" in families:
        from vbdecl.ops import cgroup

        cgroup.tidy(ctx)
    if families & {"net", "nat"}:
        from vbdecl.ops import net

        net.tidy(ctx)
    if "nat" in families or "net.guard" in kinds:     # (the guard's registry is NAT's)
        from vbdecl.ops import nat

        nat.tidy(ctx, writer)


def let_go(instance: str) -> None:
    """The end of a transaction of ``instance``: let go of what its ops keep from one
    step to the next (ops.net's hold on the bridges, from a join until its veth is on
    the bridge), which a failure or a fault between the two steps may have left: a
    library runs many transactions in one process."""
    import sys

    net = sys.modules.get("vbdecl.ops.net")     # (not imported: nothing held)
    if net is not None:
        net.let_bridges_go(instance)


def preflight_problem(op: Op, params: dict[str, Any], name: str | None = None,
                      releasing: Collection[str] = (), state_dir: str | None = None,
                      plan: Collection[tuple[str, dict[str, Any]]] = ()) -> str | None:
    """Why ``op`` cannot make or update ``params`` for the environment ``name`` (of the
    state root ``state_dir``), as far as it can tell before anything changes
    (Op.preflight: a missing bind or file source, overlay lower; Op.preflight_plan,
    given the (kind, params) of the plan's actions: a port's host_ip that the host
    does not have, nor gets from a bridge of the plan; Op.conflict: what another
    environment holds, a published port, an explicit address, but for those in
    ``releasing``, which let it go before), or None. apply stops on it before its first
    step; plan reports it."""
    check = getattr(op, "preflight", None)
    problem = check(params) if check is not None else None
    in_plan = getattr(op, "preflight_plan", None)
    problem = problem or (in_plan(params, plan) if in_plan is not None else None)
    conflict = getattr(op, "conflict", None) if name is not None else None
    return problem or (conflict({name, *releasing}, params, state_dir) if conflict is not None else None)
