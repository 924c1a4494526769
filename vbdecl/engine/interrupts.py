"""Interrupts (SIGINT, SIGTERM) of an apply, a destroy or a recovery.

An interrupt raised in the middle of an action can land anywhere in its
Python, also inside the first import of a module: the half-made module then
breaks every later call that needs it, the rollback's included (a crash
review saw pyroute2's asyncio fail with "name 'coroutines' is not defined"
in every revert after one ^C, and the environment left for `recover`).

So the console commands take the first interrupt as a request: the running
step finishes, then the transaction stops between two actions (:func:`check`)
and rolls back, and a rollback or recovery under way goes on to its end. A
second interrupt stops at once, as before (the journal and `vbdecl recover`
cover that). Nothing changes for an embedder that did not call
:func:`install`: its own handlers decide.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

_requested = False      # an interrupt arrived during a step; raised at the next check()
_raised = False         # check() raised one: any interrupt after it stops at once
_steps = 0              # depth of the deferred() blocks running


class Interrupted(KeyboardInterrupt):
    """The interrupt a step deferred, raised between two actions."""


def install() -> None:
    """SIGINT and SIGTERM interrupt the command, a step under way first finishing; not
    one the caller ignores (a background job of a shell script ignores SIGINT, so that
    a ^C meant for the script's foreground does not stop it: a review saw it replaced)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) != signal.SIG_IGN:
            signal.signal(sig, _handler)


def _handler(signum: int, frame: object) -> None:
    global _requested
    if _steps and not _requested and not _raised:
        _requested = True
        try:
            os.write(2, b"vbdecl: interrupted: finishing the step under way first "
                        b"(interrupt again to stop at once)\n")
        except OSError:
            pass
        return
    raise KeyboardInterrupt


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A step (or a whole rollback) that an interrupt does not cut short."""
    global _steps
    _steps += 1
    try:
        yield
    finally:
        _steps -= 1


def check() -> None:
    """Between two actions: raise the interrupt that came during a step. The rollback
    that follows goes on through a next interrupt no more: that one is the second."""
    global _requested, _raised
    if _requested:
        _requested = False
        _raised = True
        raise Interrupted


def pending() -> bool:
    """Whether an interrupt came that no check() raised yet (one during a commit)."""
    return _requested
