"""``vbdecl plan FILE|DIR``: what an apply would change, Terraform style."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vbdecl.errors import PlanError

HELP = "show what `apply` would change (drift first, then one line per change)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE|DIR",
                        help="the manifest, or a directory of manifests (searched like apply DIR), "
                             "or - for stdin (relative paths in it: to the current directory)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also list the actions that do not change")
    parser.add_argument("--detailed-exitcode", action="store_true",
                        help="exit 0 when there are no changes, 1 on error, 2 when there are changes")
    parser.add_argument("-o", "--out", metavar="PLANFILE",
                        help="save the plan for `vbdecl apply PLANFILE`")
    parser.add_argument("--no-refresh", action="store_true",
                        help="do not probe live objects for drift; compare with the recorded state only")
    parser.add_argument("--no-cache", action="store_true", help="compile even if a cached plan exists")
    parser.add_argument("--prune", action="store_true",
                        help="with a DIR: also show the environments `apply DIR --prune` would destroy")


def plan_changes(plan: dict[str, Any], state: dict[str, Any] | None, state_dir: str | None,
                 *, refresh: bool, verbose: bool) -> list[Any]:
    """The changes for one environment. With ``refresh`` and a recorded
    state, the engine probes the recorded resources (drift) and runs them
    through :func:`vbdecl.plan.diff.changes`."""
    from vbdecl.plan.diff import changes, with_unchanged

    if refresh and state and state.get("resources"):
        from vbdecl.engine.executor import Engine

        found = list(Engine(state_dir).changes(plan, probe=True).changes)
        return with_unchanged(plan, found) if verbose else found
    return changes(plan, state, None, verbose=verbose)


# What limits.pids must allow while a live environment's process starts (measured:
# 3 fails the apply with EAGAIN; runtime/child.no_more_processes says why). 4 is the
# count at its peak, and failed a limits review's applies 7 times in 10 on a busy
# machine: a helper that exits counts until it is reaped. 5 held 10 in 10 there.
LIVE_PIDS_FLOOR = 5


def check_live_rules(plan: dict[str, Any], path: str) -> None:
    """Limits this machine cannot enforce, and what a live environment cannot have
    (``vbdecl run`` can): a plan-time error at the manifest's key (a warning under
    ``limits.optional: true``), not a failure half-way through apply."""
    import sys

    from vbdecl.errors import PlanError
    from vbdecl.ops.sec import live_ptrace_problem

    problems = _limit_problems(plan["spec"].get("limits") or {})
    ptrace = live_ptrace_problem(plan["spec"])
    if ptrace is not None:
        problems.append({**ptrace, "level": "error"})
    fds = (plan["spec"].get("process") or {}).get("inherit_fds")
    if fds:
        from vbdecl.ops.proc import INHERIT_FDS_REFUSED

        problems.append({"where": "process.inherit_fds", "level": "error",
                         "message": f"process.inherit_fds {fds}: {INHERIT_FDS_REFUSED}", "hint": None})
    errors = [p for p in problems if p["level"] == "error"]
    for p in problems:
        if p["level"] != "error":
            print(f"warning: {path}: {plan['name']}: {p['where']}: {p['message']}", file=sys.stderr)
    if errors:
        at = [key_where(plan, path, p["where"]) for p in errors]
        more = "".join(f"\n  also {w}: {p['message']}" for w, p in zip(at[1:], errors[1:], strict=True))
        raise PlanError(f"{plan['name']}: {errors[0]['message']}{more}", where=at[0],
                        hint=errors[0].get("hint"))


def _limit_problems(limits: dict[str, Any]) -> list[dict[str, Any]]:
    if all(limits.get(k) is None for k in ("memory", "memory_swap", "cpu", "cpu_weight", "pids", "io_weight")):
        return []
    from vbdecl.ops.cgroup import preflight

    problems = preflight(limits)
    if limits.get("pids") is not None and limits["pids"] < LIVE_PIDS_FLOOR:
        # (a live environment's process starts with helpers in the group: EAGAIN half-way)
        problems.append({"where": "limits.pids", "level": "error",
                         "message": f"limits.pids {limits['pids']} is too few for a live environment: its process "
                                    f"starts with vbdecl's helpers in the group ({LIVE_PIDS_FLOOR} at once)",
                         "hint": f"set limits.pids to {LIVE_PIDS_FLOOR} or more, plus what the process "
                                 "runs (vbdecl run needs 2)"})
    return problems


def run_pids_error(plan: dict[str, Any], path: str) -> PlanError:
    """``vbdecl run`` of a plan whose limits.pids is below RUN_PIDS_FLOOR: said at the
    manifest's key before anything is set up, not as the process's fork failing."""
    from vbdecl.errors import PlanError
    from vbdecl.model.names import RUN_PIDS_FLOOR

    pids = plan["spec"]["limits"]["pids"]
    return PlanError(f"limits.pids {pids} is too few for vbdecl run: the sandbox's pid 1 and "
                     f"the process both count ({RUN_PIDS_FLOOR} at least)",
                     where=key_where(plan, path, "limits.pids"),
                     hint=f"set limits.pids to {RUN_PIDS_FLOOR} or more, plus what the process runs "
                          "(or leave it out for no limit); with process.init: false the process "
                          "is pid 1 itself, and 1 will do")


def run_unmapped_error(plan: dict[str, Any], path: str, keys: list[str]) -> PlanError:
    """``vbdecl run`` without root of a plan whose process.user or process.group the
    implied user namespace does not map (fast.unmapped_ids): said at the manifest's key
    before anything is set up."""
    from vbdecl.errors import PlanError

    process = plan["spec"]["process"]
    said = " and ".join(f"process.{key} {process[key]}" for key in keys)
    return PlanError(f"{said}: a run without root maps only your own uid and gid, as 0 inside",
                     where=key_where(plan, path, f"process.{keys[0]}"),
                     hint="leave it out (0: you, inside), or map it with spec.idmap (a range "
                          "of yours in /etc/subuid and /etc/subgid, mapped through newuidmap)")


def key_where(plan: dict[str, Any], path: str, dotted: str) -> str:
    """``file:line:col`` of ``spec.<dotted>`` in the file the plan was compiled from
    (``path`` alone for a manifest read from stdin or a pipe, which cannot be read
    again, and for a saved plan)."""
    import os

    source = plan.get("source") or {}
    if not source.get("path") or os.path.realpath(path) != source["path"]:
        return path
    from vbdecl.model.load import key_where

    keys = tuple(int(k) if k.isdigit() else k for k in dotted.split("."))
    return key_where(path, int(source.get("document") or 0), ("spec", *keys))


def source_problems(found: list[Any], name: str, before: list[dict[str, Any]] | None = None,
                    state_dir: str | None = None) -> list[tuple[str, str]]:
    """(action id, problem) for each change of the environment ``name`` an apply would
    refuse before its first step (Op.preflight: a missing bind or file source, overlay
    lower; a port another environment publishes, or an address another one of the state
    root ``state_dir`` holds, unless one of the plans applied ``before`` it in the same
    command lets it go): the executor's own check, so that plan says what apply will.
    Reads the host as a probe does; changes nothing."""
    import sys

    from vbdecl.engine import paths
    from vbdecl.ops import op_for, preflight_problem

    out = []
    params_before = [(p["name"], {a["id"]: a.get("params") or {} for a in p["actions"]}) for p in before or []]
    # (what this plan, and those applied before it, make: a bridge's gateway is a host address then)
    made = [(c.kind, c.action.get("params") or {}) for c in found if c.action is not None]
    made += [(a["kind"], a.get("params") or {}) for p in before or [] for a in p["actions"]]
    for c in found:
        if c.drift or c.symbol not in ("+", "~", "-/+") or c.action is None:
            continue
        try:
            op = op_for(c.kind)
        except KeyError:    # (an op this vbdecl lacks: apply says so before any step)
            continue
        params = c.action.get("params") or {}
        # (an environment applied before lets go of the object when its plan has no such
        # action, or one the op says holds another: Op.releases, a network address)
        lets_go = getattr(op, "releases", None)
        releasing = [other for other, acts in params_before if c.id not in acts
                     or (lets_go is not None and lets_go(acts[c.id], params))]
        problem = preflight_problem(op, params, name, releasing,
                                    str(paths.env_dir(name, state_dir)), made)
        if problem and getattr(op, "preflight_is_the_callers", False):
            # (about who runs vbdecl, not the plan: one may plan as a user, apply as root)
            from vbdecl.plan.fmt import action_id

            print(f"warning: {action_id(c.id)}: {problem}", file=sys.stderr)
        elif problem:
            out.append((c.id, problem))
    return out


def bridge_conflicts(plan: dict[str, Any], state: dict[str, Any] | None,
                     state_dir: str | None) -> list[tuple[str, str]]:
    """(action id, problem) for a bridge that other environments of this state root use
    with another subnet: apply's net.bridge step refuses it (after the environment's
    namespaces were made, then rolled back), so plan says it first (a user review)."""
    from vbdecl.net import shared

    own = str((state or {}).get("instance") or "")
    out = []
    for action in plan.get("actions") or []:
        if action.get("kind") != "net.bridge":
            continue
        params = action.get("params") or {}
        try:
            entry = (shared.read(state_dir or "").get("bridges") or {}).get(params.get("bridge")) or {}
        except (OSError, ValueError):
            continue
        if not [u for u in entry.get("users") or [] if u != own]:
            continue
        out += [(action["id"], f"bridge {params['bridge']} {'carries mtu' if key == 'mtu' else 'serves'} "
                 f"{served} for other environments, but this one asks for {asked}: use network.{key} "
                 f"{served}, or another network.bridge")
                for key, served, asked in shared.subnet_mismatches(entry, params)]
    return out


def sources_error(blocked: list[tuple[dict[str, Any], str, list[tuple[str, str]]]], *,
                  what: str = "apply would refuse it, changing nothing") -> PlanError:
    """One error for what apply would refuse: (plan, its file, [(action id, problem)])
    of every environment with such problems, the first one leading."""
    from vbdecl.errors import PlanError, Problem

    found = [Problem(path, f"{plan['name']}: {rid}: {problem}") for plan, path, problems in blocked
             for rid, problem in problems]
    err = PlanError(found[0].message, where=found[0].where,
                    hint=f"{what}; fix the manifest or the host, then plan again")
    err.problems = found
    return err


def network_warnings(plan: dict[str, Any]) -> list[dict[str, str]]:
    """What the network settings will do that the manifest's author may not expect."""
    net = plan["spec"].get("network") or {}
    # (not `dns: []`: no resolv.conf at all, so lookups fail at once, as its author chose)
    if net.get("mode") == "bridge" and net.get("nat") is False and net.get("dns") is None:
        return [{"where": "network",
                 "message": "nat is false and dns is not set: the environment gets the host's resolv.conf, "
                            "whose servers it cannot reach without NAT, so name lookups hang until they "
                            "time out",
                 "hint": "set network.dns to a resolver the environment can reach (one listening on "
                         "the bridge's gateway address, say), or nat: true"}]
    return []


