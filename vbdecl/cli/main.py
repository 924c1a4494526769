"""The ``vbdecl`` command line (everything but the fast path).

Each command lives in its own module ``vbdecl.cli.cmd_<name>`` exposing
``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Command modules keep heavy imports inside ``run`` so that building the
parser stays cheap.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Sequence
from types import ModuleType
from typing import NoReturn

from vbdecl import __version__
from vbdecl.cli.jsonerr import error_json, print_json_error
from vbdecl.errors import VbdeclError

COMMANDS = (
    "validate", "schema", "doctor", "plan", "apply", "diff", "graph", "destroy",
    "run", "exec", "logs", "ls", "status", "history", "rollback", "recover", "convert",
)


def _module(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"vbdecl.cli.cmd_{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"vbdecl.cli.cmd_{name}":
            return None
        raise


def add_common(parser: argparse.ArgumentParser) -> None:
    """Options every command accepts, before or after the command name."""
    parser.add_argument("--state-dir", default=argparse.SUPPRESS,
                        help="where state lives (default: $VBDECL_STATE_DIR, else /var/lib/vbdecl for root "
                             "and $XDG_STATE_HOME/vbdecl for others)")
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="machine-readable output")
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks and debug traces")


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on a usage error: vbdecl's 2 means "plan found changes"
    (--detailed-exitcode), so a mistyped option must not look like it. With --json
    anywhere among vbdecl's own arguments, the error is also the JSON line every
    other error of a --json command is (a review found usage errors printed none)."""

    json_errors = False

    def error(self, message: str, hint: str | None = None) -> NoReturn:
        self.print_usage(sys.stderr)
        if hint is None and message.startswith("argument COMMAND: invalid choice: '"):
            import difflib

            close = difflib.get_close_matches(message.split("'")[1], [*COMMANDS, "vb"], n=1)
            hint = (f"did you mean {close[0]}? " if close else "") + f"`{self.prog} --help` lists the commands"
        if _Parser.json_errors:
            print_json_error({"message": f"{self.prog}: {message}", "where": None, "hint": hint}, 1)
        self.exit(1, f"{self.prog}: error: {message}\n" + (f"  hint: {hint}\n" if hint else ""))


class _CommandParser(_Parser):
    """A command's parser. argparse hands what a subparser does not know back to
    the top-level parser, whose error showed vbdecl's usage instead of the
    command's: the command reports its own unknown options."""

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None,
                         ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            said = getattr(self, "extras_hint", None)
            hint = said(parsed, extras) if said is not None else None
            options = [a for a in extras if a.startswith("-") and a != "-"]
            if options:
                self.error(f"unknown option{'s' if len(options) > 1 else ''} {' '.join(options)} "
                           f"(`{self.prog} --help` lists its options)", hint)
            self.error(f"unexpected argument{'s' if len(extras) > 1 else ''}: {' '.join(extras)}", hint)
        return parsed, extras


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vbdecl",
        description="Declarative Linux sandbox environments.",
        epilog="Exit codes: 0 success, 1 error, 2 plan --detailed-exitcode found changes; "
               "run/exec: the process's code, 128+N killed by signal N, 125 vbdecl failed "
               "before the process started, 126 not executable, 127 not found.",
    )
    parser.add_argument("--version", action="version", version=f"vbdecl {__version__}")
    add_common(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_CommandParser)
    for name in COMMANDS:
        module = _module(name)
        if module is None:
            continue
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        add_common(cmd)
        module.add_arguments(cmd)
        # (a command may say what its extra arguments were meant to be)
        cmd.extras_hint = getattr(module, "extras_hint", None)  # type: ignore[attr-defined]
        cmd.set_defaults(_run=module.run)
    # dispatched before argparse (vbdecl.entry); listed here for --help
    sub.add_parser("vb", help="bubblewrap's command line: vbdecl vb [bwrap options] CMD (as the vb program)")
    return parser


def finish_args(args: argparse.Namespace) -> argparse.Namespace:
    for name, default in (("state_dir", None), ("json", False), ("debug", False)):
        if not hasattr(args, name):
            setattr(args, name, default)
    if args.state_dir is None:
        args.state_dir = os.environ.get("VBDECL_STATE_DIR") or None
    return args


