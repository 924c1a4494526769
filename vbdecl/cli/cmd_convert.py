"""``vbdecl convert``: bubblewrap command lines to manifests and back."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from typing import Any

from vbdecl.errors import UsageError

HELP = "convert a bubblewrap command line to a manifest (--from-bwrap) or back (--to-bwrap)"
SECCOMP_FD = 3      # where the printed command line has bubblewrap read a seccomp program


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--from-bwrap", action="store_true",
                       help="read bubblewrap arguments after `--` and print the manifest")
    group.add_argument("--to-bwrap", metavar="FILE",
                       help="print a bubblewrap command line for the manifest FILE")
    parser.add_argument("--name", metavar="NAME",
                        help="with --from-bwrap: the environment's metadata.name (default: vb)")
    parser.add_argument("--seccomp-out", metavar="FILE",
                        help="with --to-bwrap: write the seccomp profile's compiled program to FILE "
                             f"(FILE.NAME for each of several environments) and have bubblewrap read it "
                             f"from fd {SECCOMP_FD} (`--seccomp {SECCOMP_FD} ... {SECCOMP_FD}<FILE`)")
    parser.add_argument("args", nargs=argparse.REMAINDER,
                        help="with --from-bwrap: -- followed by bubblewrap's arguments")


def extras_hint(args: argparse.Namespace, extras: list[str]) -> str | None:
    """``convert --from-bwrap --ro-bind ...``: bubblewrap's options are not ours."""
    if args.from_bwrap:
        return "put bubblewrap's arguments after --: vbdecl convert --from-bwrap -- ARGS"
    return None


def run(args: argparse.Namespace) -> int:
    if args.seccomp_out and not args.to_bwrap:
        raise UsageError("--seccomp-out goes with --to-bwrap")
    if args.name is not None:
        if not args.from_bwrap:
            raise UsageError("--name goes with --from-bwrap", hint="--to-bwrap takes the name from the manifest")
        from vbdecl.engine.paths import check_name

        check_name(args.name)
    extra = args.args[1:] if args.args[:1] == ["--"] else args.args
    if args.to_bwrap and extra:
        raise UsageError(f"--to-bwrap takes only the manifest FILE, not {shlex.join(extra)}",
                         hint="the command line printed runs the manifest's process.command: "
                              "change that, or edit the printed command line")
    if args.from_bwrap:
        from vbdecl.vb.manifest import NotExpressible, document_to_manifest, render, vb_only
        from vbdecl.vb.parse import VbUsageError, parse, to_document

        argv = args.args[1:] if args.args[:1] == ["--"] else args.args
        try:
            doc = to_document(parse(argv))
        except VbUsageError as err:
            raise UsageError(f"bubblewrap arguments: {err}") from None
        if args.name is not None:
            doc["name"] = args.name
        try:
            if args.json:
                # JSON has no comments: what the manifest cannot say goes to stderr
                manifest = document_to_manifest(doc, read_fds=True)
                for note in vb_only(doc):
                    print(f"warning: `vbdecl run` of this manifest differs from vb here: {note}",
                          file=sys.stderr)
                print(json.dumps(manifest, indent=2))
            else:
                print(render(doc, read_fds=True), end="")
        except NotExpressible as err:
            raise _cannot("no manifest can say what these bubblewrap arguments do", "keep running them with vb",
                          [("", p) for p in err.problems], args.json) from None
        return 0

    from vbdecl.model import load_normalized
    from vbdecl.vb.manifest import (
        NotExpressible,
        bounding_note,
        manifest_to_bwrap,
        mode_notes,
        proc_notes,
    )

    docs = load_normalized(args.to_bwrap)
    profiles = sum(d["spec"]["security"]["seccomp"] != "off" for d in docs)
    # every environment first, and all that bubblewrap cannot say at once (as validate)
    commands: list[tuple[dict[str, Any], list[str], str | None]] = []    # (doc, argv, program file)
    problems: list[tuple[str, str]] = []      # (where, what)
    for doc in docs:
        program = None
        if args.seccomp_out and doc["spec"]["security"]["seccomp"] != "off":
            program = args.seccomp_out if profiles == 1 else f"{args.seccomp_out}.{doc['name']}"
        try:
            argv = manifest_to_bwrap(doc["spec"], SECCOMP_FD if program else None)
        except NotExpressible as err:
            problems += [(f"{args.to_bwrap}: environment {doc['name']}", p) for p in err.problems]
            continue
        commands.append((doc, argv, program))
    if problems:
        count = len(problems)
        raise _cannot(f"{count} thing{'s' if count != 1 else ''} bubblewrap cannot express in {args.to_bwrap}",
                      "run it with `vbdecl run` instead", problems, args.json)
    for doc, argv, _program in commands:     # (warnings first: the command lines are the output)
        wider = bounding_note(doc["spec"], argv)
        for note in [*([wider] if wider is not None else []), *mode_notes(doc["spec"]), *proc_notes(doc["spec"])]:
            print(f"warning: {args.to_bwrap}: environment {doc['name']}: {note}", file=sys.stderr)
    for doc, argv, program in commands:
        if program:
            _write_program(program, doc["spec"])
        if args.json:
            fds = {str(SECCOMP_FD): program} if program else {}
            print(json.dumps({"name": doc["name"], "argv": ["bwrap", *argv], "fds": fds}))
        else:
            redirect = f" {SECCOMP_FD}<{shlex.quote(program)}" if program else ""
            print(shlex.join(["bwrap", *argv]) + redirect)
    return 0


def _write_program(path: str, spec: dict[str, Any]) -> None:
    """Write the program to ``path`` as any output file is written (through a link,
    into a pipe or device), not replaced by a rename."""
    from vbdecl.ops.sec import bwrap_program

    program = bwrap_program(spec)
    assert program is not None      # (only specs with a profile get a program file)
    try:
        with open(path, "wb") as f:
            f.write(program)
    except OSError as exc:
        raise UsageError(f"--seccomp-out {path}: {exc.strerror}") from None


def _cannot(message: str, hint: str, problems: list[tuple[str, str]], as_json: bool) -> UsageError:
    """The error of a conversion that cannot be made: each reason printed first, or with
    --json in the error's ``problems`` (a day-2 review found them only on stderr)."""
    from vbdecl.errors import Problem

    err = UsageError(message, hint=hint)
    if as_json:
        err.problems = [Problem("", message, hint), *(Problem(where, what) for where, what in problems)]
    else:
        for where, what in problems:
            print(f"{where}: {what}" if where else what, file=sys.stderr)
    return err