def root_warnings(plan: dict[str, Any]) -> list[dict[str, str]]:
    """An environment that will start in an empty root, which its author may not expect."""
    spec = plan["spec"]
    if spec.get("rootfs") is None and not spec.get("filesystem") and \
            (spec.get("namespaces") or {}).get("mount") is True:
        return [{"where": "filesystem",
                 "message": "no filesystem entries and no rootfs: the environment starts in an "
                            "empty root, without /bin/sh or any other program",
                 "hint": "bind what the process needs (ro-bind /usr and the /bin, /lib, /lib64 "
                         "symlinks, as manifests/hello.yaml does), or set rootfs"}]
    return []


def idmap_warnings(plan: dict[str, Any]) -> list[dict[str, str]]:
    """An idmap with namespaces.user: false, which root does not use."""
    import os

    spec = plan["spec"]
    if spec.get("idmap") and (spec.get("namespaces") or {}).get("user") is False and os.geteuid() == 0:
        return [{"where": "idmap",
                 "message": "namespaces.user is false: as root vbdecl makes no user namespace, and "
                            "the map is used only where one is implied (a run by another user)",
                 "hint": "set namespaces: {user: true} to use the map as root too"}]
    return []


# Entries whose mount hides what is at and below its target (a mount of a file, as
# bind-data's is, covers only its own path).
_COVERING = ("tmpfs", "proc", "dev", "mqueue", "overlay", "tmp-overlay", "ro-overlay",
             "bind", "ro-bind", "dev-bind", "bind-data")
