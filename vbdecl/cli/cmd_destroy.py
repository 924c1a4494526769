"""vbdecl destroy NAME|FILE: revert everything the environment owns."""

from __future__ import annotations

import argparse
import os
import sys

HELP = "destroy an environment (by name, or every environment of a manifest)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from vbdecl.cli.progress import add_engine_options

    p.add_argument("target", metavar="NAME|FILE",
                   help="an environment's name, a manifest (every environment in it), or - for a "
                        "manifest on stdin (with -y)")
    p.add_argument("--purge", action="store_true",
                   help="also forget the environment: its revisions (history), logs and journal; "
                        "works on a destroyed environment too")
    add_engine_options(p)


def is_manifest(target: str) -> bool:
    """Whether ``target`` names a manifest (a path, or - for stdin), not an environment."""
    from vbdecl.engine import sources

    return target == sources.STDIN or os.sep in target or os.path.isfile(target)


def names_of(target: str) -> list[str]:
    from vbdecl.engine import paths, sources

    if is_manifest(target):
        return [s.plan["name"] for s in sources.load(target)]
    paths.check_name(target)
    return [target]


def _absent(name: str, state_dir: str | None, json_out: bool) -> None:
    """Say why a manifest's environment ``name`` has nothing to destroy."""
    from vbdecl.engine import store

    if not json_out:
        why = "destroyed before" if store.revision_numbers(name, state_dir) else "never applied"
        print(f"{name}: nothing to destroy ({why})")


def run(args: argparse.Namespace) -> int:
    from vbdecl.cli.progress import (
        Renderer,
        check_can_ask,
        command_line,
        confirm,
        emit_json,
        interrupts_roll_back,
        warn_unknown_faults,
    )
    from vbdecl.engine import paths, store
    from vbdecl.engine.executor import Engine, Result

    check_can_ask(args.target, args.yes)
    names = names_of(args.target)
    # a manifest's environments that are not there are skipped, so that a destroy of a
    # file goes on to the others and may be run again (a review's stopped at the first)
    skip_absent = is_manifest(args.target)
    absent: list[str] = []
    warn_unknown_faults([], names, args.state_dir)
    interrupts_roll_back()
    renderer = Renderer(args.json)
    renderer.destroying = True     # a recovered destroy is reported as this command's result
    engine = Engine(args.state_dir, on_event=renderer, lock_timeout=args.lock_timeout,
                    command=command_line())
    done: list[dict[str, object]] = []
    declined: list[str] = []
    try:
        for name in names:
            if skip_absent and not paths.is_dir(paths.env_dir(name, args.state_dir)):
                absent.append(name)
                _absent(name, args.state_dir, args.json)
                continue
            # An interrupted destroy of ``name`` left open is finished now, and that is
            # what this command asked for; an apply that cannot roll back is abandoned
            # to this destroy.
            with engine.session(name, create=False, then="destroy") as s:
                if s.state is None and s.recovered == "rolled back":
                    # a first apply, killed: rolling it back left nothing (a crash review
                    # was told the environment does not exist, with exit 1)
                    if not args.json:
                        print(f"{name}: nothing left to destroy (the interrupted apply that made "
                              "it was rolled back)")
                    done.append(Result(name, None, None, None, recovered=True).to_json() | {"rolled_back": True})
                    continue
                if s.state is None and s.recovered != "destroyed" and args.purge:
                    # destroyed before: only its history and logs are left to forget
                    if not confirm(f"Forget {name} (its history and logs)?", args.yes):
                        print(f"{name}: not forgotten", file=sys.stderr)
                        declined.append(name)
                        continue
                    s.purge()
                    if not args.json:
                        print(f"{name}: forgotten (it was destroyed before; its history and logs are removed)")
                    done.append(Result(name, None, None, None).to_json() | {"purged": True})
                    continue
                if s.state is None and s.recovered != "destroyed":
                    if not skip_absent:
                        raise store.absent(name, args.state_dir)     # (destroyed before, or never applied)
                    absent.append(name)
                    _absent(name, args.state_dir, args.json)
                    continue
                if s.state is not None:
                    n = len(s.state.get("resources") or {})
                    if not args.json:
                        print(f"{name}: {n} resources to destroy (instance {s.state['instance']})")
                    if not confirm(f"Destroy {name}?", args.yes):
                        print(f"{name}: not destroyed", file=sys.stderr)
                        declined.append(name)
                        continue
                result = s.destroy()
                if args.purge:
                    s.purge()
                done.append(result.to_json() | ({"purged": True} if args.purge else {}))
                if not args.json:
                    print(f"{name}: destroyed" + (" (finished the interrupted destroy)"
                                                  if result.recovered else "")
                          + ("; its history and logs are removed" if args.purge else ""))
    finally:
        renderer.close()
    if args.json:
        emit_json({"event": "result", "destroyed": done, "declined": declined, "absent": absent})
    return 1 if declined else 0
