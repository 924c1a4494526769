"""Console entry points.

``run``, ``exec`` and ``vb`` are dispatched before any CLI framework, rich or
pydantic is imported: they are the hot path (see ARCHITECTURE.md, "the fast
path"). Everything else goes through :mod:`vbdecl.cli.main`.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

FAST_COMMANDS = ("run", "exec")
# The program that started this console command (set first thing by console_main and
# console_vb): `run` and vb tie a sandbox with die_with_parent to its life.
CALLER: int | None = None
# Global options that take a value and may stand before the command.
_VALUE_OPTIONS = ("--state-dir",)


def _command_index(argv: list[str]) -> int | None:
    """Where the command name is in ``argv`` (after the global options)."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in _VALUE_OPTIONS:
            i += 2
            continue
        if arg.startswith("-"):
            i += 1
            continue
        return i
    return None


def _command_of(argv: list[str]) -> str | None:
    i = _command_index(argv)
    return None if i is None else argv[i]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    ours = args[:args.index("--")] if "--" in args else args   # the rest is the sandbox's command
    at = _command_index(args)
    command = None if at is None else args[at]
    if at is not None and command == "vb":      # `vbdecl vb OPTIONS...`: the vb program's command line
        from vbdecl.cli.vb import main as vb

        return int(vb(args[at:], exit_now=argv is None))
    if command in FAST_COMMANDS and "--help" not in ours and "-h" not in ours:
        from vbdecl.cli.fast import main as fast_main

        # From the console (argv None) the fast path exits at once, skipping finalization.
        return int(fast_main(args, exit_now=argv is None))
    from vbdecl.cli.main import main as cli_main

    return int(cli_main(args))


def vb_main(argv: list[str] | None = None) -> int:
    from vbdecl.cli.vb import main as vb

    # From the console (argv None) vb exits at once when done, skipping finalization.
    return int(vb(sys.argv if argv is None else argv, exit_now=argv is None))


def flush_and_exit(code: int) -> NoReturn:
    """Flush what is buffered and leave at once: a console process has nothing to
    finalize, and interpreter teardown costs ~10 ms. A stdout the caller closed
    (``vb ... >&-``) is None here: nothing to flush."""
    from vbdecl.sys import oslite as os

    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _no_cycle_collection() -> None:
    """A console process of vbdecl lives one command and makes no garbage cycles
    worth collecting; the collections its start-up would trigger (each one walks
    every object, and then every forked child copies the pages it touched) cost
    vbdecl run ~1 ms. A sandbox's long-lived pid 1 allocates next to nothing."""
    import gc

    gc.disable()


def _undo_locale_coercion() -> None:
    """Python (PEP 538) may have set LC_CTYPE in its own environment at start-up.
    Every process a console command starts (run, exec, apply's live process, vb)
    is built from os.environ and must see the caller's environment, not ours.
    Embedders of the Python API keep their os.environ as they made it."""
    from vbdecl.sys import oslite as os

    if b"LC_CTYPE" not in os.environb:
        return
    try:
        with open("/proc/self/environ", "rb") as f:
            original = f.read().split(b"\0")
    except OSError:
        return
    given = [item[9:] for item in original if item.startswith(b"LC_CTYPE=")]
    if not given:       # (as os.environ does it: the process's environment and the dict)
        os.unsetenv(b"LC_CTYPE")
        del os.environb[b"LC_CTYPE"]
    else:     # the caller's own value (Python may have coerced LC_CTYPE=C too)
        os.putenv(b"LC_CTYPE", given[0])
        os.environb[b"LC_CTYPE"] = given[0]


# The PYTHON* variables that change what the interpreter loads or prints, or how it
# runs vbdecl's code; the others (PYTHONDONTWRITEBYTECODE, PYTHONPYCACHEPREFIX,
# PYTHONUNBUFFERED, ... which CI and benchmarks set) cost no restart of ~8 ms.
_INTRUSIVE = frozenset((
    b"PYTHONPATH", b"PYTHONHOME", b"PYTHONUSERBASE", b"PYTHONPLATLIBDIR", b"PYTHONEXECUTABLE",
    b"PYTHONWARNINGS", b"PYTHONWARNDEFAULTENCODING", b"PYTHONVERBOSE", b"PYTHONDEBUG", b"PYTHONINSPECT",
    b"PYTHONOPTIMIZE", b"PYTHONDEVMODE", b"PYTHONMALLOC", b"PYTHONMALLOCSTATS", b"PYTHONTRACEMALLOC",
    b"PYTHONPROFILEIMPORTTIME"))