# At a mount's very target a dir entry makes its mount point; below the target it is
# hidden as any other entry is (a chmod or remount-ro before the mount at its target
# acted on what the mount then hides).
_AT_MOUNT_POINT = ("dir",)


def _hidden_by(entry: dict[str, Any], top: str) -> bool:
    """Whether a mount at ``top`` (normalized) hides what an earlier ``entry`` made."""
    import os

    path = os.path.normpath(str(entry["target"]))
    if path == top:
        return entry.get("type") not in _AT_MOUNT_POINT
    return path.startswith(top.rstrip("/") + "/")


def unfinished_warning(name: str, state_dir: str | None) -> None:
    """A transaction of ``name`` that did not finish (a rollback that could not, a killed
    command): plan compares with the last committed state, where what that transaction
    removed looks deleted outside vbdecl. Say so, and what to do (a new-user review)."""
    import sys

    from vbdecl.engine import journal, paths

    begin = journal.open_transaction(journal.read(paths.journal_file(name, state_dir)))
    if not begin:
        return
    op = begin[0].get("op") or "apply"
    article = "an" if op[0] in "aeiou" else "a"
    print(f"warning: {name}: {article} {op} did not finish; what it changed shows below against the "
          f"last committed state (as changed or deleted outside vbdecl)\n  hint: vbdecl recover "
          f"{name} finishes it; if it cannot, vbdecl apply goes on from what it left", file=sys.stderr)


