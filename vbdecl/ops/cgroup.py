"""Ops for resource limits: the environment's cgroup and each limit on it.

- ``cgroup.group`` (action id ``cgroup``): creates ``<hierarchy>/vbdecl/<instance>``
  in every hierarchy the limits need (see :mod:`vbdecl.sys.cgroupfs`), moves
  the environment's processes in when it runs (``_take_in``), and on revert removes the
  directories: it kills whatever is left inside, unless the environment lives
  on (``Context.env_stays``: its last limit removed, or an update that added
  limits rolled back), whose processes it moves out of the group alive.
- ``cgroup.limit`` (ids ``cgroup.memory``, ``cgroup.memory_swap``,
  ``cgroup.cpu``, ``cgroup.cpu_weight``, ``cgroup.pids``, ``cgroup.io_weight``):
  writes one limit, read back; ``update`` changes it in place.

A limit that this machine cannot enforce is an error, or with
``limits.optional: true`` a warning recorded in the ``cgroup`` record
(``record["warnings"]``) that the runtime reports as a
``runtime_init_warnings`` event. Never a silently degraded environment.

Module-level helpers for the runtime and the CLI: :func:`join`,
:func:`usage`, :func:`oom_killed`, :func:`detect`.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import Any

from vbdecl.errors import ActionError, SysError
from vbdecl.ops import register
from vbdecl.ops.base import Context, Params, Record
from vbdecl.sys import cgroupfs

# errnos of a cgroup hierarchy this user may not write: not delegated to it
_NOT_DELEGATED = (errno.EACCES, errno.EPERM, errno.EROFS)

register("cgroup.group", "vbdecl.ops.cgroup:Group")
register("cgroup.limit", "vbdecl.ops.cgroup:Limit")

GROUP_ID = "cgroup"
UNITS = {"memory": "bytes", "memory_swap": "bytes", "cpu": "cores", "cpu_weight": "",
         "pids": "", "io_weight": ""}


def _layout(ctx: Context) -> cgroupfs.Layout:
    layout = ctx.extra.get("cgroup_layout")
    if isinstance(layout, cgroupfs.Layout):
        return layout
    return cgroupfs.current_layout()


def _limits(ctx: Context, params: Params | None = None) -> dict[str, Any]:
    if params and isinstance(params.get("limits"), dict):
        return dict(params["limits"])
    limits = ctx.spec.get("limits") if ctx.spec else None
    return dict(limits) if isinstance(limits, dict) else {}


# v1 keeps memory and swap as one pair of files (memsw = memory + swap): each of the two
# limits is written with the other's value
_PARTNER = {"memory": "memory_swap", "memory_swap": "memory"}


def _limits_for(ctx: Context, limit: str, value: Any) -> dict[str, Any]:
    """The limits that setting ``limit`` to ``value`` writes with: the spec's, with the
    partner of memory or memory_swap (v1 writes them as a pair) as its action's record
    has it, the value it holds now. Not the spec's: the rollback of an update runs with
    the new manifest's spec, and set the old memory with the new swap (memsw stayed at
    the new manifest's value). Without a record of the partner: no swap limit for
    memory (none landed, or it is gone), and the spec's memory for memory_swap (the
    swap limit of a new environment applied before its memory limit)."""
    limits = _limits(ctx)
    limits[limit] = value
    partner = _PARTNER.get(limit)
    if partner is not None:
        rec = ctx.records.get(f"cgroup.{partner}")
        if rec and not rec.get("skipped"):
            limits[partner] = rec.get("value")
        elif partner == "memory_swap" or rec:
            limits[partner] = None
    return limits


def _action_error(exc: SysError, action: str) -> ActionError:
    return ActionError(exc.message, action=action, hint=exc.hint)


def describe_limit(limit: str, value: Any) -> str:
    if value is None:
        return f"{limit}: unlimited"
    if limit in ("memory", "memory_swap"):
        from vbdecl.model.units import format_size

        return f"{limit} {format_size(int(value))}"
    if limit == "cpu":
        return f"cpu {value} cores"
    return f"{limit} {value}"


def _count_oom(ctx: Context, record: Record) -> None:
    """Leave the group's OOM kill count in ``ctx.extra["cgroup_oom_kills"]`` (read before
    the group goes). Whether to tell of them is the caller's: only a command whose own
    process ran in the group knows the kills are its (vbdecl.runtime.oom)."""
    try:
        n = cgroupfs.oom_kills(record)
    except (SysError, ValueError):
        return
    if n:
        ctx.extra["cgroup_oom_kills"] = n


def _live_init(ctx: Context) -> int | None:
    """A live environment's init, checked against its recorded start time (a pid
    recorded before a reboot may name another process now); None otherwise."""
    from vbdecl.sys import proc as sysproc

    init, env = ctx.env_pid, ctx.records.get("env") or {}
    if init and "start_time" in env and sysproc.alive(init, int(env["start_time"])):
        return init
    return None


def _join_env(ctx: Context, record: Record, init: int) -> None:
    """Move the live environment's processes into ``record``'s group, but the declared
    process's supervisor: vbdecl's, kept out of the environment's limits; and the
    init, kept out of a v1 memory cgroup (cgroupfs.init_stays_out)."""
    cgroupfs.join_all(record, init, _env_processes(ctx, init), first_out=cgroupfs.init_stays_out(record))


def _env_processes(ctx: Context, init: int) -> Callable[[], list[int]]:
    """A lister of the live environment's processes (its init included), but the declared
    process's supervisor (see _join_env)."""
    from vbdecl.sys import proc as sysproc

    supervisor = _supervisor(ctx)
    return lambda: [p for p in sysproc.env_processes(init) if p != supervisor]


