"""The transaction executor: apply, destroy and recover one environment.

Usage (the CLI does the same; embedders may too)::

    engine = Engine(state_dir, on_event=print)
    with engine.session("web") as s:        # takes the env lock, recovers first
        changes = s.changes(plan)            # probes live state: drift
        result = s.apply(plan, changes)      # journaled; rolled back on failure

Every step is journaled before it runs (``intent``) and after it landed
(``done``); on the first failure the landed steps are undone in reverse
order (``undo`` / ``undone``) and an ActionError naming the failing action is
raised, with failed undos attached. A rollback that cannot finish leaves
the transaction open, and the next command on the environment (or
``vbdecl recover``) finishes it. A crash leaves it open too; recovery
replays the journal over the committed ``state.json``: an apply is rolled
back, a destroy is rolled forward. ``state.json`` changes only at commit.
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from vbdecl.engine import interrupts, paths, store
from vbdecl.engine import journal as journal_mod
from vbdecl.engine import lock as lock_mod
from vbdecl.engine.changes import Change, ChangeSet
from vbdecl.engine.faults import Faults, crash_at, interrupt_at
from vbdecl.errors import ActionError, Problem, StateError, VbdeclError
from vbdecl.ops import let_go, preflight_problem
from vbdecl.ops.base import Context, Records

Event = dict[str, Any]
EventCallback = Callable[[Event], None]
Resource = dict[str, Any]
# ~30 applies of a full manifest (a review measured 641 KB after 20): every `ls`,
# `status` and command start reads the current journal whole, and two generations
# stay on disk
JOURNAL_ROTATE_BYTES = 1 << 20
_VERB = {"create": "apply", "update": "update", "destroy": "revert"}


@dataclass
class Result:
    name: str
    instance: str | None
    revision: int | None
    serial: int | None
    changes: list[Change] = field(default_factory=list)
    steps: int = 0
    recovered: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "instance": self.instance, "revision": self.revision,
                "serial": self.serial, "steps": self.steps, "recovered": self.recovered,
                "changes": [c.to_json() for c in self.changes]}


def _now() -> float:
    return time.time()


def _op(kind: str) -> Any:
    from vbdecl.ops import op_for

    try:
        return op_for(kind)
    except KeyError:
        raise StateError(f"no op for action kind {kind!r}",
                         hint="this vbdecl does not know that kind; upgrade, or check the plan") from None


def _can_update(kind: str) -> bool:
    try:
        op = _op(kind)
    except StateError:
        return False
    return callable(getattr(op, "update", None)) and not getattr(op, "no_update", False)


def _changed(recorded: Any, live: Any) -> bool:
    """Whether a live record differs from the recorded one in a recorded key (as drift)."""
    return isinstance(recorded, dict) and isinstance(live, dict) and \
        any(live.get(k) != v for k, v in recorded.items())


def _wrap(exc: BaseException, action: str, what: str) -> ActionError:
    if isinstance(exc, ActionError) and exc.action == action:
        return exc
    if isinstance(exc, journal_mod.JournalError):   # (not the step's failure: its journal's)
        err = ActionError(exc.message, action=action, hint=exc.hint)
        err.__cause__ = exc
        return err
    hint = exc.hint if isinstance(exc, VbdeclError) else None
    msg = exc.message if isinstance(exc, VbdeclError) else (str(exc) or type(exc).__name__)
    if isinstance(exc, KeyboardInterrupt):
        msg = "interrupted (SIGINT or SIGTERM)"
    if isinstance(exc, VbdeclError) and exc.where and exc.where != action:
        msg = f"{exc.where}: {msg}"
    err = ActionError(f"{what} failed: {msg}", action=action, hint=hint)
    if isinstance(exc, KeyboardInterrupt):
        err.exit_code = 130     # (as a shell has it for SIGINT)
    err.__cause__ = exc
    return err


class Engine:
    """Entry point for embedders: one per command (holds settings, not state)."""

    def __init__(self, state_dir: str | os.PathLike[str] | None = None, *,
                 on_event: EventCallback | None = None, lock_timeout: float = 0.0,
                 command: str | None = None, sync: bool = True,
                 faults: Faults | None = None) -> None:
        self.state_dir = str(paths.state_root(state_dir))
        # From the caller's choice, not from state_dir (absolute, so it would always
        # look like an override): /run/vbdecl for root unless a state dir was chosen.
        self.runtime_root = str(paths.runtime_root(state_dir))
        self.on_event = on_event
        self.lock_timeout = lock_timeout
        self.command = command
        self.sync = sync
        self.faults = Faults() if faults is None else faults

    def emit(self, event: str, **data: Any) -> None:
        if self.on_event is not None:
            self.on_event({"event": event, "time": _now(), **data})

    @contextlib.contextmanager
    def session(self, name: str, *, recover: bool = True, create: bool = True,
                then: str | None = None) -> Iterator[Session]:
        """Lock ``name`` for the block; recover an open transaction first.

        ``create=False``: an environment without a state directory is an error
        (and nothing is created for it). ``then``: the command the block runs,
        "apply" or "destroy", to which an apply whose rollback cannot finish is
        abandoned (Session.recover_or_abandon).
        """
        if not create and not paths.is_dir(paths.env_dir(name, self.state_dir)):
            raise StateError(f"environment {name!r} does not exist",
                             hint="vbdecl ls lists the environments")
        lock = lock_mod.env_lock(name, self.state_dir, timeout=self.lock_timeout,
                                 command=self.command)
        try:
            s = Session(self, name, lock)
        except BaseException:
            lock.release()   # e.g. an unreadable state.json: never keep the lock past the error
            raise
        try:
            if then is not None:
                s.recover_or_abandon(then)
            elif recover:
                s.recover()
            yield s
        finally:
            s.close()

    # Convenience wrappers, one command each.
    def apply(self, plan: dict[str, Any]) -> Result:
        with self.session(plan["name"], then="apply") as s:
            return s.apply(plan)

    def destroy(self, name: str) -> Result:
        with self.session(name, create=False, then="destroy") as s:
            return s.destroy()

    def recover(self, name: str) -> bool:
        if not os.path.isdir(paths.env_dir(name, self.state_dir)):
            return False
        with self.session(name, recover=False, create=False) as s:
            return s.recover()

    def changes(self, plan: dict[str, Any], *, probe: bool = True) -> ChangeSet:
        """Changes without the lock (for ``plan``); the state may move after."""
        return self.reader(plan["name"]).changes(plan, probe=probe)

    def reader(self, name: str) -> Session:
        """A Session without the lock, for read-only probes (``plan``, ``status``, ``ls``)."""
        s = Session(self, name, None)
        s.attach(store.load(name, self.state_dir))
        return s


class Session:
    """One environment, locked. Created by :meth:`Engine.session`."""

    def __init__(self, engine: Engine, name: str, lock: lock_mod.Lock | None) -> None:
        self.engine = engine
        self.name = name
        self.lock = lock
        self.sd = engine.state_dir
        self.state: dict[str, Any] | None = store.load(name, self.sd) if lock else None
        self.res: dict[str, Resource] = {}
        self.records: Records = Records()
        self._env_id: str | None = None
        self._context: Context | None = None
        self.journal: journal_mod.Journal | None = None
        self.txn: str | None = None
        self.spec: dict[str, Any] = {}
        self.instance = ""
        self.deps: dict[str, list[str]] = {}
        self.steps = 0
        # what recover() did at the start of this session: "committed", "rolled back",
        # "destroyed" (an interrupted destroy finished), "abandoned" (recover_or_abandon),
        # or None
        self.recovered: str | None = None
        self._txn_runtime_dir: str | None = None   # the runtime dir the transaction journaled
        self._env_stays = False     # see Context.env_stays; set for one transaction
        self._left_gone: set[str] = set()   # what the last rollback left gone (_leave_gone)
        self._keep_revisions = store.KEEP_REVISIONS   # (VBDECL_KEEP_REVISIONS, read by apply)
        self._purge = False         # close() removes the environment's directory (purge())
        self._abandoned: dict[str, Any] | None = None   # the begin of an apply recover_or_abandon gave up

    def attach(self, state: dict[str, Any] | None) -> None:
        """Work on ``state`` (its instance, resources and plan context)."""
        self.state = state
        self.instance = (state or {}).get("instance") or ""
        self._reset(copy.deepcopy((state or {}).get("resources") or {}))
        self._load_context((state or {}).get("plan"))

    def close(self) -> None:
        if self.instance:
            let_go(self.instance)
        if self.journal is not None:
            self.journal.close()
            self.journal = None
        if self.lock is not None:
            try:
                if self._purge:
                    self._remove_env_dir()
                else:
                    self._rotate_journal()
                    self._forget_if_empty()     # (last: once its lock file is gone, it is not ours)
            finally:
                self.lock.release()
                self.lock = None

    # --- plumbing -------------------------------------------------------------

    def _rotate_journal(self) -> None:
        """Keep the journal bounded: once closed and large, it becomes journal.jsonl.1."""
        path = paths.journal_file(self.name, self.sd)
        try:
            if os.stat(path).st_size < JOURNAL_ROTATE_BYTES:
                return
        except OSError:
            return
        if journal_mod.open_transaction(journal_mod.read(path)) is not None:
            return
        os.replace(path, path + ".1")
        from vbdecl.engine.atomic import fsync_dir

        fsync_dir(os.path.dirname(path))

    def _journal(self) -> journal_mod.Journal:
        if self.journal is None:
            self.journal = journal_mod.Journal(paths.journal_file(self.name, self.sd),
                                               sync=self.engine.sync)
        return self.journal

    def _log(self, t: str, **data: Any) -> None:
        # "done"/"undone" need not be durable at once: the next entry's fdatasync
        # covers them, and an action whose "done" was lost is found by recovery
        # as in flight and probed. Everything else is durable before we go on.
        self._journal().append({"t": t, "txn": self.txn, **data},
                               sync=t not in ("done", "undone"))

    # The working copy of the resources; every change goes through these three,
    # which keep the records the ops see (ctx.records) in step, in O(1).
    def _reset(self, resources: dict[str, Resource]) -> None:
        self.res = resources
        self.records = Records((k, v.get("record") or {}) for k, v in resources.items())
        self._env_id = next((k for k, v in resources.items()
                             if v.get("kind") == "env.namespaces"), None)

    def _set(self, rid: str, res: Resource) -> None:
        self.res[rid] = res
        self.records[rid] = res.get("record") or {}
        if res.get("kind") == "env.namespaces":
            self._env_id = rid

    def _drop(self, rid: str) -> None:
        self.res.pop(rid, None)
        self.records.pop(rid, None)

    def _env_pid(self) -> int | None:
        """The environment's init pid, from the landed ``env.namespaces`` record."""
        res = self.res.get(self._env_id) if self._env_id else None
        pid = ((res or {}).get("record") or {}).get("pid")
        return int(pid) if pid else None

    def _recorded_runtime_dir(self) -> str | None:
        res = self.res.get(self._env_id) if self._env_id else None
        recorded = ((res or {}).get("record") or {}).get("runtime_dir")
        return str(recorded) if recorded else None

    def _runtime_dir(self) -> str:
        """The environment's runtime directory: the one its ``env`` record names (an
        environment keeps the directory it was started with, also one made before
        vbdecl used /run/vbdecl by default), else the one its transaction journaled,
        else ``<runtime root>/<instance>``."""
        recorded = self._recorded_runtime_dir() or self._txn_runtime_dir
        if recorded:
            return recorded
        d = os.path.join(self.engine.runtime_root, self.instance)
        # A transaction journaled without its runtime dir (by an older vbdecl) used
        # <state>/run/<instance>, also with the default state root.
        legacy = os.path.join(self.sd, "run", self.instance)
        if legacy != d and not os.path.isdir(d) and os.path.isdir(legacy):
            return legacy
        return d

    def _ctx(self) -> Context:
        """The Context for the next op call (one object per session, kept current)."""
        ctx = self._context
        if ctx is None or ctx.instance != self.instance or ctx.records is not self.records:
            ctx = self._context = Context(
                name=self.name, instance=self.instance,
                state_dir=str(paths.env_dir(self.name, self.sd)),
                runtime_dir=self._runtime_dir(), spec=self.spec, records=self.records)
        else:
            recorded = self._recorded_runtime_dir()
            if recorded:
                ctx.runtime_dir = recorded
        ctx.spec = self.spec
        # the spec on record (an update's old one): what its sandbox could write counts too
        ctx.extra["recorded_spec"] = ((self.state or {}).get("plan") or {}).get("spec") or {}
        ctx.env_pid = self._env_pid()
        ctx.env_stays = self._env_stays
        return ctx

    def _stays(self, touched: set[str], *, fresh: bool) -> bool:
        """Whether the live environment outlives a transaction whose steps touch the
        actions ``touched``: it existed before, and no step replaces or removes it."""
        return not fresh and self._env_id is not None and self._env_id not in touched

    def _load_context(self, plan: dict[str, Any] | None) -> None:
        self.spec = (plan or {}).get("spec") or {}
        self.deps = {a["id"]: list(a.get("deps", ())) for a in (plan or {}).get("actions", [])}

    # --- plan ----------------------------------------------------------------

    def changes(self, plan: dict[str, Any], *, probe: bool = True) -> ChangeSet:
        """What an apply of ``plan`` would do, with drift from live probes."""
        state = self.state
        resources: dict[str, Resource] = (state or {}).get("resources") or {}
        self.instance = (state or {}).get("instance") or ""
        self._reset(copy.deepcopy(resources))
        self._load_context((state or {}).get("plan") or plan)
        from vbdecl.plan.diff import changes

        live = self.live() if (probe and resources) else None
        return ChangeSet(list(changes(plan, state, live)))

    def live(self) -> dict[str, Any]:
        """``{id: live record or None}`` for every resource whose probe worked.

        Keys a probe reports beyond the stored record (an interface index, a
        usage figure) are information, not drift: only the recorded keys are
        kept, so drift means "gone" or "a recorded value changed".
        """
        out: dict[str, Any] = {}
        for rid, res in self.res.items():
            try:
                found = _op(res["kind"]).probe(self._ctx(), res.get("params") or {},
                                               res.get("record"))
            except Exception as exc:
                self.engine.emit("probe.failed", id=rid, error=str(exc))
                continue
            record = res.get("record")
            if isinstance(found, dict) and isinstance(record, dict):
                found = {k: found.get(k) for k in record}
            out[rid] = found
        return out

    def check_fresh(self, saved: dict[str, Any]) -> None:
        """Refuse a saved plan made against another state (lineage/serial), by
        another vbdecl, or from a manifest that changed since (called under the lock)."""
        if "state" not in saved:
            return  # a bare compiled plan: nothing recorded to compare with
        from vbdecl.plan.saved import check_fresh

        check_fresh(saved, self.state)

    # --- apply ---------------------------------------------------------------

    def apply(self, plan: dict[str, Any], changes: ChangeSet | None = None, *,
              note: str | None = None, from_revision: dict[str, Any] | None = None) -> Result:
        if plan.get("name") != self.name:
            raise StateError(f"plan is for {plan.get('name')!r}, not {self.name!r}")
        if changes is None:
            changes = self.changes(plan)
        old_state = self.state
        state = copy.deepcopy(old_state) if old_state else store.new_state(self.name, self.sd)
        state.pop("abandoned", None)
        self.instance = state["instance"]
        self._reset(copy.deepcopy(state["resources"]))
        if not changes:
            self._persist_abandon()    # what was left is what the manifest asks for
            self.engine.emit("apply.nothing", name=self.name)
            return Result(self.name, self.instance, state.get("revision"), state.get("serial"))
        steps = self._steps(changes, old_state)
        self._preflight(steps)
        self._keep_revisions = store.keep_revisions()     # (a bad value: an error before any step)
        self._persist_abandon()
        base_rev = max([state.get("revision") or 0, *store.revision_numbers(self.name, self.sd)])
        self.txn = uuid.uuid4().hex
        # Dependencies of both plans, for the rollback's "keep what a failure needs" rule.
        self._load_context(plan)
        self._merge_deps((old_state or {}).get("plan"))
        self._txn_runtime_dir = None            # (not a recovered transaction's)
        self._txn_runtime_dir = self._runtime_dir()
        # A first interrupt takes effect at a check() only: between two steps, and after
        # the last one (a rollback), never between the journal's begin and the first
        # check, or between the last check and the commit, or inside it (an open
        # transaction, a review saw): an interrupt that comes during the commit lets it
        # finish, as it does the step under way.
        with interrupts.deferred():
            self._log("begin", op="apply", pid=os.getpid(), time=_now(), lineage=state["lineage"],
                      base_serial=(old_state or {}).get("serial"), target_serial=state["serial"] + 1,
                      base_revision=base_rev, instance=self.instance, fresh=old_state is None,
                      runtime_dir=self._txn_runtime_dir, plan=plan)
            self.engine.emit("apply.started", name=self.name, instance=self.instance,
                             steps=len(steps), summary=changes.summary())
            self._env_stays = self._stays({rid for _step, rid, *_ in steps}, fresh=old_state is None)
            return self._run_and_commit(plan, changes, steps, state, old_state, base_rev, note,
                                        from_revision)

    def _run_and_commit(self, plan: dict[str, Any], changes: ChangeSet, steps: list[Any],
                        state: dict[str, Any], old_state: dict[str, Any] | None, base_rev: int,
                        note: str | None, from_revision: dict[str, Any] | None) -> Result:
        seq = 0
        landed = 0
        try:
            for step, rid, kind, params, prev in steps:
                seq += 1
                interrupts.check()
                self._forward(seq, step, rid, kind, params, prev)
                landed += 1
            interrupts.check()      # (one during the last step: before the commit)
        except BaseException as exc:
            if isinstance(exc, interrupts.Interrupted):
                when = "after the last step, before the commit" if landed == len(steps) else \
                    "before this step began"
                err = ActionError(f"interrupted (SIGINT or SIGTERM) {when}", action=rid)
                err.exit_code = 130
            else:
                err = exc if isinstance(exc, ActionError) else _wrap(exc, rid, _VERB[step])
            self.engine.emit("action.failed", id=rid, step=step, error=err.message)
            try:
                revert_errors = self._rollback(self._txn_entries(), fresh=old_state is None,
                                               base_revision=base_rev)
            except BaseException as rb:   # the rollback itself broke: never hide the original
                revert_errors = [_wrap(rb, rid, "rollback")]
            if revert_errors:
                err.revert_errors.extend(revert_errors)
                if old_state is not None and not self._env_stays:
                    # a replacement: its rollback would land in the old environment, gone
                    err.hint = (f"the rollback did not finish: this apply replaced the environment, "
                                f"and the old one cannot come back; go on from what it left: vbdecl "
                                f"apply FILE, or vbdecl destroy {self.name}")
                else:
                    err.hint = (f"the rollback did not finish; fix the cause, then run vbdecl recover "
                                f"{self.name}; or go on from what it left: vbdecl apply FILE, or "
                                f"vbdecl destroy {self.name}")
            else:
                done = _rolled_back(steps[:landed + 1], fresh=old_state is None,
                                    left_gone=self._left_gone)
                err.hint = f"{err.hint}\n  {done}" if err.hint else done
            if err is exc:
                raise
            raise err from exc
        finally:
            self._env_stays = False
        # Commit: revision file, then state.json, then the marker.
        interrupt_at("commit")
        revision = base_rev + 1
        try:
            store.save_revision(self.name, revision, plan, self.sd, note=note, from_revision=from_revision)
            state.update(plan=plan, revision=revision, serial=state["serial"] + 1,
                         resources=self._ordered(plan))
            store.save(self.name, state, self.sd)
        except OSError as exc:
            self._commit_failed(exc, fresh=old_state is None, base_revision=base_rev)
        self._log("commit", serial=state["serial"], revision=revision)
        self.state = state
        with contextlib.suppress(OSError):      # (what is left goes at the next commit)
            store.prune_revisions(self.name, self.sd, self._keep_revisions)
        self.engine.emit("apply.committed", name=self.name, revision=revision,
                         serial=state["serial"], steps=len(steps))
        return Result(self.name, self.instance, revision, state["serial"], changes.changes,
                      steps=len(steps))

    def _preflight(self, steps: list[Any]) -> None:
        """Every op must exist, and every create must be possible as far as its op can
        tell (Op.preflight), before anything changes."""
        missing: dict[str, list[str]] = {}
        problems: list[tuple[str, str]] = []
        made = [(kind, params) for step, _rid, kind, params, _old in steps if step != "destroy"]
        for _step, rid, kind, params, _old in steps:
            try:
                op = _op(kind)
            except StateError:
                missing.setdefault(kind, []).append(rid)
                continue
            if _step == "update" and not callable(getattr(op, "update", None)):
                missing.setdefault(f"{kind} (update)", []).append(rid)
            problem = preflight_problem(op, params, self.name, state_dir=str(paths.env_dir(self.name, self.sd)),
                                        plan=made) if _step != "destroy" else None
            if problem:
                problems.append((rid, problem))
        if problems:
            rid, first = problems[0]
            err = ActionError(first, action=rid, hint="nothing was changed")
            err.problems = [Problem(r, p) for r, p in problems]
            raise err
        if missing:
            first = next(iter(missing.values()))[0]
            kinds = "; ".join(f"{k}: {', '.join(v[:3])}{' ...' if len(v) > 3 else ''}"
                              for k, v in missing.items())
            raise ActionError(f"this vbdecl cannot execute these actions ({kinds})",
                              action=first,
                              hint="nothing was changed; that resource family is not "
                                   "implemented in this version")

    def _steps(self, changes: ChangeSet, old_state: dict[str, Any] | None) -> list[Any]:
        """Destroys in reverse old order, then creates/updates in plan order."""
        todo = changes.todo
        gone: set[str] = set()
        stale: set[str] = set()
        for c in todo:
            if c.old is None or c.id not in self.res:
                continue
            # "-", "-/+", a "+" over a stale record (recreate after drift), and a
            # "~" the op cannot do in place all start by reverting the old record.
            if c.symbol in ("-", "-/+", "+") or (c.symbol == "~" and not _can_update(c.kind)):
                gone.add(c.id)
            if c.symbol == "+":
                stale.add(c.id)
        old_order = [a["id"] for a in ((old_state or {}).get("plan") or {}).get("actions", [])]
        old_order += [i for i in self.res if i not in old_order]
        steps: list[tuple[str, str, str, dict[str, Any], Resource | None]] = []
        for rid in reversed(old_order):
            if rid in gone:
                cur = self.res[rid]
                if rid in stale:    # its object was gone before the apply (_leave_gone)
                    cur = {**cur, "stale": True}
                steps.append(("destroy", rid, cur["kind"], cur.get("params") or {}, cur))
        for c in todo:
            if c.action is None:
                continue
            params = c.action.get("params") or {}
            if c.symbol in ("+", "-/+") or c.id in gone:
                steps.append(("create", c.id, c.kind, params, None))
            elif c.symbol == "~":
                steps.append(("update", c.id, c.kind, params, c.old))
        return steps

    def _ordered(self, plan: dict[str, Any]) -> dict[str, Resource]:
        order = [a["id"] for a in plan.get("actions", [])]
        out = {i: self.res[i] for i in order if i in self.res}
        out.update({i: r for i, r in self.res.items() if i not in out})
        return out

    def _txn_entries(self) -> list[journal_mod.Entry]:
        entries = journal_mod.read(paths.journal_file(self.name, self.sd))
        return [e for e in entries if e.get("txn") == self.txn]

    def _commit_failed(self, exc: OSError, *, fresh: bool, base_revision: int) -> None:
        """Every action landed but the state could not be written (a full disk): roll
        back, as after a failed action, and raise. The rollback journals too; when it
        cannot, the transaction stays open for `recover`."""
        what = f"{exc.filename}: " if exc.filename else ""
        err = ActionError(f"could not write the environment's state: {what}{exc.strerror}",
                          action="commit")
        try:
            revert_errors = self._rollback(self._txn_entries(), fresh=fresh, base_revision=base_revision)
            if not revert_errors and self.state is not None:
                # the new state.json may have landed (its rename done, the directory's
                # fsync failed): the state is the one from before again
                store.save(self.name, self.state, self.sd)
        except BaseException as rb:
            revert_errors = [_wrap(rb, "commit", "rollback")]
        if revert_errors:
            err.revert_errors.extend(revert_errors)
            err.hint = f"free space for vbdecl's state, then run vbdecl recover {self.name}"
        else:
            err.hint = ("free space for vbdecl's state and apply again; nothing was changed: "
                        "every action that landed was reverted")
        raise err from exc

    def _forward(self, seq: int, step: str, rid: str, kind: str, params: dict[str, Any],
                 old: Resource | None) -> None:
        with interrupts.deferred():
            self._step(seq, step, rid, kind, params, old)

    def _step(self, seq: int, step: str, rid: str, kind: str, params: dict[str, Any],
              old: Resource | None) -> None:
        ctx = self._ctx()
        before = self._observe(ctx, step, rid, kind, params)
        self._log("intent", seq=seq, step=step, id=rid, kind=kind, params=params, old=old,
                  **({"before": before} if before is not None else {}))
        self.engine.emit("action.started", id=rid, step=step, kind=kind, seq=seq)
        start = time.monotonic()
        record: dict[str, Any] | None
        ctx.notes.clear()
        try:
            if step == "destroy":
                self.engine.faults.check_revert(rid)
                assert old is not None
                _op(kind).revert(ctx, old.get("record") or {})
                record = None
            else:
                self.engine.faults.check_apply(rid)
                op = _op(kind)
                if step == "create":
                    record = op.apply(ctx, params)
                else:
                    assert old is not None
                    record = op.update(ctx, params, old.get("record") or {})
        except BaseException as exc:
            raise _wrap(exc, rid, _VERB[step]) from exc
        self.engine.faults.check_crash_before_done(rid, revert=step == "destroy")
        try:
            self._log("done", seq=seq, id=rid, record=record)
        except (TypeError, ValueError) as exc:
            # A record that cannot be journaled is an op bug; undo with the record
            # we still hold in memory, so nothing is left behind.
            if step == "create" and record is not None:
                try:
                    _op(kind).revert(ctx, record)
                except Exception:
                    pass
            raise ActionError(f"the record of {kind} is not plain data ({exc})", action=rid,
                              hint="this is a bug in the op: records must be JSON-serialisable"
                              ) from exc
        self.steps += 1
        if step == "destroy":
            self._drop(rid)
        else:
            self._set(rid, {"kind": kind, "params": params, "record": record})
        self.engine.emit("action.applied" if step != "destroy" else "action.destroyed",
                         id=rid, step=step, seconds=round(time.monotonic() - start, 6))
        self._emit_notes(rid)

    def _emit_notes(self, rid: str) -> None:
        """What the op call for ``rid`` wanted said (Context.notes), as action.note events."""
        ctx = self._ctx()
        for note in ctx.notes:
            self.engine.emit("action.note", id=rid, note=note)
        ctx.notes.clear()

    @staticmethod
    def _observe(ctx: Context, step: str, rid: str, kind: str, params: dict[str, Any]) -> Any:
        """What is at a create's (or an update's) place before it runs (Op.observe),
        for its intent."""
        observe = getattr(_op(kind), "observe", None) if step in ("create", "update") else None
        if observe is None:
            return None
        try:
            return observe(ctx, params)
        except BaseException as exc:
            raise _wrap(exc, rid, _VERB[step]) from exc

    def _unjournaled(self, intent: Any) -> Any:
        """The record of a create that ran without its record journaled (failed or
        killed in flight): judged against what was there before it when the intent
        says (Op.recover), else what the probe finds (only objects this instance owns)."""
        op, ctx = _op(intent["kind"]), self._ctx()
        recover = getattr(op, "recover", None)
        if recover is not None and intent.get("before") is not None:
            return recover(ctx, intent["params"], intent["before"])
        return op.probe(ctx, intent["params"], None)

    # --- rollback and recovery --------------------------------------------------

    def _replay(self, entries: list[journal_mod.Entry]) -> tuple[dict[int, Any], set[int]]:
        """Bring ``self.res`` from the committed state to what the journal says landed."""
        intents: dict[int, Any] = {}
        done: set[int] = set()
        for e in entries:
            t = e.get("t")
            if t == "intent":
                intents[e["seq"]] = e
            elif t == "done":
                done.add(e["seq"])
                i = intents[e["seq"]]
                if i["step"] == "destroy":
                    self._drop(i["id"])
                else:
                    self._set(i["id"], {"kind": i["kind"], "params": i["params"],
                                        "record": e.get("record")})
            elif t == "undone":
                i = intents[e["seq"]]
                self._apply_undo_effect(i, e.get("record"))
        return intents, done

    def _apply_undo_effect(self, intent: Any, record: Any) -> None:
        rid = intent["id"]
        if intent["step"] == "create":
            self._drop(rid)
        else:
            old = intent["old"]
            self._set(rid, {"kind": old["kind"], "params": old.get("params"),
                            "record": record if record is not None else old.get("record")})

    def _rollback(self, entries: list[journal_mod.Entry], *, fresh: bool,
                  base_revision: int) -> list[ActionError]:
        """Undo every step of an apply transaction that is not undone yet, to the end
        whatever the first interrupt (see engine/interrupts.py).

        Returns the undo failures; with none the transaction is closed (abort).
        """
        with interrupts.deferred():
            return self._undo_all(entries, fresh=fresh, base_revision=base_revision)

    def _undo_all(self, entries: list[journal_mod.Entry], *, fresh: bool,
                  base_revision: int) -> list[ActionError]:
        self._left_gone = set()
        base = copy.deepcopy((self.state or {}).get("resources") or {})
        self._reset(base)
        intents, done = self._replay(entries)
        undone = {e["seq"] for e in entries if e.get("t") == "undone"}
        # undos a rollback before this one began and did not finish (killed, or failed):
        # the first one's, whose "before" saw the place before any undo made it again
        begun: dict[int, Any] = {}
        for e in entries:
            if e.get("t") == "undo" and e["seq"] not in undone:
                begun.setdefault(e["seq"], e)
        errors: list[ActionError] = []
        failed: set[str] = set()
        for seq in sorted(intents, reverse=True):
            if seq in undone:
                continue
            intent = intents[seq]
            rid = intent["id"]
            if self._needed_by(rid, failed):
                failed.add(rid)
                continue
            before = begun[seq].get("before") if seq in begun else self._before_undo(intent)
            self._log("undo", seq=seq, id=rid, **({"before": before} if before is not None else {}))
            self.engine.emit("action.reverting", id=rid, step=intent["step"], seq=seq)
            self._ctx().notes.clear()
            try:
                record = self._undo(intent, landed=seq in done, begun=begun.get(seq), before=before)
            except Exception as exc:
                err = _wrap(exc, rid, "revert")
                errors.append(err)
                failed.add(rid)
                self.engine.emit("revert.failed", id=rid, error=err.message)
                continue
            crash_at(f"undone:{intent['step']}:{rid}")
            self._log("undone", seq=seq, id=rid, record=record)
            self._apply_undo_effect(intent, record)
            self.engine.emit("action.reverted", id=rid, step=intent["step"], seq=seq,
                             **({"left_gone": True} if rid in self._left_gone else {}))
            self._emit_notes(rid)
        if errors:
            return errors
        from vbdecl.ops import tidy_shared

        # (a command killed holding the network's or NAT's shared lock, before anything of
        # its own was there to undo, left the lock's file: as a run's janitor does)
        with contextlib.suppress(Exception):
            tidy_shared(self._ctx(), {i["kind"] for i in intents.values()})
        self._close_aborted(fresh=fresh, base_revision=base_revision)
        return []

    def _needed_by(self, rid: str, failed: set[str]) -> bool:
        """True when a failed undo's action depends (transitively) on ``rid``."""
        if not failed:
            return False
        seen: set[str] = set()
        stack = list(failed)
        while stack:
            cur = stack.pop()
            for dep in self.deps.get(cur, ()):
                if dep == rid:
                    return True
                if dep not in seen:
                    seen.add(dep)
                    stack.append(dep)
        return False

    def _before_undo(self, intent: Any) -> Any:
        """What is at the place of a destroyed object before its undo makes it again
        (Op.observe), journaled with the undo: a rollback killed after the object was
        made again, before its "undone", is judged by it, as an interrupted create is."""
        if intent["step"] != "destroy":
            return None
        old = intent["old"]
        try:
            return self._observe(self._ctx(), "create", intent["id"], old["kind"], old.get("params") or {})
        except Exception:       # (the undo itself will say what is wrong)
            return None

    def _undo(self, intent: Any, *, landed: bool, begun: Any = None, before: Any = None) -> Any:
        rid, kind, step = intent["id"], intent["kind"], intent["step"]
        if not landed and step == "create":
            try:
                _op(kind)
            except StateError:
                return None  # no op, so it cannot have done anything
        op = _op(kind)
        ctx = self._ctx()
        self.engine.faults.check_revert(rid)
        if step == "create":
            record = (self.res.get(rid) or {}).get("record") if landed else None
            if record is None and not landed:
                record = self._unjournaled(intent)  # in flight when it failed or the process died
            if record is not None:
                op.revert(ctx, record)
            return None
        old = intent["old"]
        if step == "update":
            op = _op(old.get("kind") or kind)     # (bind -> ro-bind: the way back is a bind's)
            current = (self.res.get(rid) or {}).get("record") or old.get("record") or {}
            undo_from = getattr(op, "undo_from", None)
            if not landed and undo_from is not None and intent.get("before") is not None:
                current = undo_from(current, intent["before"])
            ctx.restoring = True        # (see Context.restoring; only for this call)
            try:
                return op.update(ctx, old.get("params") or {}, current)
            finally:
                ctx.restoring = False
        # Undo a destroy: recreate what was there, unless it is still there: in flight
        # when it failed, or left by a revert that leaves its object to another (see
        # Op.revert_leaves: rootfs's root goes only with the mount namespace).
        if not landed or getattr(op, "revert_leaves", False):
            live = op.probe(ctx, old.get("params") or {}, old.get("record"))
            if live is not None:
                if getattr(op, "undo_by_update", False) and _changed(old.get("record"), live):
                    # half reverted (a limit reset, its directory still there): set it back
                    return op.update(ctx, old.get("params") or {}, old.get("record") or {})
                return old.get("record")
        if begun is not None:
            # An undo of this destroy was under way when the last rollback stopped: what
            # it made again (a new object, with a record of its own) is not made twice.
            made = self._unjournaled({"kind": old["kind"], "params": old.get("params") or {},
                                      "before": begun.get("before")})
            if made is not None:
                return made
        ctx.restoring = True        # (one Context serves the session: only for this call)
        try:
            return op.apply(ctx, old.get("params") or {})
        except Exception as exc:
            if not old.get("stale"):
                raise
            failed = exc
        finally:
            ctx.restoring = False
        return self._leave_gone(rid, old, before, failed)

    def _leave_gone(self, rid: str, old: Resource, before: Any, exc: Exception) -> Any:
        """The undo of a stale record's revert (its object was gone before this apply: a
        process that exited) could not make the object again, most likely for the reason
        the apply failed: the rollback leaves it as the apply found it, gone (drift, as
        before), rather than fail and hold the transaction open for a recover that
        would fail alike. What the attempt left is reverted first."""
        op = _op(old["kind"])
        left = self._unjournaled({"kind": old["kind"], "params": old.get("params") or {}, "before": before})
        if left is not None:
            op.revert(self._ctx(), left)
        self._left_gone.add(rid)
        self._ctx().notes.append(f"making it again failed: {_wrap(exc, rid, 'apply').message}")
        return old.get("record")

    def _close_aborted(self, *, fresh: bool, base_revision: int) -> None:
        # A state abandoned to this transaction's rollback (killed before its abort
        # entry) was never a committed one: a fresh environment never existed.
        never = fresh and (self.state is None or self.state.get("abandoned") == self.txn)
        if never:
            store.remove_state(self.name, self.sd)
            self.state = None
        # Records of re-created objects may differ from the committed ones.
        if self.state is not None and self.res != self.state.get("resources"):
            self.state["resources"] = self.res
            store.save(self.name, self.state, self.sd)
        self._drop_revisions_above(base_revision)
        self._log("abort")
        self.engine.emit("apply.aborted", name=self.name)
        if never:
            # (an env step interrupted before its init existed left the directory)
            self._remove_runtime_dir()
        if never and not store.revision_numbers(self.name, self.sd):
            # The environment never existed: leave the state directory as it was.
            self._forget_env()

    def _drop_revisions_above(self, base_revision: int) -> None:
        for n in store.revision_numbers(self.name, self.sd):
            if n > base_revision:
                try:
                    os.unlink(paths.revision_file(self.name, n, self.sd))
                except FileNotFoundError:
                    pass

    def _forget_if_empty(self) -> None:
        """An environment that never committed anything leaves no trace (also when
        a command was killed between its abort marker and its cleanup)."""
        d = paths.env_dir(self.name, self.sd)
        try:
            names = set(os.listdir(d))
        except OSError:
            return
        if not names <= {"lock", "journal.jsonl"}:
            return
        if "journal.jsonl" in names and journal_mod.open_transaction(
                journal_mod.read(os.path.join(d, "journal.jsonl"))) is not None:
            return
        if "journal.jsonl" in names and any(e.get("t") == "commit" for e in
                                            journal_mod.read(os.path.join(d, "journal.jsonl"))):
            return  # it had a life (a destroyed env without revisions): keep its journal
        self._remove_env_dir()

    def _forget_env(self) -> None:
        """Forget an environment that never existed. Its lock file stays while this
        session holds it (a recovery at a session's start goes on to the command it
        was opened for, under the lock): close() removes the directory."""
        if self.journal is not None:
            self.journal.close()
            self.journal = None
        self._remove_runtime_dir()
        store.clear_env_dir(self.name, self.sd)

    def _remove_env_dir(self) -> None:
        assert self.lock is not None        # (only a session holding the lock forgets)
        # Once the lock file is gone, a waiting command may take a new one at once and
        # make the directory anew: nothing of this session's may touch it after this.
        store.remove_env_dir(self.name, self.lock.fd, self.sd)

    def _remove_runtime_dir(self) -> None:
        if not self.instance:
            return
        ctx = self._context
        d = ctx.runtime_dir if ctx is not None and ctx.instance == self.instance \
            else self._runtime_dir()
        parent = os.path.dirname(d)
        for path in (os.path.join(d, "ns"), d, parent):  # each only when empty; the parent
            # only when ours (<state>/run)
            if path == parent and not paths.own_runtime_root(path, self.sd):
                break
            try:
                os.rmdir(path)
            except OSError:
                pass

    def recover(self) -> bool:
        """Finish an open transaction (roll back an apply, roll forward a destroy).

        Returns True when there was one. Raises ActionError if it cannot finish.
        """
        entries = journal_mod.read(paths.journal_file(self.name, self.sd))
        txn_entries = journal_mod.open_transaction(entries)
        if txn_entries is None:
            return False
        begin = txn_entries[0]
        self.txn = begin["txn"]
        self.instance = begin.get("instance") or (self.state or {}).get("instance") or ""
        self._txn_runtime_dir = begin.get("runtime_dir") or None
        op = begin.get("op")
        self.engine.emit("recovery.started", name=self.name, op=op, txn=self.txn,
                         pid=begin.get("pid"))
        state = self.state
        if op == "apply" and state is not None and state.get("lineage") == begin.get("lineage") \
                and state.get("serial") == begin.get("target_serial"):
            self._log("commit", serial=state["serial"], recovered=True)  # state had landed
            self._recovered("committed")
            return True
        if op == "destroy":
            self._load_context((state or {}).get("plan"))
            self._reset(copy.deepcopy((state or {}).get("resources") or {}))
            self._replay(txn_entries)
            errors = self._destroy_forward(start_seq=max(
                [e.get("seq", 0) for e in txn_entries] + [0]))
            if errors:
                raise self._recovery_error(errors, ways_on=False)
            self._recovered("destroyed")
            return True
        plan = begin.get("plan")
        self._load_context(plan)
        self._merge_deps((state or {}).get("plan"))
        if state is not None:
            self.spec = (state.get("plan") or {}).get("spec") or self.spec
        # the committed resources tell whether there is a live environment (_stays)
        self._reset(copy.deepcopy((state or {}).get("resources") or {}))
        self._env_stays = self._stays({e["id"] for e in txn_entries if e.get("t") == "intent"},
                                      fresh=bool(begin.get("fresh")))
        try:
            errors = self._rollback(txn_entries, fresh=bool(begin.get("fresh")),
                                    base_revision=int(begin.get("base_revision") or 0))
        finally:
            self._env_stays = False
        if errors:
            raise self._recovery_error(errors)
        self._recovered("rolled back")
        return True

    def recover_or_abandon(self, then: str) -> None:
        """recover(), before an apply or a destroy (``then``): an open apply whose
        rollback cannot finish (undos into an environment that died half-way, say)
        is abandoned instead: what it left becomes the state the command starts from
        (apply converges it to the manifest, destroy tears it down). Nothing of that
        is written until the command goes ahead (_persist_abandon)."""
        try:
            self.recover()
        except ActionError as err:
            if not self._abandon_apply():
                raise
            self.recovered = "abandoned"
            self.engine.emit("recovery.abandoned", name=self.name, error=err.message, then=then)

    def _abandon_apply(self) -> bool:
        """Work out, in memory, what an open apply left: the committed resources,
        what landed, what its rollback restored, and what exists of a create in
        flight or of a destroy whose undo began. False when no apply is open, or
        when a probe fails (then nothing can be said of what is there)."""
        txn_entries = journal_mod.open_transaction(journal_mod.read(paths.journal_file(self.name, self.sd)))
        if txn_entries is None or txn_entries[0].get("op") != "apply":
            return False
        begin = txn_entries[0]
        self.txn = begin["txn"]
        self.instance = begin.get("instance") or (self.state or {}).get("instance") or ""
        self._txn_runtime_dir = begin.get("runtime_dir") or None
        state = copy.deepcopy(self.state) if self.state is not None else {
            **store.new_state(self.name, self.sd), "instance": self.instance,
            "lineage": begin.get("lineage"), "plan": begin.get("plan")}
        self._load_context(state.get("plan"))
        self._merge_deps(begin.get("plan"))
        self._reset(copy.deepcopy(state.get("resources") or {}))
        intents, done = self._replay(txn_entries)
        undone = {e["seq"] for e in txn_entries if e.get("t") == "undone"}
        undoing = {e["seq"] for e in txn_entries if e.get("t") == "undo"} - undone
        for seq, intent in sorted(intents.items()):
            if seq in undone:
                continue
            try:
                if intent["step"] == "create" and seq not in done:
                    params = intent["params"]
                    # (a record of only part of it, directories made on the way, is kept:
                    # the probe finds it gone, and its recreate reverts it first)
                    found = self._unjournaled(intent)
                elif intent["step"] == "destroy" and seq in done and seq in undoing:
                    params = intent["old"].get("params") or {}
                    found = _op(intent["kind"]).probe(self._ctx(), params, intent["old"].get("record"))
                else:
                    continue    # its record is in self.res already, or it is gone
            except Exception:
                return False
            if found is not None:
                self._set(intent["id"], {"kind": intent["kind"], "params": params, "record": found})
        state.update(resources=self.res, serial=int(begin.get("target_serial") or 0) + 1,
                     abandoned=self.txn)
        self.state = state
        self._abandoned = begin
        return True

    def _persist_abandon(self) -> None:
        """The command goes ahead: the abandoned state is committed and the open apply
        closed, before the command's own transaction begins. ``abandoned`` marks the
        state until then (a kill in between: see _close_aborted)."""
        begin = self._abandoned
        if begin is None or self.state is None:
            return
        self._drop_revisions_above(int(begin.get("base_revision") or 0))
        store.save(self.name, self.state, self.sd)
        self.txn = begin["txn"]
        self._log("abort", abandoned=True)
        self._abandoned = None

    def _merge_deps(self, plan: dict[str, Any] | None) -> None:
        for a in (plan or {}).get("actions", []):
            self.deps.setdefault(a["id"], list(a.get("deps", ())))

    def _recovered(self, outcome: str) -> None:
        self.recovered = outcome
        self.engine.emit("recovery.finished", name=self.name, outcome=outcome)

    def _recovery_error(self, errors: list[ActionError], *, ways_on: bool = True) -> ActionError:
        """``ways_on``: an apply's rollback, which apply and destroy can abandon."""
        first = errors[0]
        hint = f"fix the cause, then run vbdecl recover {self.name}"
        if ways_on:
            hint += f"; or go on from what it left: vbdecl apply FILE, or vbdecl destroy {self.name}"
        return ActionError(f"recovery of {self.name!r} did not finish: {first.message}",
                           action=first.action, revert_errors=errors[1:], hint=hint)

    # --- destroy -------------------------------------------------------------

    def purge(self) -> None:
        """Forget a destroyed environment: its revisions, logs and journal go with its
        state directory when this session closes (``destroy --purge``)."""
        if self.state is not None:
            raise StateError(f"environment {self.name!r} is applied: its history stays while it lives",
                             hint=f"vbdecl destroy --purge {self.name} destroys it, then forgets it")
        self._purge = True

    def destroy(self) -> Result:
        state = self.state
        if state is None and self.recovered == "destroyed":
            # This session's recovery finished an interrupted destroy: what was asked is done.
            return Result(self.name, self.instance or None, None, None, recovered=True)
        if state is None:
            raise StateError(f"environment {self.name!r} has no state: nothing to destroy",
                             hint="vbdecl ls lists the environments")
        abandoned = self._abandoned
        self._persist_abandon()
        self.instance = state["instance"]
        self._load_context(state.get("plan"))
        self._merge_deps((abandoned or {}).get("plan"))     # what only the abandoned apply made
        self._reset(copy.deepcopy(state.get("resources") or {}))
        self.txn = uuid.uuid4().hex
        self._txn_runtime_dir = None            # (not a recovered transaction's)
        self._txn_runtime_dir = self._runtime_dir()
        # As an apply's: a first interrupt takes effect at the checks between steps only
        # (an interrupted destroy is then finished by recover), never inside the journal's
        # begin or the commit.
        with interrupts.deferred():
            self._log("begin", op="destroy", pid=os.getpid(), time=_now(), lineage=state["lineage"],
                      base_serial=state["serial"], instance=self.instance,
                      runtime_dir=self._txn_runtime_dir)
            self.engine.emit("destroy.started", name=self.name, instance=self.instance,
                             steps=len(self.res))
            # (in the order of the teardown: state.json keeps resources sorted by id)
            changes = [Change("-", rid, self.res[rid].get("kind", "?"), "destroy", old=self.res[rid])
                       for rid in self._teardown_order()]
            errors = self._destroy_forward(start_seq=0)
        if errors:
            first = errors[0]
            raise ActionError(f"destroy of {self.name!r} failed: {first.message}",
                              action=first.action, revert_errors=errors[1:],
                              hint=first.hint or f"fix the cause, then run vbdecl recover "
                                                 f"{self.name} (or destroy again)")
        self.engine.emit("destroy.finished", name=self.name)
        return Result(self.name, self.instance, state.get("revision"), None, changes,
                      steps=len(changes))

    def _teardown_order(self) -> list[str]:
        """The ids of the resources still in ``self.res``, in the order a destroy reverts
        them: those the recorded plan does not list first, then the plan's order reversed."""
        order = [a["id"] for a in ((self.state or {}).get("plan") or {}).get("actions", [])]
        listed = set(order)
        order += [i for i in self.res if i not in listed]
        return [rid for rid in reversed(order) if rid in self.res]

    def _destroy_forward(self, *, start_seq: int) -> list[ActionError]:
        """Revert every resource still in ``self.res`` in reverse order; commit if all went."""
        errors: list[ActionError] = []
        failed: set[str] = set()
        seq = start_seq
        for rid in self._teardown_order():
            res = self.res.get(rid)
            if res is None:
                continue
            if self._needed_by(rid, failed):
                failed.add(rid)
                continue
            seq += 1
            interrupts.check()      # (an interrupted destroy is finished by recover)
            try:
                self._forward(seq, "destroy", rid, res["kind"], res.get("params") or {}, res)
            except ActionError as err:
                errors.append(err)
                failed.add(rid)
                self.engine.emit("revert.failed", id=rid, error=err.message)
        if errors:
            return errors
        with interrupts.deferred():     # (the commit finishes, as a step under way does)
            store.remove_state(self.name, self.sd)
            self._log("commit", serial=None)
            self.state = None
            self._remove_runtime_dir()
            # exec's marshal copy of the state (process.env values and all) goes with it
            from vbdecl.engine import statecache

            statecache.forget(paths.state_file(self.name, self.sd))
        return []


def _rolled_back(touched: list[Any], *, fresh: bool, left_gone: set[str] | frozenset[str] = frozenset()) -> str:
    """What a finished rollback left, for people: ``touched`` are the steps that ran
    (the failed one last). Not "nothing was changed" for an update (a day-2 review): the
    rollback puts back what the last apply recorded, drift it had repaired included, and
    a process it had stopped is started again, with a new pid; ``left_gone``: what was
    gone before the apply and could not be made again (_leave_gone)."""
    if fresh:
        return "nothing was left: every action that landed was reverted"
    done = "every action that landed was reverted: the environment is as its last apply left it"
    if any(kind == "proc.main" and step != "create" and rid not in left_gone
           for step, rid, kind, *_ in touched):
        done += " (its process was started again, with a new pid)"
    if left_gone:
        done += (f", but for {', '.join(sorted(left_gone))}: gone before this apply, and left "
                 "so (making it again failed too)")
    return done