def cover_warnings(plan: dict[str, Any]) -> list[dict[str, str]]:
    """A mount entry that hides what entries before it made below its target (a user
    review's tmpfs at / after everything: the process found no /bin/sh)."""
    import os

    entries = plan["spec"].get("filesystem") or []
    out = []
    for j, e in enumerate(entries):
        if e.get("type") not in _COVERING:
            continue
        top = os.path.normpath(str(e["target"]))
        hidden = [str(x["target"]) for x in entries[:j] if _hidden_by(x, top)]
        if hidden:
            shown = ", ".join(hidden[:3]) + (f" and {len(hidden) - 3} more" if len(hidden) > 3 else "")
            out.append({"where": f"filesystem[{j}]",
                        "message": f"this {e['type']} at {top} hides what the entries before it "
                                   f"made there: {shown}",
                        "hint": "move it before those entries (entries apply in order), or to "
                                "another target"})
    return out


def check_warnings(plan: dict[str, Any], path: str) -> list[dict[str, str]]:
    """Print what the manifest of ``plan`` (from ``path``) may not mean (on stderr);
    those warnings, for --json."""
    import sys

    found = [*root_warnings(plan), *cover_warnings(plan), *network_warnings(plan), *idmap_warnings(plan)]
    for w in found:
        print(f"warning: {path}: {plan['name']}: {w['where']}: {w['message']}\n  hint: {w['hint']}",
              file=sys.stderr)
    return found


def takeover_warning(plan: dict[str, Any], state: dict[str, Any] | None) -> None:
    """The environment was applied from another manifest file: this one takes it over
    (a new-user review saw only `-/+ process`, no word of the other file)."""
    import os
    import sys

    before = (((state or {}).get("plan") or {}).get("source") or {}).get("path")
    now = (plan.get("source") or {}).get("path")
    if before and now and os.path.realpath(before) != os.path.realpath(now):
        print(f"warning: {plan['name']}: applied from {before} so far; applying {now} takes it over"
              f"\n  hint: two files that name one environment replace each other's: rename one "
              f"(metadata.name) to keep both", file=sys.stderr)


def left_out_warnings(target: str, keep: list[str], state_dir: str | None) -> list[dict[str, str]]:
    """Environments applied from ``target`` (a manifest file, or a directory's) that it
    no longer holds: deleted or renamed there, they stay as they are (a day-2 review
    saw no word of them); printed on stderr, and returned for --json."""
    import os
    import sys

    from vbdecl.engine.sources import left_out

    directory = os.path.isdir(target)
    found = []
    for name in left_out(target, keep, state_dir):
        message = (f"{name} was applied from {'a manifest in ' if directory else ''}{target}, which no longer "
                   "holds it: it stays as it is")
        hint = (f"`vbdecl destroy {name}` removes it; "
                + (f"`vbdecl apply {target} --prune` removes every environment the directory no longer holds"
                   if directory else "a renamed environment (metadata.name) is a new one beside it"))
        print(f"warning: {target}: {message}\n  hint: {hint}", file=sys.stderr)
        found.append({"name": name, "file": target, "where": "metadata.name", "message": message, "hint": hint})
    return found


