"""``vbdecl logs NAME [-f]``: the output of a live environment's process."""

from __future__ import annotations

import argparse

HELP = "show the output of a live environment's process (-f follows it)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="the environment (metadata.name)")
    parser.add_argument("-f", "--follow", action="store_true",
                        help="keep printing new output until the process exits (or the environment "
                             "is destroyed), then exit 0")
    parser.add_argument("-n", "--tail", type=_lines, metavar="N", help="only the last N lines first")


def _lines(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of lines: {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{n} lines: give 0 or more (-n 10 for the last ten)")
    return n


def run(args: argparse.Namespace) -> int:
    from vbdecl.runtime.live import logs

    return logs(args.name, state_dir=args.state_dir, follow=args.follow, tail=args.tail, json_lines=args.json)