def _supervisor(ctx: Context) -> int | None:
    """The declared process's supervisor (runtime.live), as the process's record names
    it (pid and start time), while it lives. Not the parent of the process: once the
    process exited and only what it left running remained, there was none, and the
    supervisor was moved into every cgroup of the environment, memory included (an
    OOM candidate there, and a kill of it loses the daemons from the process's
    tree). A record from before the supervisor was recorded: the live process's
    parent, if that is a supervisor."""
    from vbdecl.sys import proc as sysproc

    record = ctx.records.get("process") or {}
    sup = record.get("supervisor")
    if isinstance(sup, dict):
        pid, started = int(sup.get("pid") or 0), sup.get("start_time")
        return pid if pid and started is not None and sysproc.alive(pid, int(started)) else None
    main = record.get("pid")
    parent = (sysproc.parent(int(main)) if main else None) or 0
    try:
        with open(f"/proc/{parent}/comm", "rb") as f:
            # (comm keeps 15 bytes of the name set_name gave it)
            return parent if parent and f.read().strip() == b"vbdecl-supervise"[:15] else None
    except OSError:
        return None


def _take_in(ctx: Context, record: Record, init: int) -> None:
    """Move the environment's processes into its new group.

    A run's pid 1 (or holder), forked just now, is alone: only it. Of a live
    environment (see _live_init; none: nothing is moved) every process goes in,
    and the cgroups they came from are noted, where a revert that keeps the
    environment returns them."""
    from vbdecl.sys import proc as sysproc

    if "start_time" not in (ctx.records.get("env") or {}):
        cgroupfs.join(record, init)
        return
    if _live_init(ctx) is None:
        return
    cgroupfs.note_origins(record, sysproc.cgroup_paths(init, include_root=True))
    _join_env(ctx, record, init)