def usage_warnings(plan: dict[str, Any], state: dict[str, Any] | None) -> None:
    """A memory or pids limit set below what the live environment uses now (a day-2
    review lowered memory under its usage: plan said `~`, apply failed with EBUSY and
    rolled back)."""
    import sys

    limits = plan["spec"].get("limits") or {}
    resources = (state or {}).get("resources") or {}
    group = (resources.get("cgroup") or {}).get("record")
    if not group or (limits.get("memory") is None and limits.get("pids") is None):
        return
    env = next((a.get("params") or {} for a in plan.get("actions") or [] if a.get("id") == "env"), {})
    old = (resources.get("env") or {}).get("params") or {}
    if any(env.get(k) != old.get(k) for k in ("namespaces", "idmap")):
        return      # (replaced: the new environment starts with nothing in use)
    from vbdecl.ops import cgroup
    from vbdecl.plan.fmt import size

    try:
        now = cgroup.usage(group, (state or {}).get("resources"))
    except Exception:
        return      # (gone, or unreadable: plan shows that as drift)
    memory = (now.get("memory") or {}).get("current")
    if limits.get("memory") is not None and isinstance(memory, int) and memory > limits["memory"]:
        print(f"warning: {plan['name']}: limits.memory {size(limits['memory'])} is below what the "
              f"environment uses now ({memory / (1 << 20):.1f}Mi): the kernel must reclaim the difference first, "
              "and where it cannot (memory in use, no swap) the apply fails and rolls back\n"
              "  hint: stop what uses the memory first, or set a limit above it", file=sys.stderr)
    pids = (now.get("pids") or {}).get("current")
    if limits.get("pids") is not None and isinstance(pids, int) and pids > limits["pids"]:
        print(f"warning: {plan['name']}: limits.pids {limits['pids']} is below the {pids} processes "
              "the environment runs now: none of them ends, and no new one starts (an exec, a "
              "restart) until fewer run\n  hint: set a limit above that, or end some first",
              file=sys.stderr)


def _pruned(directory: str, keep: list[str], state_dir: str | None) -> list[tuple[str, list[Any]]]:
    """(name, teardown changes) of each environment `apply DIR --prune` would destroy."""
    from vbdecl.engine.sources import prune_candidates
    from vbdecl.engine.store import load
    from vbdecl.plan.diff import changes

    return [(name, changes(None, load(name, state_dir)))
            for name in prune_candidates(directory, keep, state_dir)]


def cannot_save(out: str, err: OSError) -> Exception:
    """The error for a -o PLANFILE that cannot be written, in the user's words."""
    import errno
    import os

    from vbdecl.errors import UsageError

    directory = os.path.dirname(out) or "."
    if err.errno == errno.EISDIR:
        hint = f"{out} is a directory: give a file name, e.g. -o {os.path.join(out, 'NAME.plan')}"
    elif err.errno == errno.ENOENT and not os.path.isdir(directory):
        hint = f"create the directory {directory} first, or save the plan elsewhere"
    elif err.errno == errno.ENOTDIR:
        hint = f"{directory} is not a directory: save the plan elsewhere"
    else:
        hint = "save the plan where you may write (-o PLANFILE)"
    return UsageError(f"cannot save the plan to {out}: {err.strerror}", hint=hint)


