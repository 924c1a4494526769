"""The fast path: ``vbdecl run`` and ``vbdecl exec`` without argparse, rich or pydantic.

``vbdecl/entry.py`` sends these two commands here before importing any CLI
framework. The grammar (``--help`` goes to the argparse definitions in
``cmd_run``/``cmd_exec``)::

    vbdecl [GLOBAL...] run  [--name NAME] [--events-fd FD] [--no-cache] FILE [-- CMD...]
    vbdecl [GLOBAL...] exec [--cwd DIR] [-t|--tty] NAME [-- CMD...]

GLOBAL: ``--state-dir DIR``, ``--debug``, ``--json``. Exit status: the
process's; 125 when vbdecl failed before the process started; 126/127 when
the command cannot be executed / is not found.
"""

from __future__ import annotations

import sys

from vbdecl.errors import UsageError, VbdeclError
from vbdecl.sys import oslite as os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_FLAGS = ("--debug", "--json", "--no-cache", "--tty")
_VALUES = ("--state-dir", "--name", "--events-fd", "--cwd")


def parse(argv: list[str]) -> tuple[str, dict[str, object], list[str], list[str] | None]:
    """Split argv into (command, options, positionals, command after --)."""
    opts: dict[str, object] = {}
    pos: list[str] = []
    cmd: str | None = None
    rest: list[str] | None = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest = argv[i + 1:]
            break
        if cmd is not None and len(pos) == 1 and not arg.startswith("-"):
            # run FILE CMD... / exec NAME CMD...: the command may follow without --
            rest = argv[i:]
            break
        name, eq, value = arg.partition("=")
        if name in _VALUES:
            if not eq:
                if i + 1 >= len(argv):
                    raise UsageError(f"option {name} needs a value")
                i += 1
                value = argv[i]
            opts[name[2:].replace("-", "_")] = value
        elif arg in _FLAGS:
            opts[arg[2:].replace("-", "_")] = True
        elif arg == "-t" and cmd == "exec":
            opts["tty"] = True
        elif arg == "-" and cmd == "run":
            raise UsageError("vbdecl run reads its manifest from a file: stdin is the process's",
                             hint="save the manifest to a file and run that (plan, diff, apply and "
                                  "validate take - for stdin)")
        elif arg.startswith("-"):
            raise UsageError(f"unknown option {arg}", hint="see vbdecl run --help / vbdecl exec --help")
        elif cmd is None:
            cmd = arg
        else:
            pos.append(arg)
        i += 1
    if cmd not in ("run", "exec"):
        raise UsageError(f"not a fast-path command: {cmd}")
    return cmd, opts, pos, rest


def main(argv: list[str], *, exit_now: bool = False) -> int:
    """Run the command; with ``exit_now`` leave through os._exit (a console process
    has nothing to finalize, and interpreter teardown costs ~10 ms)."""
    code = _main(argv)
    if exit_now:
        from vbdecl.entry import flush_and_exit

        flush_and_exit(code)
    return code


def _main(argv: list[str]) -> int:
    debug = "--debug" in argv
    ours = argv[:argv.index("--")] if "--" in argv else argv
    json_out = "--json" in ours     # (until parsed: the command may follow without --)
    state_dir: str | None = None
    try:
        from vbdecl.entry import interrupts_raise

        interrupts_raise()      # (reported below from now on)
        cmd, opts, pos, rest = parse(argv)
        json_out = bool(opts.get("json"))
        if len(pos) != 1:
            what = "a manifest FILE" if cmd == "run" else "an environment NAME"
            raise UsageError(f"vbdecl {cmd} takes {what}",
                             hint=f"vbdecl {cmd} {'FILE' if cmd == 'run' else 'NAME'} [-- CMD...]")
        state_dir = str(opts.get("state_dir") or os.getenv("VBDECL_STATE_DIR") or "") or None
        if state_dir:      # (only then: the default path imports no more than it needs)
            from vbdecl.engine.paths import check_state_root

            check_state_root(state_dir)
        if cmd == "run" and opts.get("tty"):
            raise UsageError("--tty is an option of vbdecl exec", hint="vbdecl run takes the caller's terminal as it is")
        if cmd == "run":
            return run_file(pos[0], command=rest, name=opts.get("name"), state_dir=state_dir,
                            events_fd=opts.get("events_fd"), use_cache=not opts.get("no_cache"),
                            debug=debug, json_out=json_out)
        from vbdecl.runtime.live import exec_in

        if json_out:    # (loaded here: exec reports from inside the environment's mounts)
            import vbdecl.cli.jsonerr  # noqa: F401
        return exec_in(pos[0], rest or None, state_dir=state_dir,
                       cwd=str(opts["cwd"]) if opts.get("cwd") else None, tty=bool(opts.get("tty")),
                       report=lambda err: _report(err, debug, 125, json_out, code=err.exit_code))
    except VbdeclError as err:
        return _report(err, debug, 125, json_out)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)     # (as every other command says it)
        return 130
    except Exception as err:
        try:
            from vbdecl.cli.main import report_error
        except ImportError:     # (exec had entered an environment: vbdecl's files are out of sight)
            print(f"error: unexpected {type(err).__name__}: {err}", file=sys.stderr)
            return 125
        report_error(err, debug, json_out, state_dir)
        return 125