class Group:
    """``cgroup.group``: the environment's cgroup directories."""

    def describe(self, params: Params) -> str:
        return "cgroup vbdecl/<instance> in each needed hierarchy"

    def apply(self, ctx: Context, params: Params) -> Record:
        layout = _layout(ctx)
        limits = _limits(ctx, params)
        problems = cgroupfs.missing(layout, limits)
        skip = {p[0] for p in problems}
        warnings = []
        if problems:
            if not limits.get("optional"):
                first = problems[0]
                msg = "; ".join(p[1] for p in problems)
                raise ActionError(msg, action=GROUP_ID, hint=first[2])
            warnings = [f"limits.{p[0]} not enforced: {p[1]}" for p in problems]
        wanted = {k: v for k, v in limits.items() if k not in skip}
        controllers = cgroupfs.needed_controllers(wanted)
        try:
            record = cgroupfs.create_group(layout, ctx.instance, controllers)
        except SysError as exc:
            if not (limits.get("optional") and exc.errno in _NOT_DELEGATED):
                err = _action_error(exc, GROUP_ID)
                if exc.errno in _NOT_DELEGATED:
                    err.hint = cgroupfs.NOT_DELEGATED_HINT
                raise err from exc
            # No cgroup this user may create (not delegated to it): under
            # limits.optional the environment runs without one, with a warning.
            record = cgroupfs.empty_record(layout, ctx.instance)
            asked = sorted(k for k in cgroupfs.LIMIT_CONTROLLER if limits.get(k) is not None)
            # (named by what was asked: an unprivileged review was told of cpuacct, which
            # vbdecl makes for its own accounting, when it had asked for pids; and only
            # those not warned of above: a limits review was told of each twice)
            unsaid = [k for k in asked if k not in skip]
            if unsaid or not asked:
                warnings.append(f"{', '.join('limits.' + k for k in unsaid) or 'limits'} not enforced: "
                                f"no cgroup can be made here ({exc.message})")
            skip |= set(asked)
        record["warnings"] = warnings
        record["skipped"] = sorted(skip)
        if ctx.env_pid:
            try:
                _take_in(ctx, record, ctx.env_pid)
            except SysError as exc:
                try:
                    cgroupfs.remove_group(record)
                except SysError:
                    pass
                raise _action_error(exc, GROUP_ID) from exc
        return record

    def revert(self, ctx: Context, record: Record) -> None:
        _count_oom(ctx, record)
        try:
            if ctx.env_stays:
                cgroupfs.release_group(record)
            cgroupfs.remove_group(record)
        except SysError as exc:
            raise _action_error(exc, GROUP_ID) from exc

    def probe(self, ctx: Context, params: Params, record: Record | None) -> Record | None:
        if record is None:
            # Recovery of an apply that died in this step (no record journaled): the
            # directories are found by the instance id in their name, and only those.
            return cgroupfs.find_group(_layout(ctx), ctx.instance)
        if not record:
            return None
        import os

        if not record.get("dirs"):
            return record        # none was made (limits.optional): nothing can drift
        alive = [d for d in record.get("dirs", []) if os.path.isdir(d["path"])]
        if not alive:
            return None
        init = _live_init(ctx)
        if init is not None:
            # A directory the live environment's init was moved out of (by hand) is not
            # the environment's any more: its processes escape that limit, and exec's too
            # (it joins the init's cgroups). Drift, which update repairs by putting them back.
            # The init is kept out of a v1 memory cgroup (cgroupfs.init_stays_out), which
            # exec and the process join by its path: there every other process of the
            # environment is looked for instead (but the supervisor, kept out of all).
            from vbdecl.sys import proc as sysproc

            inside = set(sysproc.cgroup_paths(init, include_root=True))
            supervisor = _supervisor(ctx)
            others = [p for p in sysproc.env_processes(init) if p not in (init, supervisor)]
            proc = ctx.records.get("process") or {}
            if proc.get("pid") and sysproc.alive(int(proc["pid"]), proc.get("start_time")):
                others.append(int(proc["pid"]))     # (not the init's descendant without a pid namespace)
            for path in cgroupfs.init_stays_out(record):
                there = set(cgroupfs.members(path))
                if init in there:
                    # put there by hand, or by a vbdecl before it stayed out: an OOM there
                    # could take the init (update moves it out again)
                    inside.discard(path)
                    continue
                # (one gone meanwhile has not escaped; none at all: nothing can have)
                if not [p for p in others if p not in there and sysproc.alive(p, None)]:
                    inside.add(path)
            alive = [d for d in alive if d["path"] in inside]
        return {**record, "dirs": alive}

    def update(self, ctx: Context, params: Params, record: Record) -> Record:
        """Limits are their own actions; this repairs the group: directories removed
        behind vbdecl's back (drift) are made again, and the environment's processes
        put back in every directory (also those a cut-short revert moved out)."""
        import copy
        import os

        missing = [d for d in record.get("dirs", []) if not os.path.isdir(d["path"])]
        init = _live_init(ctx)
        if not missing and init is None:
            return record
        record = copy.deepcopy(record)     # (the recorded one is the state's)
        try:
            cgroupfs.remake_dirs(record, missing)
            if init is not None:
                _join_env(ctx, record, init)
        except SysError as exc:
            raise _action_error(exc, GROUP_ID) from exc
        return record


