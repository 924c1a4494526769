"""``vbdecl plan FILE``: what an apply would change, Terraform style."""

from __future__ import annotations

import argparse
import json
from typing import Any

HELP = "show what `apply` would change (drift first, then one line per change)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="the manifest")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also list the actions that do not change")
    parser.add_argument("--detailed-exitcode", action="store_true",
                        help="exit 0 when there are no changes, 1 on error, 2 when there are changes")
    parser.add_argument("-o", "--out", metavar="PLANFILE",
                        help="save the plan for `vbdecl apply PLANFILE`")
    parser.add_argument("--no-refresh", action="store_true",
                        help="do not probe live objects for drift; compare with the recorded state only")
    parser.add_argument("--no-cache", action="store_true", help="compile even if a cached plan exists")


def plan_changes(plan: dict[str, Any], state: dict[str, Any] | None, state_dir: str | None,
                 *, refresh: bool, verbose: bool) -> list[Any]:
    """The changes for one environment. With ``refresh`` and a recorded
    state, the engine probes the recorded resources (drift) and runs them
    through :func:`vbdecl.plan.diff.changes`."""
    from vbdecl.plan.diff import changes, with_unchanged

    if refresh and state and state.get("resources"):
        from vbdecl.engine.executor import Engine

        found = list(Engine(state_dir).changes(plan, probe=True).changes)
        return with_unchanged(plan, found) if verbose else found
    return changes(plan, state, None, verbose=verbose)


def run(args: argparse.Namespace) -> int:
    from vbdecl.cli.render_plan import print_lines
    from vbdecl.errors import UsageError
    from vbdecl.plan import saved as saved_mod
    from vbdecl.plan.cache import plans_for_file
    from vbdecl.plan.diff import has_changes, summary
    from vbdecl.plan.state import read_state
    from vbdecl.plan.text import plan_json, render_plan, state_ref

    plans = plans_for_file(args.file, use_cache=not args.no_cache)
    lines: list[str] = []
    out_json: list[dict[str, Any]] = []
    saved: list[dict[str, Any]] = []
    changed = False
    for i, plan in enumerate(plans):
        state = read_state(plan["name"], args.state_dir)
        found = plan_changes(plan, state, args.state_dir, refresh=not args.no_refresh,
                             verbose=args.verbose)
        changed = changed or has_changes(found)
        if i:
            lines.append("")
        lines += render_plan(plan["name"], found)
        out_json.append(plan_json(plan, found, state))
        saved.append(saved_mod.build(plan, state_ref(state), summary(found),
                                     [c.to_json() for c in found if c.symbol], None, None))
    if args.out:
        if len(saved) != 1:
            raise UsageError(f"{args.file} holds {len(saved)} environments; -o saves the plan of one",
                             hint="put each environment in its own file to save its plan")
        with open(args.file, "rb") as f:
            data = f.read()
        meta = saved_mod.build(plans[0], saved[0]["state"], saved[0]["summary"],
                               saved[0]["saved"]["changes"], args.file, data)
        saved_mod.save(args.out, meta)
        if not args.json:
            lines += ["", f"Saved the plan to {args.out}; apply it with `vbdecl apply {args.out}`."]
    if args.json:
        print(json.dumps({"format": 1, "changed": changed, "plans": out_json}, indent=2,
                         ensure_ascii=False))
    else:
        print_lines(lines)
    if args.detailed_exitcode and changed:
        return 2
    return 0
