"""vbdecl recover [NAME]: finish transactions an interrupted command left open."""

from __future__ import annotations

import argparse
import os
import sys

HELP = "finish (roll back or forward) transactions left open by an interrupted command"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from vbdecl.cli.progress import add_engine_options

    p.add_argument("name", nargs="?", metavar="NAME", help="default: every environment")
    add_engine_options(p, yes=False)


def run(args: argparse.Namespace) -> int:
    from vbdecl.cli.progress import Renderer, command_line, emit_json, interrupts_roll_back
    from vbdecl.engine import paths, store
    from vbdecl.engine.executor import Engine
    from vbdecl.errors import LockedError, VbdeclError

    interrupts_roll_back()
    renderer = Renderer(args.json)
    engine = Engine(args.state_dir, on_event=renderer, lock_timeout=args.lock_timeout,
                    command=command_line())
    names = [args.name] if args.name else store.list_envs(engine.state_dir)
    recovered, failed, busy = [], [], []
    first_error: VbdeclError | None = None
    for name in names:
        try:
            if engine.recover(name):
                recovered.append(name)
        except LockedError as err:
            if args.name:
                raise
            # another command is at work there: it finishes its own transaction
            busy.append(name)
            if not args.json:
                print(f"{name}: skipped, {err.message}", file=sys.stderr)
        except VbdeclError as err:
            failed.append({"name": name, "error": str(err)})
            first_error = first_error or err
            if not args.json and len(names) > 1:
                print(f"error: {err}", file=sys.stderr)
    renderer.close()
    swept: list[str] = []
    if not args.name:   # the cgroups of runs killed with their janitors (runtime/runmarks.py)
        from vbdecl.runtime import runmarks

        swept = runmarks.sweep(engine.runtime_root)     # (runs mark where they run: not <state>/run)
    if args.json:
        emit_json({"event": "result", "recovered": recovered, "failed": failed, "busy": busy,
                   "swept_runs": swept})
    elif swept:
        print(f"removed the cgroups of {len(swept)} killed run{'s' if len(swept) > 1 else ''}: "
              f"{', '.join(sorted(swept))}")
    if not args.json and not recovered and not failed and not busy and not swept:
        # (exit 0 all the same: a recover that ran already, or rolled back a first
        # apply, left no environment; recover stays safe to repeat)
        gone = args.name and not os.path.isdir(paths.env_dir(args.name, engine.state_dir))
        print("nothing to recover" + (f" for {args.name}" if args.name else "")
              + (" (no environment of that name exists)" if gone else ""))
    if first_error is not None and (len(names) == 1 or args.json):
        raise first_error
    return 1 if failed else 0
