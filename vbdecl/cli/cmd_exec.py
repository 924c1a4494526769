"""``vbdecl exec``: argparse definition for --help; the work goes through vbdecl.cli.fast."""

from __future__ import annotations

import argparse

HELP = "run a command inside a live environment (same namespaces, root, cwd, env, cgroup)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="the environment (metadata.name)")
    parser.add_argument("--cwd", help="working directory inside (default: process.cwd)")
    parser.add_argument("-t", "--tty", action="store_true",
                        help="give the command a terminal of the environment's own (its /dev/pts: "
                             "needs a dev entry), relayed to this one; a stdin that is no terminal "
                             "is given as it is, and TERM is set where the command would have none")
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD...",
                        help="the command (default: /bin/sh)")
    parser.epilog = ("Exit status: the command's; 128+N when killed by signal N; 125 vbdecl failed "
                     "before the command started; 126 not executable; 127 not found.")


def run(args: argparse.Namespace) -> int:
    from vbdecl.cli.fast import main

    argv = ["exec", args.name]
    if args.state_dir:
        argv[:0] = ["--state-dir", args.state_dir]
    if args.cwd:
        argv += ["--cwd", args.cwd]
    if args.tty:
        argv.append("--tty")
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if command:
        argv += ["--", *command]
    return main(argv)