class Limit:
    """``cgroup.limit``: one limit written into the environment's cgroup."""

    # its revert resets the value before it removes an extension directory
    undo_by_update = True

    def describe(self, params: Params) -> str:
        return describe_limit(params["limit"], params.get("value"))

    def _group(self, ctx: Context, action: str) -> Record:
        group = ctx.records.get(GROUP_ID)
        if not group:
            raise ActionError("the environment's cgroup does not exist", action=action,
                              hint="the `cgroup` action must land first; re-run `vbdecl apply`")
        return group

    def apply(self, ctx: Context, params: Params) -> Record:
        return self._set(ctx, params, None)

    def _set(self, ctx: Context, params: Params, old: Record | None) -> Record:
        limit, value = params["limit"], params.get("value")
        action = f"cgroup.{limit}"
        group = self._group(ctx, action)
        optional = params.get("optional", _limits(ctx).get("optional"))
        if limit in group.get("skipped", []) or not group.get("dirs"):
            # Not enforced when the group was made (limits.optional), or no cgroup
            # could be made at all: never enforced now behind the user's back, and
            # never silently skipped once optional is off.
            if not optional:
                raise ActionError(f"limits.{limit} cannot be enforced: the environment was "
                                  "applied without it under limits.optional", action=action,
                                  hint="keep limits.optional: true, or destroy the environment and "
                                       "apply it again where the controller is available")
            msg = f"limits.{limit} not enforced (limits.optional)"
            return {"limit": limit, "value": value, "skipped": msg, "writes": []}
        ext = (old or {}).get("extension")
        ctrl = cgroupfs.LIMIT_CONTROLLER[limit]
        made_ext = False
        try:
            if ext is None and ctrl not in group.get("controllers", {}):
                # A limit added to a live environment: bring the controller in, in place,
                # unless another limit of this apply did (memory and memory_swap).
                ext = _extension_in_use(ctx, ctrl, action)
                if ext is None:
                    init = _live_init(ctx)
                    # (the init stays out of a v1 memory cgroup: cgroupfs.init_stays_out)
                    keep_out = [init] if init is not None and ctrl == "memory" else []
                    ext = cgroupfs.extend_group(_layout(ctx), group, ctrl, keep_out,
                                                _env_processes(ctx, init) if init is not None else None)
                    made_ext = True
            rec = cgroupfs.set_limit(cgroupfs.with_extension(group, ext), limit, value,
                                     _limits_for(ctx, limit, value))
        except SysError as exc:
            if made_ext and ext:
                try:
                    cgroupfs.retract_group(ext)
                except SysError:
                    pass
            if exc.errno == 2 and optional:
                # e.g. no swap accounting: known only once the cgroup exists
                msg = f"limits.{limit} not enforced: {exc.message}"
                return {"limit": limit, "value": value, "writes": [], "skipped": msg,
                        "warnings": [msg]}
            raise _action_error(exc, action) from exc
        if ext:
            rec["extension"] = ext
        return rec

    def update(self, ctx: Context, params: Params, record: Record) -> Record:
        return self._set(ctx, params, record)

    def _in_flight(self, ctx: Context, params: Params) -> Record | None:
        """What an apply of this limit that died before its record was journaled may
        have left: the value written into the environment's cgroup, and (a limit
        added to a live environment on v1) the directory made for its controller.
        Revert then sets the limit back to unlimited and removes that directory."""
        import os

        group = ctx.records.get(GROUP_ID)
        limit = params["limit"]
        if not group or not group.get("dirs") or limit in group.get("skipped", []):
            return None     # the group is not there: the limit cannot have been written
        ctrl = cgroupfs.LIMIT_CONTROLLER[limit]
        ext: Record | None = None
        if ctrl not in group.get("controllers", {}):
            where = _layout(ctx).place(ctrl)
            path = os.path.join(where[1], cgroupfs.PARENT, ctx.instance) if where else ""
            if not where or where[0] != 1 or not os.path.isdir(path):
                return None
            ext = {"ctrl": ctrl, "path": path, "version": 1, "created": True,
                   "parent_created": False}
        view = cgroupfs.with_extension(group, ext)
        found = cgroupfs.limit_dir(view, limit)
        if found is None:
            return None
        try:
            value = cgroupfs.read_limit(found[0], limit, found[1])
        except SysError:
            return None
        rec: Record = {"limit": limit, "value": value, "version": found[0], "dir": found[1],
                       "writes": []}
        if ext:
            rec["extension"] = ext
        return rec

    def revert(self, ctx: Context, record: Record) -> None:
        if record.get("skipped"):
            return
        import os

        if not os.path.isdir(record.get("dir") or ""):
            return  # the group is gone: nothing to reset
        limit = record["limit"]
        try:
            group = cgroupfs.with_extension(_group_of(ctx, record), record.get("extension"))
            cgroupfs.set_limit(group, limit, None, _limits_for(ctx, limit, None))
            ext = record.get("extension")
            if ext and _extension_in_use(ctx, ext["ctrl"], f"cgroup.{limit}") is None:
                cgroupfs.retract_group(ext)     # the last limit that needs it
        except SysError as exc:
            if exc.errno == 2:  # the group went away meanwhile
                return
            raise _action_error(exc, f"cgroup.{limit}") from exc

    def probe(self, ctx: Context, params: Params, record: Record | None) -> Record | None:
        """The record with the live value, or None when the cgroup is gone."""
        if record is None:
            return self._in_flight(ctx, params)
        if not record:
            return None
        if record.get("skipped"):
            return record
        import os

        if not os.path.isdir(record.get("dir") or ""):
            return None
        try:
            value = cgroupfs.read_limit(int(record["version"]), record["limit"], record["dir"])
        except SysError:
            return None
        if value is not None and record.get("value") is not None and \
                _same(record["limit"], record["value"], value):
            value = record["value"]
        return {**record, "value": value}


