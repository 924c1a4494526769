"""``vbdecl graph FILE``: the action graph as a tree, or Graphviz with --dot."""

from __future__ import annotations

import argparse
import json

HELP = "print the action graph of a manifest as a tree (--dot: Graphviz)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="the manifest, or - for stdin")
    parser.add_argument("--dot", action="store_true", help="print Graphviz dot instead of a tree")


def run(args: argparse.Namespace) -> int:
    from vbdecl.cli.render_plan import print_lines
    from vbdecl.engine.plancache import plans_for_file
    from vbdecl.engine.sources import read_given
    from vbdecl.plan.text import render_dot, render_tree

    if args.json and args.dot:
        from vbdecl.errors import UsageError

        raise UsageError("--dot and --json are two formats of the graph: give one")
    name, data = read_given(args.file) or (args.file, None)
    plans = plans_for_file(name, data=data)
    if args.json:
        print(json.dumps({"format": 1, "graphs": [
            {"name": p["name"], "actions": [
                {"id": a["id"], "kind": a["kind"], "scope": a["scope"], "deps": a["deps"],
                 "describe": a["describe"]} for a in p["actions"]]}
            for p in plans]}, indent=2, ensure_ascii=False))
        return 0
    lines: list[str] = []
    for i, plan in enumerate(plans):
        if args.dot:
            lines += render_dot(plan)
            continue
        if i:
            lines.append("")
        lines.append(f"Environment {plan['name']}:")
        lines += render_tree(plan)
    print_lines(lines)
    return 0
