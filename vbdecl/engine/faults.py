"""``VBDECL_FAULT``: the test hook of MANIFEST.md.

``VBDECL_FAULT=<id>`` makes that action fail when it is applied;
``<id>:revert`` makes its revert fail; a comma-separated list combines them.
Inert unless set. The executor consults it for every step, so every op gets it;
so does ``vbdecl run``: its host actions (runtime/hostactions.py), and the
sandbox's steps, which parse it alike (runtime/child.py injected_faults). An id
in no plan or state gets a warning (:func:`unknown`).

``VBDECL_TEST_CRASH_BEFORE_DONE=<id>`` makes the process SIGKILL itself once
the apply (or update) of that action has run, before its ``done`` entry is
journaled; ``<id>:revert`` does the same after its revert; a comma-separated
list combines them. That is the window in which a crash leaves an intent
without a record, which recovery must close with ``probe(params, None)``
(``VBDECL_TEST_CRASH_AFTER`` in vbdecl/engine/journal.py only kills right after
a journal entry). Inert unless set.

``VBDECL_TEST_CRASH_AT=<point>`` makes the process SIGKILL itself at a named
point outside any action: ``init-pid`` and ``process-started`` (:func:`crash_at`,
runtime/live.py: the init, or the process, started and not yet on record),
``undone:<step>:<id>`` (a rollback's undo of that action's create, update or
destroy has run, its ``undone`` entry not yet journaled) and
``root-entry:N`` (runtime/rootfs.py, which kills the run's process group from
pid 1 and cannot import this module there). Inert unless set.
"""

from __future__ import annotations

import os

from vbdecl.errors import ActionError


class Faults:
    def __init__(self, spec: str | None = None) -> None:
        spec = os.environ.get("VBDECL_FAULT", "") if spec is None else spec
        self.apply, self.revert = _parse(spec)
        self.crash_apply, self.crash_revert = _parse(os.environ.get("VBDECL_TEST_CRASH_BEFORE_DONE", ""))

    def __bool__(self) -> bool:
        return bool(self.apply or self.revert or self.crash_apply or self.crash_revert)

    def check_apply(self, action_id: str) -> None:
        if action_id in self.apply:
            raise ActionError("injected fault (VBDECL_FAULT)", action=action_id,
                              hint="unset VBDECL_FAULT; it is a test hook")

    def check_revert(self, action_id: str) -> None:
        if action_id in self.revert:
            raise ActionError("injected revert fault (VBDECL_FAULT)", action=action_id,
                              hint="unset VBDECL_FAULT, then run vbdecl recover")

    def check_crash_before_done(self, action_id: str, *, revert: bool = False) -> None:
        """A step of ``action_id`` (its revert with ``revert``) has run: die here,
        before its ``done`` is journaled (VBDECL_TEST_CRASH_BEFORE_DONE)."""
        if action_id in (self.crash_revert if revert else self.crash_apply):
            import signal

            os.kill(os.getpid(), signal.SIGKILL)


def unknown(known: set[str], spec: str | None = None) -> list[str]:
    """The items of ``VBDECL_FAULT`` (or ``spec``) whose action id is not in ``known``:
    they would make nothing fail, which a test must not take for a pass."""
    apply, revert = _parse(os.environ.get("VBDECL_FAULT", "") if spec is None else spec)
    return sorted({*(i for i in apply if i not in known),
                   *(f"{i}:revert" for i in revert if i not in known)})


def unknown_warning(items: list[str], where: str) -> str:
    return (f"VBDECL_FAULT names {', '.join(items)}: not an action of {where}, so it makes "
            "nothing fail (the ids are those of `vbdecl plan`)")


def _parse(spec: str) -> tuple[set[str], set[str]]:
    """``<id>[:revert],...`` -> (ids, ids of reverts)."""
    apply: set[str] = set()
    revert: set[str] = set()
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        if item.endswith(":revert"):
            revert.add(item[: -len(":revert")])
        else:
            apply.add(item)
    return apply, revert


def crash_at(point: str) -> None:
    """SIGKILL this process if ``VBDECL_TEST_CRASH_AT`` names ``point`` (a test hook)."""
    if os.environ.get("VBDECL_TEST_CRASH_AT") == point:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def interrupt_at(point: str) -> None:
    """SIGINT this process if ``VBDECL_TEST_INTERRUPT_AT`` names ``point`` (a test hook:
    a ^C that lands exactly there)."""
    if os.environ.get("VBDECL_TEST_INTERRUPT_AT") == point:
        import signal

        os.kill(os.getpid(), signal.SIGINT)