def _same(limit: str, recorded: Any, live: Any) -> bool:
    """Whether a live value is what the kernel keeps for the recorded one (rounding)."""
    if limit in ("memory", "memory_swap"):
        page = cgroupfs.PAGE_SIZE
        return int(live) == int(recorded) // page * page
    if limit == "cpu":
        return cgroupfs.cpu_quota(float(recorded)) == round(float(live) * cgroupfs.CPU_PERIOD_US)
    if limit == "cpu_weight":
        return bool(live == recorded or live == cgroupfs.shares_to_weight(
            cgroupfs.weight_to_shares(int(recorded))))
    if limit == "io_weight":
        w = int(recorded)
        return live in (w, max(2, min(200, w)), max(1, min(1000, w)))
    return bool(live == recorded)


def _extension_in_use(ctx: Context, ctrl: str, action: str) -> Record | None:
    """The extension for ``ctrl`` another limit than ``action`` keeps in its record (a
    controller brought into a live environment for two limits: memory and swap)."""
    for aid, rec in ctx.records.items():
        ext = rec.get("extension") if aid != action and aid.startswith("cgroup.") and isinstance(rec, dict) else None
        if isinstance(ext, dict) and ext.get("ctrl") == ctrl:
            return dict(ext)
    return None


def _group_of(ctx: Context, record: Record) -> Record:
    """The group record, or one made from the limit's own record (probe/revert may run
    without the group's record at hand)."""
    group = ctx.records.get(GROUP_ID)
    if group:
        return group
    ctrl = cgroupfs.LIMIT_CONTROLLER[record["limit"]]
    return {"controllers": {ctrl: record["dir"]},
            "dirs": [{"path": record["dir"], "version": record["version"], "controllers": [ctrl]}]}


# --- helpers for the runtime and the CLI -------------------------------------------


def join(record: Record, pid: int = 0) -> None:
    """Move ``pid`` (0: the calling process) into the environment's cgroup."""
    cgroupfs.join(record, pid)


def usage(record: Record, resources: dict[str, Any] | None = None) -> dict[str, Any]:
    """Memory current/peak, cpu time and pids, each with its limit (for `vbdecl status`),
    of the group ``record``, with the controllers limits added to a live environment
    (their records' extensions; ``resources``: the state's)."""
    from vbdecl.runtime.oom import extensions

    for ext in extensions(resources):
        record = cgroupfs.with_extension(record, ext)
    return cgroupfs.usage(record)


def oom_killed(record: Record) -> bool:
    """Whether the OOM killer struck inside the environment (read before revert)."""
    return cgroupfs.oom_killed(record)


def warnings(record: Record | None) -> list[str]:
    """Warnings to report as a runtime_init_warnings event."""
    return list((record or {}).get("warnings", []))


def detect() -> dict[str, Any]:
    return cgroupfs.detect()


def tidy(ctx: Context) -> None:
    """After the reverts of a vbdecl killed in the cgroup step: the shared ``vbdecl``
    parent it made, empty (cgroupfs.remove_empty_parents), and the groups of runs
    killed with their janitors (runtime/runmarks.py)."""
    if ctx.runtime_dir:
        from vbdecl.runtime import runmarks

        runmarks.sweep(os.path.dirname(ctx.runtime_dir), _layout(ctx))
    cgroupfs.remove_empty_parents(_layout(ctx))


def preflight(limits: dict[str, Any]) -> list[dict[str, str]]:
    """Plan-time check of ``spec["limits"]`` against this machine: one entry per limit that
    cannot be enforced, ``{"where": "limits.<name>", "message", "hint", "level"}`` with
    level ``error`` (or ``warning`` under ``limits.optional: true``). Reads cgroupfs only."""
    level = "warning" if limits.get("optional") else "error"
    return [{"where": f"limits.{name}", "message": msg, "hint": hint, "level": level}
            for name, msg, hint in cgroupfs.missing(cgroupfs.current_layout(), limits)]
