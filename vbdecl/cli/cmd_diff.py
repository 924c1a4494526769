"""``vbdecl diff A.yaml B.yaml``: the plan that takes A to B.

``vbdecl diff NAME --from N [--to M]`` compares two stored revisions of an
environment (``--to`` defaults to the current one).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

HELP = "show the plan that takes manifest A to manifest B (or revision N to M of NAME)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", metavar="A", help="the manifest to start from, or an environment name "
                                               "(a manifest A or B may be - for stdin)")
    parser.add_argument("b", metavar="B", nargs="?", help="the manifest to go to")
    parser.add_argument("--from", dest="rev_from", type=int, metavar="N",
                        help="with NAME: the revision to start from")
    parser.add_argument("--to", dest="rev_to", type=int, metavar="M",
                        help="with NAME: the revision to go to (default: the current one)")
    parser.add_argument("--raw", action="store_true",
                        help="also show a unified diff of the manifest files (of revisions: of their "
                             "normalized specs, as JSON)")
    parser.add_argument("-v", "--verbose", action="store_true", help="also list unchanged actions")


def extras_hint(args: argparse.Namespace, extras: list[str]) -> str | None:
    """``vbdecl diff NAME 1 3``: revisions are given as options."""
    if args.b is not None and args.b.isdecimal() and len(extras) == 1 and extras[0].isdecimal():
        return (f"to compare revisions of an environment: vbdecl diff {args.a} --from {args.b} "
                f"--to {extras[0]}")
    return None


def _revision(name: str, number: int, state_dir: str | None) -> dict[str, Any]:
    from vbdecl.engine import store
    from vbdecl.errors import UsageError

    try:
        rev = store.load_revision(name, number, state_dir)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read revision {number} of {name}: {exc}") from None
    plan = rev.get("plan") if isinstance(rev, dict) else None
    if not isinstance(plan, dict):
        raise UsageError(f"revision {number} of {name} is damaged: it holds no plan",
                         hint=f"compare other revisions (see `vbdecl history {name}`)")
    return plan


def _sides(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """(plans of A, plans of B, raw diff lines)."""
    from vbdecl.engine.plancache import plans_for_file
    from vbdecl.engine.sources import STDIN, read_given
    from vbdecl.errors import UsageError

    if args.b is not None:
        if args.rev_from is not None or args.rev_to is not None:
            raise UsageError("--from/--to compare revisions of one environment, not two files",
                             hint="vbdecl diff NAME --from N --to M, or vbdecl diff A.yaml B.yaml")
        if args.a == args.b == STDIN:
            raise UsageError("only one of the two manifests can come from stdin (-)",
                             hint="vbdecl diff A.yaml - < B.yaml")
        if args.b.isdecimal() and args.a != STDIN and not os.path.lexists(args.b) \
                and not os.path.lexists(args.a):
            raise UsageError(f"neither {args.a!r} nor {args.b!r} is a manifest file",
                             hint=f"to compare revisions of an environment: vbdecl diff {args.a} "
                                  f"--from {args.b} [--to M]")
        (name_a, data_a), (name_b, data_b) = [read_given(f) or (f, None) for f in (args.a, args.b)]
        a, b = plans_for_file(name_a, data=data_a), plans_for_file(name_b, data=data_b)
        raw: list[str] = []
        if args.raw:
            raw = _unified(_read(name_a, data_a), _read(name_b, data_b), name_a, name_b)
        return a, b, raw
    if args.rev_from is None:
        raise UsageError("give two manifests, or an environment name with --from N",
                         hint="vbdecl diff A.yaml B.yaml, or vbdecl diff NAME --from N --to M")
    name = args.a
    to = args.rev_to
    if to is None:
        from vbdecl.engine import store

        state = store.load(name, args.state_dir)
        if state:
            to = int(state.get("revision") or 0)
        else:       # (destroyed: its last revision, which its revisions keep until a purge)
            have = store.revision_numbers(name, args.state_dir)
            if not have:
                raise store.not_committed(name, args.state_dir)
            to = have[-1]
    pa = _revision(name, args.rev_from, args.state_dir)
    pb = _revision(name, to, args.state_dir)
    raw = []
    if args.raw:
        raw = _unified(_spec_text(pa), _spec_text(pb), f"{name}@{args.rev_from}", f"{name}@{to}")
    return [pa], [pb], raw


def _read(path: str, data: bytes | None = None) -> str:
    if data is not None:
        return data.decode("utf-8", errors="replace")
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def _spec_text(plan: dict[str, Any]) -> str:
    shown = {"name": plan.get("name"), "labels": plan.get("labels"), "annotations": plan.get("annotations") or {},
             "spec": _shown(plan.get("spec"))}
    return json.dumps(shown, indent=2, sort_keys=True) + "\n"


def _shown(value: Any, key: str = "", kind: str = "proc.main") -> Any:
    """A stored spec as --raw shows it: modes in octal, as a manifest writes them, and
    secret text (file and bind-data content, a seccomp profile's) as plans show it
    (plan.diff.json_value: diffs end up in CI logs). ``kind``: the action kind of the
    filesystem entry ``value`` is in (outside one, the process's)."""
    from vbdecl.plan.diff import json_value

    if isinstance(value, dict):
        inner = f"fs.{value['type']}" if isinstance(value.get("type"), str) else kind
        return {k: _shown(v, str(k), inner) for k, v in value.items()}
    if isinstance(value, list):
        return [_shown(v, key, kind) for v in value]
    if key == "mode" and isinstance(value, int) and not isinstance(value, bool):
        return f"{value:04o}"
    return json_value(kind, key, value)


def _unified(a: str, b: str, name_a: str, name_b: str) -> list[str]:
    import difflib

    return [line.rstrip("\n") for line in difflib.unified_diff(
        a.splitlines(keepends=True), b.splitlines(keepends=True), fromfile=name_a, tofile=name_b)]


def run(args: argparse.Namespace) -> int:
    from vbdecl.cli.render_plan import print_lines
    from vbdecl.plan.diff import changes, state_of
    from vbdecl.plan.text import render_all

    plans_a, plans_b, raw = _sides(args)
    before = {p["name"]: p for p in plans_a}
    results = []
    for plan in plans_b:
        old = before.pop(plan["name"], None)
        state = state_of(old) if old else None
        results.append((plan, state, changes(plan, state, None, verbose=args.verbose)))
    for old in before.values():
        # an environment only in A: going to B destroys it
        results.append(({**old, "actions": []}, state_of(old), changes(None, state_of(old))))
    lines, doc = render_all(results, compared=True)
    if args.json:
        doc["raw"] = raw if args.raw else None
        print(json.dumps(doc, indent=2, ensure_ascii=False))
        return 0
    if args.raw:
        lines = [*(raw or ["(no difference in the manifests)"]), "", *lines]
    print_lines(lines)
    return 0