def run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from vbdecl.cli.render_plan import print_lines
    from vbdecl.engine import atomic
    from vbdecl.engine.plancache import plans_for_file
    from vbdecl.engine.sources import (
        check_unique_names,
        manifest_files,
        no_manifests,
        pin_file_sources,
        read_given,
    )
    from vbdecl.engine.store import load as read_state
    from vbdecl.errors import UsageError
    from vbdecl.plan import saved as saved_mod
    from vbdecl.plan.diff import summary
    from vbdecl.plan.text import render_all, render_plan, state_ref

    if args.prune and not os.path.isdir(args.file):
        raise UsageError("--prune needs a directory", hint="vbdecl plan DIR --prune")
    given = read_given(args.file)
    stdin = None if given is None else given[1]
    files = [given[0]] if given is not None else manifest_files([args.file])
    if not files and not args.prune:
        raise no_manifests(args.file)
    if args.out and stdin is None and files != [args.file]:
        raise UsageError("-o saves the plan of one manifest FILE, not of a directory",
                         hint="vbdecl plan DIR/ENV.yaml -o PLANFILE")
    plans = [(f, p) for f in files
             for p in pin_file_sources(plans_for_file(f, use_cache=not args.no_cache, data=stdin))]
    check_unique_names(plans)
    results = []
    warnings: list[dict[str, str]] = []
    blocked: list[tuple[dict[str, Any], str, list[tuple[str, str]]]] = []
    for path, plan in plans:
        check_live_rules(plan, path)
        # (with --json in the document too: a script does not read stderr's text)
        warnings += [{"name": plan["name"], "file": path, **w} for w in check_warnings(plan, path)]
        state = read_state(plan["name"], args.state_dir)
        unfinished_warning(plan["name"], args.state_dir)
        takeover_warning(plan, state)
        if not args.no_refresh:
            usage_warnings(plan, state)
        found = plan_changes(plan, state, args.state_dir, refresh=not args.no_refresh,
                             verbose=args.verbose)
        results.append((plan, state, found))
        # (what apply will refuse, read from the host as the drift is: not with --no-refresh)
        problems = [] if args.no_refresh else [*source_problems(found, plan["name"],
                                                                  [p for p, _s, _f in results[:-1]],
                                                                  args.state_dir),
                                                   *bridge_conflicts(plan, state, args.state_dir)]
        if problems:
            blocked.append((plan, path, problems))
    if not args.prune and stdin is None:
        warnings += left_out_warnings(args.file, [p["name"] for _, p in plans], args.state_dir)
    lines, doc = render_all(results)
    doc["warnings"] = warnings
    if args.prune:
        pruned = _pruned(args.file, [p["name"] for _, p in plans], args.state_dir)
        for name, found in pruned:
            lines += ([""] if lines else []) + [
                f"Environment {name}: no longer in {args.file}; apply --prune destroys it:",
                *render_plan(name, found)[1:]]
        doc["pruned"] = [{"name": name, "changes": [c.to_json() for c in found], "summary": summary(found)}
                         for name, found in pruned]
        doc["changed"] = doc["changed"] or bool(pruned)
        if not results and not pruned:
            lines.append(f"No changes: {args.file} has no manifests, and no environment applied "
                         "from it is left")
    if args.out and len(results) != 1:
        raise UsageError(f"{files[0]} holds {len(results)} environments; -o saves the plan of one",
                         hint="put each environment in its own file to save its plan")
    if blocked:
        # the plan is shown (drift may be why), but it is not one apply can carry out:
        # no -o, and exit 1 as for a limit this machine cannot enforce
        err = sources_error(blocked)
        if not args.json:
            print_lines(lines)
            raise err
        # one JSON document, the error in it (a second one after it made the output unreadable)
        from vbdecl.cli.jsonerr import error_json

        doc["error"] = {**error_json(err), "exit_code": 1}
        print(json.dumps(doc, indent=2, ensure_ascii=False))
        return 1
    if args.out:
        plan, state, found = results[0]
        source: tuple[str | None, bytes | None] = (None, None)   # stdin: no file to go stale
        if stdin is None:
            with open(args.file, "rb") as f:
                source = (args.file, f.read())
        try:
            atomic.write_json(Path(args.out), saved_mod.build(
                plan, state_ref(state), summary(found), [c.to_json() for c in found if c.symbol],
                *source))     # 0600: it holds file contents and env values, as the cache does
        except OSError as err:
            raise cannot_save(args.out, err) from None
        lines += ["", f"Saved the plan to {args.out}; apply it with `vbdecl apply {args.out}`."]
    if args.json:
        print(json.dumps(doc, indent=2, ensure_ascii=False))
    else:
        print_lines(lines)
    return 2 if args.detailed_exitcode and doc["changed"] else 0