def _report(err: VbdeclError, debug: bool, floor: int, json_out: bool, code: int | None = None) -> int:
    """Tell of ``err``; the exit status: ``code`` (what the command returns), else the
    error's own (125 and up), else ``floor``."""
    if debug:
        import traceback

        traceback.print_exception(err)
    print(f"error: {err}", file=sys.stderr)
    if code is None:
        code = err.exit_code if err.exit_code >= 125 else floor
    if json_out:    # (after whatever the process printed: its stdout is this one)
        from vbdecl.cli.jsonerr import error_json, print_json_error

        print_json_error(error_json(err), code)
    return code


def run_file(path: str, *, command: list[str] | None, name: object, state_dir: str | None,
             events_fd: object, use_cache: bool, debug: bool, json_out: bool = False) -> int:
    plan = load_plan(path, name=str(name) if name else None, use_cache=use_cache)
    if too_few_pids(plan):
        from vbdecl.cli.cmd_plan import run_pids_error

        raise run_pids_error(plan, path)
    unmapped = unmapped_ids(plan)
    if unmapped:
        from vbdecl.cli.cmd_plan import run_unmapped_error

        raise run_unmapped_error(plan, path, unmapped)
    from vbdecl.runtime.spawn import run_plan

    fds = [int(str(events_fd))] if events_fd is not None else None
    from vbdecl.entry import CALLER

    result = run_plan(plan, argv=command or None, event_fds=fds, forward_signals=True,
                      state_dir=state_dir, on_event=_print_warnings, caller=CALLER,
                      ns_ids=False,   # only --events-fd and status.events show them
                      share_memory=True)
    # (after the process ran, its code stays the run's, teardown errors or not)
    errors = [e for e in (result.error, *result.teardown_errors) if e is not None]
    for err in errors:
        _report(err, debug, 125, False, code=result.code)
    if json_out and errors:     # one error line, every failure in its problems
        from vbdecl.cli.jsonerr import error_json, print_json_error
        from vbdecl.errors import Problem

        about = error_json(errors[0])
        if len(errors) > 1:
            about["problems"] = [Problem(e.where or "", e.message, e.hint).to_json() for e in errors]
        print_json_error(about, result.code)
    return result.code


def too_few_pids(plan: dict[str, Any]) -> bool:
    """Whether limits.pids leaves the process no room beside vbdecl's pid 1 (with the
    run's own pid namespace and process.init, the defaults): its fork would fail.
    (2 is model.names.RUN_PIDS_FLOOR, which the run path does not import: every
    module costs each run's start-up.)"""
    spec = plan["spec"]
    pids = spec["limits"]["pids"]
    return bool(pids is not None and pids < 2 and spec["namespaces"]["pid"] is True
                and spec["process"].get("init", True))


def unmapped_ids(plan: dict[str, Any]) -> list[str]:
    """The keys of process.user and process.group that name an id the user namespace a
    run without root implies cannot have: with no spec.idmap it maps the caller's own
    ids only, to 0 inside (a user's review was told so by setresgid's EINVAL)."""
    spec = plan["spec"]
    if os.geteuid() == 0 or spec.get("idmap") is not None or isinstance(spec["namespaces"].get("user"), dict):
        return []
    return [key for key in ("user", "group") if spec["process"].get(key) not in (None, 0)]


def _print_warnings(event: dict[str, object]) -> None:
    """Setup warnings (a limit not enforced under limits.optional, ...) on stderr."""
    warnings = event.get("warnings") if event.get("event") == "runtime_init_warnings" else None
    for text in warnings if isinstance(warnings, list) else []:
        print(f"vbdecl: warning: {text}", file=sys.stderr)


def load_plan(path: str, *, name: str | None = None, use_cache: bool = True) -> dict[str, object]:
    try:
        from vbdecl.engine.plancache import plans_for_file
    except ImportError as exc:
        raise VbdeclError(f"the planner is not available: {exc}") from None
    try:
        plans = plans_for_file(path, use_cache=use_cache)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    if name:
        chosen = [p for p in plans if p.get("name") == name]
        if not chosen:
            raise UsageError(f"{path} has no environment named {name}",
                             hint="environments: " + ", ".join(str(p.get("name")) for p in plans))
        return chosen[0]
    if len(plans) != 1:
        raise UsageError(f"{path} holds {len(plans)} environments; choose one with --name",
                         hint="environments: " + ", ".join(str(p.get("name")) for p in plans))
    return plans[0]
