"""vbdecl validate: check manifests and report every problem with its position."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "check manifest files (or directories of *.yaml and *.yml) and report every problem as file:line:col"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="FILE|DIR",
                        help="manifest files, directories (searched for *.yaml, *.yml), or - for stdin")
    parser.epilog = "Exit codes: 0 every manifest is valid, 1 at least one problem."


def run(args: argparse.Namespace) -> int:
    from vbdecl.engine.sources import STDIN, manifest_files, read_given
    from vbdecl.model.load import LoadResult, duplicate_names, load_path

    results: list[LoadResult] = []
    if list(args.paths).count(STDIN) > 1:
        from vbdecl.errors import UsageError

        raise UsageError("- (stdin) can be given once", hint="vbdecl validate - [FILE...]")
    for path in manifest_files(list(args.paths)):
        given = read_given(path)        # (stdin or a pipe: read once, as plan reads them)
        results.append(load_path(*given) if given is not None else load_path(path))
    if not results:
        print("error: no manifest files (*.yaml, *.yml) found in " + ", ".join(args.paths), file=sys.stderr)
        return 1
    reused = duplicate_names([(env.name, r.path, index) for r in results for index, env in r.environments])
    for r in results:
        r.problems += reused.get(r.path, [])
    failed = [r for r in results if r.problems]
    if args.json:
        out = {
            "ok": not failed,
            "files": [{
                "path": r.path,
                "ok": not r.problems,
                "environments": [env.name for _i, env in r.environments] if not r.problems else [],
                "problems": [p.to_json() for p in r.problems],
            } for r in results],
        }
        print(json.dumps(out, indent=2))
        return 1 if failed else 0
    for r in results:
        if r.problems:
            for p in r.problems:
                print(f"{p}", file=sys.stderr)
        else:
            names = ", ".join(env.name for _i, env in r.environments)
            print(f"{r.path}: ok ({names})")
    if failed:
        count = sum(len(r.problems) for r in failed)
        print(f"{count} problem{'s' if count != 1 else ''} in {len(failed)} of {len(results)} "
              f"file{'s' if len(results) != 1 else ''}", file=sys.stderr)
        return 1
    return 0
