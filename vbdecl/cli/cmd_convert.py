"""``vbdecl convert``: bubblewrap command lines to manifests and back."""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from vbdecl.errors import UsageError

HELP = "convert a bubblewrap command line to a manifest (--from-bwrap) or back (--to-bwrap)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--from-bwrap", action="store_true",
                       help="read bubblewrap arguments after `--` and print the manifest")
    group.add_argument("--to-bwrap", metavar="FILE",
                       help="print a bubblewrap command line for the manifest FILE")
    parser.add_argument("args", nargs=argparse.REMAINDER,
                        help="with --from-bwrap: -- followed by bubblewrap's arguments")


def run(args: argparse.Namespace) -> int:
    if args.from_bwrap:
        from vbdecl.vb.manifest import document_to_manifest, render, vb_only
        from vbdecl.vb.parse import VbUsageError, parse, to_document

        argv = args.args[1:] if args.args[:1] == ["--"] else args.args
        try:
            doc = to_document(parse(argv))
        except VbUsageError as err:
            raise UsageError(f"bubblewrap arguments: {err}") from None
        if args.json:
            # JSON has no comments: what the manifest cannot say goes to stderr
            for note in vb_only(doc):
                print(f"warning: `vbdecl run` of this manifest differs from vb here: {note}",
                      file=sys.stderr)
            print(json.dumps(document_to_manifest(doc, read_fds=True), indent=2))
        else:
            print(render(doc, read_fds=True), end="")
        return 0

    from vbdecl.model import load_normalized
    from vbdecl.vb.manifest import NotExpressible, manifest_to_bwrap

    # every environment first, and all that bubblewrap cannot say at once (as validate)
    lines: list[str] = []
    problems: list[str] = []
    for doc in load_normalized(args.to_bwrap):
        try:
            argv = manifest_to_bwrap(doc["spec"])
        except NotExpressible as err:
            problems += [f"{args.to_bwrap}: environment {doc['name']}: {p}" for p in err.problems]
            continue
        if args.json:
            lines.append(json.dumps({"name": doc["name"], "argv": ["bwrap", *argv]}))
        else:
            lines.append(shlex.join(["bwrap", *argv]))
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        count = len(problems)
        raise UsageError(f"{count} thing{'s' if count != 1 else ''} bubblewrap cannot express in "
                         f"{args.to_bwrap}", hint="run it with `vbdecl run` instead")
    for line in lines:
        print(line)
    return 0
