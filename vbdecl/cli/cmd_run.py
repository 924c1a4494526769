"""``vbdecl run``: argparse definition for --help; the work goes through vbdecl.cli.fast."""

from __future__ import annotations

import argparse

HELP = "run a manifest's environment ephemerally: set up, run the process, tear down"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="the manifest (a file: stdin is the process's)")
    parser.add_argument("--name", help="which environment, when FILE holds several")
    parser.add_argument("--events-fd", type=int, metavar="FD",
                        help="also write lifecycle events (JSON lines) to this fd")
    parser.add_argument("--no-cache", action="store_true", help="compile the manifest even if cached")
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD...",
                        help="replaces process.command for this run")
    parser.epilog = ("Exit status: the process's; 128+N when killed by signal N; 125 vbdecl failed "
                     "before the process started; 126 not executable; 127 not found.")


def run(args: argparse.Namespace) -> int:
    from vbdecl.cli.fast import main

    argv = ["run", args.file]
    if args.state_dir:
        argv[:0] = ["--state-dir", args.state_dir]
    if args.name:
        argv += ["--name", args.name]
    if args.events_fd is not None:
        argv += ["--events-fd", str(args.events_fd)]
    if args.no_cache:
        argv.append("--no-cache")
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if command:
        argv += ["--", *command]
    return main(argv)
