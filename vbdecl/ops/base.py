"""The action contract (ARCHITECTURE.md, "Actions").

An op is stateless; everything it needs comes from the action's ``params``
and the :class:`Context`. ``apply`` returns a record of exactly what it
created; ``revert`` undoes that record, is idempotent, checks live state,
and touches only what the record says this environment owns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

Record = dict[str, Any]
Params = dict[str, Any]


class Records(dict[str, Record]):
    """The records of landed actions, by id, with a ``version`` that every change
    through ``[rid] =``, ``pop`` and ``del`` moves on: what an op works out from all of
    them (ops.fs's indexes) is kept while the version stays."""

    version = 0

    def __setitem__(self, rid: str, record: Record) -> None:
        super().__setitem__(rid, record)
        self.version += 1

    def __delitem__(self, rid: str) -> None:
        super().__delitem__(rid)
        self.version += 1

    def pop(self, rid: str, *default: Any) -> Any:
        self.version += 1
        return super().pop(rid, *default)


@dataclass
class Context:
    """What an op may know about the environment it acts for."""

    name: str                      # the environment's name (metadata.name)
    instance: str                  # unique instance id, e.g. "vb-3fa9c2"; tags every host object
    state_dir: str                 # this environment's state directory
    runtime_dir: str               # this environment's runtime directory (pinned ns, sockets)
    spec: dict[str, Any] = field(default_factory=dict)      # the normalized spec
    records: dict[str, Record] = field(default_factory=dict)  # records of landed actions, by id
    env_pid: int | None = None     # pid of the environment's init (host pid namespace), if live
    # The live environment outlives this transaction (an update, or the rollback of one):
    # reverting what it runs in (its cgroup) must not end it.
    env_stays: bool = False
    # apply() makes again what a destroy of this transaction took away, or update() sets
    # back what an update changed (a rollback): the checks that guard a new object against
    # the host (a host port in use, a file source edited since its plan) stand aside
    restoring: bool = False
    extra: dict[str, Any] = field(default_factory=dict)     # per-family scratch (sockets, caches)
    # What the last op call wants said, though it did its job (a directory it left
    # because the environment wrote into it): the executor emits them as action.note
    notes: list[str] = field(default_factory=list)


class Op(Protocol):
    """An action kind's operations. Optional class attributes: ``revert_leaves``,
    its revert leaves the object to another (rootfs's root goes with the mount
    namespace), so undoing a destroy that landed probes before making it again;
    ``undo_by_update``, a revert cut short can leave the object there but changed
    (a limit reset, its directory kept), which the undo sets back with update().

    Optional methods: ``observe(ctx, params)`` says what is at the action's place
    before it is created (plain data, journaled with the intent); an apply killed
    before its record was journaled is then judged by ``recover(ctx, params,
    before)``, the record of what it made or changed (None: nothing), where
    ``probe(ctx, params, None)`` could not tell what it made from what was there.
    An update killed so is undone by update() back to the old params, from the
    record ``undo_from(record, before)`` gives, when the op has it (what the
    update changed that the record does not say how to set back)."""

    def describe(self, params: Params) -> str: ...

    def probe(self, ctx: Context, params: Params, record: Record | None) -> Record | None:
        """What exists now: the live record, or None when the object is gone."""
        ...

    def apply(self, ctx: Context, params: Params) -> Record: ...

    def revert(self, ctx: Context, record: Record) -> None: ...

    def update(self, ctx: Context, params: Params, record: Record) -> Record:
        """Change in place (only for actions whose change is not a replace)."""
        ...