def _isolate() -> None:
    """The caller's PYTHONPATH, PYTHONWARNINGS and the like are for the sandbox's
    process, not for the interpreter vbdecl runs on (a module of the caller's named
    like one of the standard library's broke vb): start again isolated (-I), with the
    environment as it was given (Python may have added LC_CTYPE to os.environ). Only
    this module and the package's were loaded so far. Only an -I on the interpreter's
    command line tells that it read no PYTHON* variable: the Makefile's ._pth
    interpreter reports itself isolated, yet has read them (CPython reads the
    environment before it finds the ._pth file), and pip drops a shebang's options."""
    from vbdecl.sys import oslite as os

    if _INTRUSIVE.isdisjoint(os.environb) or sys.orig_argv[1:2] == ["-I"]:
        return
    try:
        with open("/proc/self/environ", "rb") as given:
            env = dict(item.split(b"=", 1) for item in given.read().split(b"\0") if b"=" in item)
    except OSError:
        env = dict(os.environb)
    os.execve(sys.executable, [sys.executable, "-I", *sys.argv], env)


def _reserve_closed_stdio() -> None:
    """A standard fd the caller closed (``vbdecl exec ENV -- cmd >&-``) stays closed
    for the command, as bubblewrap leaves it, but no file of vbdecl's may take its
    number: the first one opened would land on the lowest free fd, and be written to
    as stdout or stderr, or handed on as one. Python has already told which are
    closed (its sys.stdin, stdout or stderr is None), so the usual case costs nothing.
    Each closed one gets /dev/null, close-on-exec, so that no command inherits it:
    0 and 1 as O_PATH, where reading or writing fails with EBADF as on a closed fd
    (an option naming one, such as --events-fd 1, fails as before); 2 for writing,
    where vbdecl's own messages are dropped (print(file=None) would put them on
    stdout, the command's output), at that number, taking no other."""
    if sys.stdin is not None and sys.stdout is not None and sys.stderr is not None:
        return
    from vbdecl.sys import oslite as os

    for fd, stream in enumerate((sys.stdin, sys.stdout, sys.stderr)):
        if stream is None:
            try:
                got = os.open("/dev/null", (os.O_WRONLY if fd == 2 else os.O_PATH) | os.O_CLOEXEC)
            except OSError:         # (no /dev/null: nothing to hold the number with)
                continue
            if got != fd:       # (it was open after all: leave it)
                os.close(got)
            elif fd == 2:
                sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115 (for the process's life)


def _quiet_interrupts() -> None:
    """Until a command can tell the user it was interrupted, a ^C ends the process as it
    ends a C program, without a word (bubblewrap does so; before, Python printed a
    traceback of whichever import was under way). The commands that report an
    interrupt take it back (:func:`interrupts_raise`); vb never does. A SIGINT the
    caller ignores (a shell's background job) stays ignored: Python leaves it so."""
    import _signal

    if _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler:
        _signal.signal(_signal.SIGINT, _signal.SIG_DFL)


def interrupts_raise() -> None:
    """A ^C raises KeyboardInterrupt again (Python's own handler), where the command's
    code reports it ("interrupted", 130); not if the caller ignores SIGINT."""
    import _signal

    if _signal.getsignal(_signal.SIGINT) == _signal.SIG_DFL:
        _signal.signal(_signal.SIGINT, _signal.default_int_handler)


def _fast_imports() -> None:
    import vbdecl
    from vbdecl import fastimport

    fastimport.install(vbdecl)


def _note_caller() -> None:
    global CALLER
    from vbdecl.sys import oslite as os

    CALLER = os.getppid()


def console_main(*, isolate: bool = True) -> None:
    """The vbdecl program. ``isolate`` false (``python -m vbdecl``, maybe from a
    checkout on PYTHONPATH): no isolated restart, which would lose that path."""
    _quiet_interrupts()
    _reserve_closed_stdio()
    if isolate:
        _isolate()
    _fast_imports()
    _note_caller()
    _no_cycle_collection()
    _undo_locale_coercion()
    sys.exit(main())


def console_vb() -> None:
    _quiet_interrupts()
    _reserve_closed_stdio()
    _isolate()
    _fast_imports()
    _note_caller()
    _no_cycle_collection()
    _undo_locale_coercion()
    sys.exit(vb_main())
