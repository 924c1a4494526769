"""The set of changes an apply executes.

The changes themselves are computed by the planner (``vbdecl.plan.diff``,
pure): creates, in-place updates, destroys, replaces, and drift observed by
live probes. The engine only needs them grouped: what to do, and what was
observed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vbdecl.plan.diff import METADATA, Change


@dataclass
class ChangeSet:
    """The planner's changes for one apply.

    Entries with ``drift=True`` are observations shown first; they are not steps.
    """

    changes: list[Change] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def todo(self) -> list[Change]:
        return [c for c in self.changes if c.symbol and not c.drift]

    @property
    def drift(self) -> list[Change]:
        return [c for c in self.changes if c.drift]

    @property
    def metadata_only(self) -> bool:
        """Only the manifest's metadata changed: an apply records it, with no step."""
        return not self.todo and any(c.kind == METADATA for c in self.changes)

    def __bool__(self) -> bool:
        return bool(self.todo) or self.metadata_only

    def counts(self) -> dict[str, int]:
        out = {"+": 0, "~": 0, "-": 0, "-/+": 0}
        for c in self.todo:
            out[c.symbol] += 1
        return out

    def summary(self) -> str:
        c = self.counts()
        return (f"Plan: {c['+'] + c['-/+']} to add, {c['~']} to change, "
                f"{c['-'] + c['-/+']} to destroy.")


__all__ = ["Change", "ChangeSet"]
