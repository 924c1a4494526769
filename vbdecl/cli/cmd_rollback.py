"""vbdecl rollback NAME --to N: apply the plan of an earlier revision."""

from __future__ import annotations

import argparse
import sys

HELP = "roll an environment back to an earlier revision (recorded as a new revision)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from vbdecl.cli.progress import add_engine_options

    p.add_argument("name", metavar="NAME")
    p.add_argument("--to", type=int, required=True, metavar="N", help="the revision to return to")
    add_engine_options(p)


def run(args: argparse.Namespace) -> int:
    from vbdecl.cli.progress import (
        Renderer,
        command_line,
        confirm,
        emit_json,
        interrupts_roll_back,
        plan_lines,
    )
    from vbdecl.engine import store
    from vbdecl.engine.executor import Engine

    interrupts_roll_back()
    renderer = Renderer(args.json)
    engine = Engine(args.state_dir, on_event=renderer, lock_timeout=args.lock_timeout,
                    command=command_line())
    rev = store.load_revision(args.name, args.to, engine.state_dir)
    plan = rev["plan"]
    from vbdecl.cli.cmd_plan import check_live_rules

    # what this vbdecl refuses of a live environment, a revision an older one applied too
    check_live_rules(plan, f"revision {args.to} of {args.name}")
    try:
        # (as apply: go on from what a stuck one left)
        with engine.session(args.name, create=False, then="apply") as s:
            changes = s.changes(plan)
            if args.json:
                emit_json({"event": "plan", "name": args.name,
                           "changes": [c.to_json() for c in changes.changes]})
            else:
                print("\n".join(plan_lines(args.name, changes)))
            if not changes:
                s.apply(plan, changes)     # (commits what a stuck apply left, if so)
                return 0
            if not confirm(f"Roll {args.name} back to revision {args.to}?", args.yes):
                print(f"{args.name}: not rolled back", file=sys.stderr)
                if args.json:
                    emit_json({"event": "result", "name": args.name, "declined": True})
                return 1
            result = s.apply(plan, changes, note=f"rollback to {args.to}", from_revision=rev)
    finally:
        renderer.close()
    if args.json:
        emit_json({"event": "result", **result.to_json()})
    else:
        print(f"{args.name}: rolled back to revision {args.to} as revision {result.revision}")
    return 0