_MACHINE_ERRNOS = {
    28: "free space there (and see `vbdecl recover` if a command was cut short)",       # ENOSPC
    122: "free space there or raise the quota (and see `vbdecl recover`)",              # EDQUOT
    30: "vbdecl's state directory must be writable (--state-dir or VBDECL_STATE_DIR)",  # EROFS
    5: "the disk reported an I/O error; check it (dmesg)",                              # EIO
}


def _in_state(path: str, state_dir: str | None) -> bool:
    """Whether ``path`` is in vbdecl's state or runtime directory."""
    from vbdecl.engine.paths import runtime_root, state_root

    path = os.path.abspath(path)
    return any(path == root or path.startswith(root.rstrip("/") + "/")
               for root in (state_root(state_dir), runtime_root(state_dir)))


def report_error(err: BaseException, debug: bool, json_out: bool = False,
                 state_dir: str | None = None) -> int:
    """Print an error for people (stderr); return the exit code.

    With ``--json`` the error is also one JSON line on stdout, where a program
    reading the command's output looks: ``{"event": "error", "error": {...}}``
    (``event`` so that it reads as the last line of apply's event stream).
    """
    if isinstance(err, BrokenPipeError):
        # The reader went away (`vbdecl plan | head`): not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    if isinstance(err, VbdeclError):
        if debug:
            traceback.print_exception(err)
        print(f"error: {err}", file=sys.stderr)
        code, about = err.exit_code, error_json(err)
    elif isinstance(err, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        code, about = 130, {"message": "interrupted"}
    elif isinstance(err, OSError) and err.errno in _MACHINE_ERRNOS:
        # the machine's state (a full disk, a read-only state directory), not a bug of ours
        import errno

        from vbdecl.engine.paths import state_root

        # (no file name: a write to stdout, say, or vbdecl's state or journal)
        where = err.filename or f"writing (the output, or vbdecl's state in {state_root(state_dir)})"
        message = f"{where}: {err.strerror} ({errno.errorcode[err.errno]})"
        hint = _MACHINE_ERRNOS[err.errno]
        print(f"error: {message}\n  hint: {hint}", file=sys.stderr)
        code, about = 1, {"message": message, "hint": hint}
    elif isinstance(err, PermissionError) and err.filename and _in_state(str(err.filename), state_dir):
        # vbdecl's state, of another user (or its permissions changed): not a bug of ours
        from vbdecl.engine.paths import permission_hint

        message = f"cannot access {err.filename}: {err.strerror}"
        hint = permission_hint(str(err.filename))
        if debug:
            traceback.print_exception(err)
        print(f"error: {message}\n  hint: {hint}", file=sys.stderr)
        code, about = 1, {"message": message, "hint": hint}
    elif debug:
        traceback.print_exception(err)
        code, about = 1, {"message": f"unexpected {type(err).__name__}: {err}"}
    else:
        import tempfile

        fd, path = tempfile.mkstemp(prefix="vbdecl-crash-", suffix=".log")
        with os.fdopen(fd, "w") as log:
            traceback.print_exception(err, file=log)
        hint = f"this is a bug in vbdecl; the traceback is in {path} (or rerun with --debug)"
        print(f"error: unexpected {type(err).__name__}: {err}\n  {hint}", file=sys.stderr)
        code, about = 1, {"message": f"unexpected {type(err).__name__}: {err}", "hint": hint}
    if json_out:
        print_json_error(about, code)
    return code


def main(argv: list[str]) -> int:
    parser = build_parser()
    _Parser.json_errors = "--json" in (argv[:argv.index("--")] if "--" in argv else argv)
    args = finish_args(parser.parse_args(argv))
    if not getattr(args, "_run", None):
        parser.print_help()
        return 1
    try:
        # (imported while a ^C still ends the process: pydantic_core's Rust code imports
        # it when it is first imported itself, and an interrupt there made it panic, with
        # Rust's message and a traceback, where "interrupted" was due; ~1.5 ms)
        import datetime  # noqa: F401

        from vbdecl.engine.paths import check_state_root
        from vbdecl.entry import interrupts_raise

        interrupts_raise()      # (reported by report_error from now on)
        check_state_root(args.state_dir)
        return int(args._run(args))
    except (Exception, KeyboardInterrupt) as err:
        return report_error(err, args.debug, args.json, args.state_dir)
