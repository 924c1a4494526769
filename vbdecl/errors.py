"""One error tree for everything vbdecl reports to people.

Every error carries a message, an optional hint (what to do next) and an
optional location: ``file:line:col`` for manifests, an action id for apply.
The CLI prints ``str(err)`` without a traceback unless ``--debug``.
This module imports nothing heavy: the run path uses it.
"""

from __future__ import annotations


class VbdeclError(Exception):
    """Base of every error vbdecl raises on purpose."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None, where: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.where = where
        # every problem of several found at once, the first the error's own (--json
        # lists them all; the text names the others as "also ...")
        self.problems: list[Problem] = []

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        for p in self.problems[1:]:
            text += f"\n  also {p.message}" if p.where in ("", self.where) else f"\n  also {p.where}: {p.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class ManifestError(VbdeclError, ValueError):
    """A manifest that cannot be loaded or validated.

    ``problems`` holds every problem found in the file, each a
    :class:`Problem`, so that all of them are reported at once.
    """

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        where: str | None = None,
        problems: list[Problem] | None = None,
    ) -> None:
        super().__init__(message, hint=hint, where=where)
        self.problems: list[Problem] = problems or [Problem(where or "", message, hint)]

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


class Problem:
    """One located manifest problem: ``file:line:col: message`` plus a hint."""

    __slots__ = ("hint", "message", "where")

    def __init__(self, where: str, message: str, hint: str | None = None) -> None:
        self.where = where
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text

    def to_json(self) -> dict[str, str | None]:
        return {"where": self.where, "message": self.message, "hint": self.hint}


class PlanError(VbdeclError, ValueError):
    """The manifest is valid but cannot be compiled (cycle, unsatisfiable dependency)."""


class StalePlanError(VbdeclError):
    """A saved plan no longer matches the manifest or the recorded state."""


class LockedError(VbdeclError):
    """Another vbdecl command holds the environment's lock."""


class ActionError(VbdeclError):
    """An action failed while applying or reverting; ``where`` is its action id."""

    def __init__(
        self,
        message: str,
        *,
        action: str,
        hint: str | None = None,
        revert_errors: list[ActionError] | None = None,
    ) -> None:
        super().__init__(message, hint=hint, where=action)
        self.action = action
        self.revert_errors: list[ActionError] = revert_errors or []

    def __str__(self) -> str:
        text = super().__str__()
        for err in self.revert_errors:
            text += f"\n  revert also failed: {err.where}: {err.message}"
        return text


class ConflictError(VbdeclError):
    """A host object is in the way and is not owned by this environment."""

    holder: str | None = None   # who holds the object, when that is known


class StateError(VbdeclError):
    """The state directory is unreadable, corrupt or from an unknown format."""


class SysError(VbdeclError, OSError):
    """A kernel call failed; carries errno and the call that failed."""

    def __init__(
        self,
        message: str,
        *,
        errno: int = 0,
        hint: str | None = None,
        where: str | None = None,
    ) -> None:
        VbdeclError.__init__(self, message, hint=hint, where=where)
        self.errno = errno


class RuntimeSetupError(VbdeclError):
    """The sandbox could not be set up before the process started (exit 125)."""

    exit_code = 125


class UsageError(VbdeclError):
    """Bad command line."""

    exit_code = 1
