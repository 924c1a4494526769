"""vbdecl apply FILE|PLAN|DIR: plan, show, confirm, then apply transactionally."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

HELP = "create or update environments from a manifest, a saved plan, or a directory"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from vbdecl.cli.progress import add_engine_options

    p.add_argument("target", metavar="FILE|PLAN|DIR",
                   help="a manifest, a saved plan (vbdecl plan -o), a directory of manifests, "
                        "or - for a manifest or plan on stdin (with -y)")
    add_engine_options(p)
    p.add_argument("--prune", action="store_true",
                   help="with a DIR: destroy environments that came from it and are no longer in it")


def run(args: argparse.Namespace) -> int:
    from vbdecl.cli.progress import (
        Renderer,
        check_can_ask,
        command_line,
        confirm,
        emit_json,
        interrupts_roll_back,
        plan_lines,
        warn_unknown_faults,
    )
    from vbdecl.engine import sources
    from vbdecl.engine.executor import Engine
    from vbdecl.errors import UsageError, VbdeclError

    check_can_ask(args.target, args.yes)
    if args.prune and not os.path.isdir(args.target):      # (before stdin is read and compiled)
        raise UsageError("--prune needs a directory", hint="vbdecl apply DIR --prune")
    sources_ = sources.load(args.target, allow_empty=args.prune)
    sources.check_unique_names([(s.path or args.target, s.plan) for s in sources_])
    from vbdecl.cli.cmd_plan import (
        check_live_rules,
        check_warnings,
        left_out_warnings,
        source_problems,
        sources_error,
        takeover_warning,
        usage_warnings,
    )

    for src in sources_:
        # as plan: limits this machine cannot enforce stop the apply before any step (a
        # review removed memory and kept memory_swap on cgroup v1: the environment stuck)
        check_live_rules(src.plan, src.path or args.target)
        if not args.json:
            check_warnings(src.plan, src.path or args.target)
    names = [s.plan["name"] for s in sources_]
    if not args.prune and not args.json and not any(s.saved is not None for s in sources_):
        left_out_warnings(args.target, names, args.state_dir)
    warn_unknown_faults([s.plan for s in sources_],
                        sources.prune_candidates(args.target, names, args.state_dir)
                        if args.prune and os.environ.get("VBDECL_FAULT") else [], args.state_dir)
    interrupts_roll_back()
    renderer = Renderer(args.json)
    engine = Engine(args.state_dir, on_event=renderer, lock_timeout=args.lock_timeout,
                    command=command_line())
    if len(sources_) > 1:
        # What one environment's apply would refuse before its first step (a missing
        # source) stops them all before the first one: a user review applied the first
        # environment of a file, then was told of the second's "nothing was changed".
        blocked = [(src.plan, src.path or args.target, problems) for i, src in enumerate(sources_)
                   if (problems := source_problems(engine.changes(src.plan).changes, src.plan["name"],
                                                   [s.plan for s in sources_[:i]], args.state_dir))]
        if blocked:
            raise sources_error(blocked, what="no environment was applied")
    results: list[dict[str, Any]] = []
    from vbdecl.engine import interrupts

    stopped: str | None = None      # an interrupt that came during a commit: the rest waits
    current = ""
    try:
        for src in sources_:
            name = current = src.plan["name"]
            if interrupts.pending():
                stopped = name
                break
            # (an earlier apply whose rollback cannot finish: go on from what it left)
            with engine.session(name, then="apply") as s:
                if src.saved is not None:
                    s.check_fresh(src.saved)
                elif sources.edited_since(src):
                    print(f"warning: {src.path} changed after this apply read it (it waited for the "
                          f"lock): {name} gets the manifest as it was read; apply again for the edit",
                          file=sys.stderr)
                changes = s.changes(src.plan)
                if not args.json:
                    takeover_warning(src.plan, s.state)
                    usage_warnings(src.plan, s.state)
                if args.json:
                    emit_json({"event": "plan", "name": name,
                               "changes": [c.to_json() for c in changes.changes]})
                else:
                    print("\n".join(plan_lines(name, changes)))
                if not changes:
                    s.apply(src.plan, changes)     # (commits what a stuck apply left, if so)
                    results.append({"name": name, "changed": False})
                    continue
                if not confirm(f"Apply these changes to {name}?", args.yes):
                    print(f"{name}: not applied", file=sys.stderr)
                    results.append({"name": name, "changed": False, "declined": True})
                    continue
                result = s.apply(src.plan, changes)
                results.append({"name": name, "changed": True, **result.to_json()})
                if not args.json:
                    print(f"{name}: applied revision {result.revision} "
                          f"({result.steps} step{'' if result.steps == 1 else 's'}, instance {result.instance})")
        if args.prune and stopped is None and not interrupts.pending():
            for name in sources.prune_candidates(args.target, names, engine.state_dir):
                current = ""        # (a failure here is this prune's: said by the error itself)
                if not args.json:
                    print(f"{name}: no longer in {args.target}: destroy")
                if not confirm(f"Destroy {name}?", args.yes):
                    print(f"{name}: not destroyed", file=sys.stderr)
                    results.append({"name": name, "pruned": False, "declined": True})
                    continue
                with engine.session(name, then="destroy") as s:
                    if s.state is None:
                        continue
                    s.destroy()
                results.append({"name": name, "pruned": True})
                if not args.json:
                    print(f"{name}: destroyed")
    except VbdeclError:
        if current and len(sources_) > 1 and not args.json:     # (the error names an action, not whose)
            done = [r["name"] for r in results if r.get("changed")]
            print(f"{current}: failed (the error follows); "
                  + (f"applied before it: {', '.join(done)}" if done else "no environment was applied")
                  + (f"; not tried: {', '.join(names[names.index(current) + 1:])}"
                     if names.index(current) + 1 < len(names) else ""), file=sys.stderr)
        raise
    finally:
        renderer.close()
    # Declining is not a success: `vbdecl apply F && deploy` must not go on.
    code = 1 if any(r.get("declined") for r in results) else 0
    if stopped is not None:
        print(f"vbdecl: interrupted during a commit (that apply completed): {stopped} and the "
              f"environments after it were not applied", file=sys.stderr)
        code = 130
    elif interrupts.pending():    # (it came during the last commit: that apply is done)
        pruned = "; nothing was pruned" if args.prune else ""
        print(f"vbdecl: interrupted during the commit: the apply completed{pruned}", file=sys.stderr)
        code = 130 if args.prune else code
    elif not results and not args.json:    # (an empty directory with --prune: say so)
        print(f"No changes: {args.target} has no manifests, and no environment applied from it is left")
    if args.json:
        emit_json({"event": "result", "environments": results})
    return code
