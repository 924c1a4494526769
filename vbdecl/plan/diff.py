"""Changes: what it takes to go from the recorded state to a desired plan.

``changes(desired, state, live)`` compares the desired plan's actions with
the recorded state's resources (``state.json``: ``resources: {id: {kind,
params, record}}``) and, when given, live probe results ``{id: record |
None}`` (drift). Symbols: ``+`` create, ``~`` update in place, ``-``
destroy, ``-/+`` replace. Whether a params change updates in place,
replaces the action, or replaces the whole environment is decided per
attribute by :func:`effect` (the table in docs/plan-format.md).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from vbdecl.hashing import sha256
from vbdecl.plan import fmt

Action = dict[str, Any]
Attr = tuple[str, Any, Any]

UPDATE, REPLACE, REPLACE_ENV = 1, 2, 3

#: kinds whose params change in place, whatever the attribute
UPDATE_KINDS = frozenset({"cgroup.limit", "cgroup.group", "fs.net-files", "fs.file", "fs.dir",
                          "fs.symlink", "fs.chmod"})
#: kinds whose any change replaces the environment (namespaces, idmap and
#: hostname belong to the holder; the env op cannot update them in place)
ENV_KINDS = frozenset({"env.namespaces", "fs.rootfs"})

# Kinds whose objects end on their own: an environment's process that exited
# is not something "deleted outside vbdecl", and apply starts it again.
ENDS_ON_ITS_OWN = ("proc.main",)

#: kinds that are mounts in the environment: a revert detaches the mount, but a
#: running process keeps what it holds of it (its cwd, open files and directories)
MOUNT_KINDS = frozenset({"fs.bind", "fs.ro-bind", "fs.dev-bind", "fs.proc", "fs.dev", "fs.mqueue",
                         "fs.tmpfs", "fs.overlay", "fs.tmp-overlay", "fs.ro-overlay", "fs.bind-data"})
KEEPS_OLD_MOUNT = "the running process keeps the old mount until it restarts"


def gone_reason(kind: str) -> str:
    """Why a recorded object's probe found nothing."""
    return "exited" if kind in ENDS_ON_ITS_OWN else "deleted outside vbdecl"


#: attributes of other kinds that their op's update sets back in place (drift on them)
UPDATE_ATTRS = frozenset({("net.bridge", "up"), ("net.bridge", "gateways"), ("net.bridge", "mtu"),
                          ("net.veth", "mtu"), ("net.veth", "bridge_port"), ("fs.tmpfs", "size"), ("fs.tmpfs", "mode"),
                          ("env.namespaces", "hostname")})


def effect(kind: str, attr: str) -> int:
    """UPDATE, REPLACE (this action only) or REPLACE_ENV for a changed attribute."""
    if kind in UPDATE_KINDS or (kind, attr.split(".", 1)[0]) in UPDATE_ATTRS:
        return UPDATE
    if kind in ENV_KINDS:
        return REPLACE_ENV
    return REPLACE


@dataclass
class Change:
    """One line of a plan: ``<symbol> <id>  # <reason>``."""

    symbol: str                      # "+", "~", "-", "-/+", "" (no change)
    id: str
    kind: str
    reason: str = ""
    action: Action | None = None     # the desired action (None for "-")
    old: dict[str, Any] | None = None  # the recorded resource (None for "+")
    drift: bool = False              # True: an observation of live state, not a change to make
    attrs: list[Attr] = field(default_factory=list)
    replaces_env: bool = False

    def line(self) -> str:
        """The change on one line, whatever its id and reason hold (a target may
        hold a newline): see :func:`vbdecl.plan.fmt.action_id`."""
        ident = fmt.action_id(self.id)
        text = f"{self.symbol} {ident}" if self.symbol else f"  {ident}"
        return f"{text}{fmt.SEPARATOR}{fmt.printable(self.reason)}" if self.reason else text

    @property
    def action_name(self) -> str:
        if self.drift:
            return {"-": "deleted", "~": "changed"}.get(self.symbol, "drift")
        return {"+": "create", "~": "update", "-": "delete", "-/+": "replace"}.get(
            self.symbol, "no-op")

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "symbol": self.symbol, "action": self.action_name, "kind": self.kind,
            "reason": self.reason, "drift": self.drift, "replaces_environment": self.replaces_env,
            "attributes": [{"path": p, "before": json_value(self.kind, p, b), "after": json_value(self.kind, p, a)}
                           for p, b, a in self.attrs],
        }


_SECRET_KINDS = ("fs.file", "fs.bind-data")


def _is_content(kind: str, path: str, value: Any) -> bool:
    """A file's or bind-data's text: it may be a secret (bind-data's often is), and
    plans end up in CI logs, so plans show its size and digest, never the text."""
    leaf = path.rsplit(".", 1)[-1]
    return isinstance(value, str) and ((kind in _SECRET_KINDS and leaf == "content")
                                       or (kind == "proc.main" and leaf == "profile_text"))


def json_value(kind: str, path: str, value: Any) -> Any:
    """``value`` as --json shows it: a file's or bind-data's text, or a seccomp
    profile's, as its size and digest (see _is_content)."""
    if _is_content(kind, path, value):
        data = value.encode()
        return {"bytes": len(data), "sha256": sha256(data).hexdigest()}
    return value


# --- attribute diffs --------------------------------------------------------


def _flatten(before: Any, after: Any, path: str, out: list[Attr]) -> None:
    if isinstance(before, dict) and isinstance(after, dict):
        for key in sorted(set(before) | set(after), key=str):
            if before.get(key) != after.get(key):
                _flatten(before.get(key), after.get(key), f"{path}.{key}" if path else str(key), out)
        return
    if before != after:
        out.append((path, before, after))


def attr_diff(before: dict[str, Any], after: dict[str, Any]) -> list[Attr]:
    """Changed attributes as (path, before, after), paths as in the params."""
    out: list[Attr] = []
    _flatten(before, after, "", out)
    return out


_NET_PREFIX = ("net.", "nat.masquerade")


def _shown_path(kind: str, path: str, params: dict[str, Any]) -> str:
    if kind == "cgroup.limit":
        return f"limits.{params.get('limit')}" if path == "value" else f"limits.{path}"
    if kind == "cgroup.group":
        return f"limits.{path}"
    if kind == "proc.main":
        if path.endswith(".profile_text"):      # (the pinned seccomp profile)
            return path.removesuffix("_text") + " content"
        return "limits." + path if path.startswith("rlimits") else path
    if kind == "fs.net-files":
        return path if path.startswith("hostname") else f"network.{path}"
    if path == "rules_sha256":     # (nftables rules changed by hand: drift)
        return "nftables rules"
    if path == "hairpin_sha256":   # (a published port's hairpin masquerade, likewise)
        return "nftables hairpin rules"
    if kind.startswith(_NET_PREFIX) and kind != "net.loopback":
        return f"network.{path}"
    if path == "source_sha256":
        return "source content"
    if path == "content_sha256":     # (a file's record: what it holds now, drift)
        return "content"
    if path == "skipped" and kind in MOUNT_KINDS:   # (drift: a skipped bind's source appeared)
        return "optional source"
    if path == "mount.covered_by" and kind in MOUNT_KINDS:   # (drift: mounted over from inside)
        return "mounted over by"
    return path


def _shown_value(kind: str, path: str, value: Any, params: dict[str, Any], limit: int = 48) -> str:
    leaf = path.rsplit(".", 1)[-1]
    if isinstance(value, int) and not isinstance(value, bool):
        if leaf == "mode":
            return fmt.mode(value)
        if leaf == "size" or (kind == "cgroup.limit" and leaf == "value"
                              and params.get("limit") in ("memory", "memory_swap")):
            return fmt.size(value)
    if leaf == "command" and isinstance(value, list):
        return fmt.value(fmt.command(value), limit)
    if leaf == "root" and isinstance(value, str) and value.endswith("//deleted"):
        return "(deleted on the host)"     # a bound directory's source (ops.fs._source_deleted)
    if leaf == "skipped" and kind in MOUNT_KINDS and isinstance(value, bool):
        return "missing" if value else "there now"
    if leaf == "covered_by" and kind in MOUNT_KINDS:
        return "nothing" if value is None else f"a {value} mount"
    if leaf == "content_sha256" and isinstance(value, str) and value.startswith("size:"):
        return f"({value[5:]} bytes)"      # (a file's size changed: not read, see ops.fs._file_now)
    if leaf in ("source_sha256", "content_sha256", "rules_sha256", "hairpin_sha256") and isinstance(value, str):
        return f"sha256:{value[:12]}"
    if _is_content(kind, path, value):
        return f"({len(value.encode())} bytes, sha256:{sha256(value.encode()).hexdigest()[:12]})"
    return fmt.value(value, limit)


def _unpinned_profile(old: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
    """``wanted`` without its seccomp profile's pinned text when ``old`` (applied before
    profiles were pinned) has none: no change for that alone."""
    old_setting = (old.get("security") or {}).get("seccomp")
    setting = (wanted.get("security") or {}).get("seccomp")
    if not isinstance(setting, dict) or "profile_text" not in setting or \
            (isinstance(old_setting, dict) and "profile_text" in old_setting):
        return wanted
    unpinned = {k: v for k, v in setting.items() if k != "profile_text"}
    return {**wanted, "security": {**wanted["security"], "seccomp": unpinned}}


def reason_of(kind: str, attrs: list[Attr], params: dict[str, Any]) -> str:
    parts = []
    for path, before, after in attrs:
        shown = _shown_path(kind, path, params)
        old, new = _shown_value(kind, path, before, params), _shown_value(kind, path, after, params)
        if old == new and before != after:
            # (shortened alike: where they differ is shown, a day-2 review saw a changed
            # command read "... -> ..." twice the same)
            old, new = fmt.where_differ(_shown_value(kind, path, before, params, _WHOLE),
                                        _shown_value(kind, path, after, params, _WHOLE))
        parts.append(f"{shown} {old} -> {new}")
    return ", ".join(parts)


_WHOLE = 1 << 62


# --- changes ----------------------------------------------------------------


def _old_order(state: dict[str, Any]) -> list[str]:
    resources: dict[str, Any] = state.get("resources") or {}
    plan = state.get("plan") or {}
    ids = [a["id"] for a in plan.get("actions") or [] if a.get("id") in resources]
    seen = set(ids)
    ids += sorted(i for i in resources if i not in seen)
    return ids


def _old_describes(state: dict[str, Any]) -> dict[str, str]:
    return {str(a.get("id")): str(a["describe"])
            for a in (state.get("plan") or {}).get("actions") or [] if a.get("describe")}


def _removed_places(state: dict[str, Any], wanted: dict[str, Action],
                    dependents: dict[str, list[str]]) -> list[str]:
    """The recorded mounts and links the desired plan no longer has; what depended on
    them in the recorded plan (and stays) is added to ``dependents``."""
    resources: dict[str, Any] = state.get("resources") or {}
    gone = {rid for rid, res in resources.items()
            if rid not in wanted and (res.get("kind") in MOUNT_KINDS or res.get("kind") == "fs.symlink")}
    found: list[str] = []
    for a in (state.get("plan") or {}).get("actions") or []:
        if a.get("id") not in wanted:
            continue
        for dep in a.get("deps") or ():
            if dep in gone:
                dependents.setdefault(dep, []).append(a["id"])
                if dep not in found:
                    found.append(dep)
    return found


# The id (and kind) of the line for a manifest whose changes reach no action
METADATA = "metadata"


def changes(desired: dict[str, Any] | None, state: dict[str, Any] | None,
            live: dict[str, Any] | None = None, *, verbose: bool = False) -> list[Change]:
    """Drift entries first (``drift=True``), then the changes in plan order,
    then destroys in teardown order. No-ops (symbol ``""``) only with ``verbose``.
    """
    resources: dict[str, Any] = (state or {}).get("resources") or {}
    actions: list[Action] = (desired or {}).get("actions") or []
    wanted = {a["id"]: a for a in actions}
    live = live or {}

    drift: list[Change] = []
    symbol: dict[str, str] = {}
    reason: dict[str, str] = {}
    attrs: dict[str, list[Attr]] = {}
    replace_env = False  # something forces replacing the whole environment

    # drift first: what changed outside vbdecl since the last apply
    for rid in _old_order(state or {}):
        if rid not in live:
            continue
        res = resources[rid]
        now = live[rid]
        kind = str(res.get("kind", "?"))
        if now is None:
            drift.append(Change("-", rid, kind, gone_reason(kind), old=res, drift=True))
        elif now != res.get("record"):
            found = attr_diff(res.get("record") or {}, now)
            if len(found) > 1:    # (the rules' digests are the catch-all: said when nothing else is)
                found = [a for a in found if a[0] not in ("rules_sha256", "hairpin_sha256")] or found[:1]
            # (records, not params: only a mount's record keys are shown by their kind's words)
            shown_as = kind if kind in MOUNT_KINDS else ""
            drift.append(Change("~", rid, kind, "changed outside vbdecl: " + reason_of(shown_as, found, {}),
                                old=res, drift=True, attrs=found))
    drifted = {c.id: c for c in drift}

    for a in actions:
        rid, kind = a["id"], a["kind"]
        old = resources.get(rid)
        if old is None:
            symbol[rid], reason[rid] = "+", a.get("describe", "")
            continue
        level = 0
        why = ""
        if old.get("kind") != kind:
            level = REPLACE_ENV if a.get("replace") else REPLACE
            why = f"kind {old.get('kind')} -> {kind}"
            if (old.get("kind"), kind) == ("fs.bind", "fs.ro-bind") and \
                    not attr_diff({**(old.get("params") or {}), "type": None},
                                  {**(a.get("params") or {}), "type": None}):
                level, why = UPDATE, "bind -> ro-bind (made read-only in place)"
        else:
            wanted_params = a.get("params") or {}
            if "source_sha256" not in (old.get("params") or {}):
                # (applied before sources were pinned: no change for that alone; an apply
                # that changes the entry otherwise records its pin)
                wanted_params = {k: v for k, v in wanted_params.items() if k != "source_sha256"}
            wanted_params = _unpinned_profile(old.get("params") or {}, wanted_params)
            found = attr_diff(old.get("params") or {}, wanted_params)
            if found:
                attrs[rid] = found
                level = max(effect(kind, p) for p, _, _ in found)
                why = reason_of(kind, found, a.get("params") or {})
        d = drifted.get(rid)
        if d is not None:
            if d.symbol == "-":
                symbol[rid] = "+"
                reason[rid] = ("start again: " if kind in ENDS_ON_ITS_OWN else "recreate: ") \
                    + gone_reason(kind) + (f"; {why}" if why else "")
                replace_env = replace_env or bool(a.get("replace"))
                continue
            repair = max((effect(kind, p) for p, _, _ in d.attrs), default=effect(kind, ""))
            if a.get("replace") and repair > UPDATE:
                repair = REPLACE_ENV
            if level == 0:
                why = "repair: " + d.reason
            level = max(level, repair)
        if level == UPDATE:
            symbol[rid], reason[rid] = "~", why
        elif level == REPLACE:
            symbol[rid], reason[rid] = "-/+", why
        elif level == REPLACE_ENV:
            symbol[rid], reason[rid] = "-/+", why + " (forces replacement of the environment)"
            replace_env = True

    if replace_env:
        for a in actions:
            rid = a["id"]
            if rid in resources and symbol.get(rid) not in ("-/+", "+"):
                own = reason.get(rid)     # (its own change, shown too: a review missed it)
                symbol[rid], reason[rid] = "-/+", f"{own}; replaced with the environment" if own \
                    else "replaced with the environment"
    else:
        # replacing (or recreating) an action replaces what depends on it,
        # except the process, which keeps running in the live environment
        dependents: dict[str, list[str]] = {}
        for a in actions:
            for dep in a["deps"]:
                dependents.setdefault(dep, []).append(a["id"])
        # A link pointed elsewhere (in place) moves what was placed through it: those
        # entries are made again at the new place, after going from the old one.
        relinked = {rid for rid, s in symbol.items() if s == "~" and wanted[rid]["kind"] == "fs.symlink"
                    and any(p == "points_to" for p, _, _ in attrs.get(rid, ()))}
        # So does a mount or a link that goes: what was placed in (through) it is made
        # again where its path leads now (the recorded plan says what was placed so).
        unplaced = _removed_places(state or {}, wanted, dependents)
        queue = deque([*(rid for rid, s in symbol.items()
                         if s == "-/+" or (s == "+" and rid in resources) or rid in relinked),
                       *unplaced])
        while queue:
            cur = queue.popleft()
            for nxt in dependents.get(cur, ()):
                if nxt == "process" or nxt not in resources or symbol.get(nxt) in ("-/+", "+"):
                    continue
                symbol[nxt] = "-/+"
                prev = reason.get(nxt)
                why = f"made again without {cur}" if cur in unplaced else f"replaced with {cur}"
                reason[nxt] = why + (f"; {prev}" if prev else "")
                queue.append(nxt)

    # A mount replaced or removed under a process that keeps running: the process
    # still holds the old mount through its cwd and open files (a bind it may no
    # longer be granted), so the plan line says so.
    keeps = (not replace_env and "process" in resources and "process" in wanted
             and symbol.get("process") not in ("+", "-/+"))
    if keeps:
        for rid, sym in symbol.items():
            if sym == "-/+" and rid in resources and resources[rid].get("kind") in MOUNT_KINDS:
                reason[rid] = f"{reason[rid]}; {KEEPS_OLD_MOUNT}" if reason.get(rid) else KEEPS_OLD_MOUNT

    out: list[Change] = list(drift)
    for a in actions:
        rid = a["id"]
        s = symbol.get(rid)
        if s is None:
            if verbose:
                out.append(Change("", rid, a["kind"], "unchanged", action=a, old=resources.get(rid)))
            continue
        out.append(Change(s, rid, a["kind"], reason.get(rid, ""), action=a, old=resources.get(rid),
                          attrs=attrs.get(rid, []),
                          replaces_env=replace_env and rid in resources))
    describes = _old_describes(state or {})
    for rid in reversed(_old_order(state or {})):
        if rid in wanted:
            continue
        res = resources[rid]
        gone = rid in live and live[rid] is None
        why = "no longer in the manifest" if desired is not None else "destroy"
        desc = describes.get(rid)
        if desc:
            why += f": {desc}"
        if gone:
            why += " (already gone)"
        elif keeps and res.get("kind") in MOUNT_KINDS:
            why += f"; {KEEPS_OLD_MOUNT}"
        elif res.get("kind") == "net.bridge":
            # (a network review read "- net.bridge[br0]" as the bridge going while other
            # environments used it: this one leaves it)
            why += "; the bridge itself goes only with its last user, and only if vbdecl made it"
        out.append(Change("-", rid, str(res.get("kind", "?")), why, old=res))
    recorded = ((state or {}).get("plan") or {}).get("manifest_hash")
    wanted_hash = (desired or {}).get("manifest_hash")
    # (a state made for a comparison, `diff A B`, has no instance: no apply to speak of)
    compared = state is not None and state.get("instance") is None
    if any(c.symbol and not c.drift for c in out):
        # (with changes on the host: the labels and annotations said beside them, or a
        # review's label change never showed in the plan, the rollback prompt or a diff)
        if recorded and wanted_hash and recorded != wanted_hash and \
                (found := _metadata_diff((state or {}).get("plan") or {}, desired or {})):
            out.append(Change("", METADATA, METADATA, reason_of("", found, {})
                              + ("" if compared else ": apply records it")))
    else:
        if recorded and wanted_hash and recorded != wanted_hash:
            # labels or annotations: nothing on the host changes, yet apply records them
            out.append(Change("", METADATA, METADATA, "the manifest changed (labels, annotations, or "
                              "defaults another vbdecl fills in), but nothing it makes on the host"
                              + ("" if compared else ": apply records it")))
        elif not compared and (moved := _moved(state, desired)) is not None:
            # apply --prune of the old directory must not take it for one that went (two
            # files compared differ in their paths, which the user gave: nothing to say)
            out.append(Change("", METADATA, METADATA,
                              f"now applied from {moved[1]} (so far from {moved[0]}), "
                              "with nothing to change on the host: apply records it"))
    return out


def _metadata_diff(before: dict[str, Any], after: dict[str, Any]) -> list[Attr]:
    """The labels and annotations that differ between two plans (annotations only where
    both plans carry them: a vbdecl before 2026-12-01 did not put them in its plan)."""
    keys = ["labels"] + (["annotations"] if "annotations" in before and "annotations" in after else [])
    return [attr for k in keys for attr in attr_diff({k: before.get(k) or {}}, {k: after.get(k) or {}})]


def _moved(state: dict[str, Any] | None, desired: dict[str, Any] | None) -> tuple[str, str] | None:
    """(recorded, desired) manifest paths when they differ (a file moved or copied)."""
    before = (((state or {}).get("plan") or {}).get("source") or {}).get("path")
    now = ((desired or {}).get("source") or {}).get("path")
    return (str(before), str(now)) if before and now and before != now else None


def with_unchanged(desired: dict[str, Any], found: list[Change]) -> list[Change]:
    """``found`` plus a no-op entry for each desired action it does not mention."""
    by_id = {c.id: c for c in found if not c.drift}
    actions: list[Action] = desired.get("actions") or []
    wanted = {a["id"] for a in actions}
    out = [c for c in found if c.drift]
    for a in actions:
        out.append(by_id.get(a["id"]) or Change("", a["id"], a["kind"], "unchanged", action=a))
    out += [c for c in found if not c.drift and c.id not in wanted]
    return out


def summary(changes: list[Change]) -> dict[str, int]:
    """``{"add", "change", "destroy", "drift"}``; a replace counts as add and destroy."""
    out = {"add": 0, "change": 0, "destroy": 0, "drift": 0}
    for c in changes:
        if c.drift:
            out["drift"] += 1
        elif c.symbol == "+":
            out["add"] += 1
        elif c.symbol == "~":
            out["change"] += 1
        elif c.symbol == "-":
            out["destroy"] += 1
        elif c.symbol == "-/+":
            out["add"] += 1
            out["destroy"] += 1
    return out


def has_changes(changes: list[Change]) -> bool:
    """Whether an apply would do anything: a step, or record a metadata change."""
    return any((c.symbol and not c.drift) or c.kind == METADATA for c in changes)


def state_of(plan: dict[str, Any], records: dict[str, Any] | None = None) -> dict[str, Any]:
    """The state an apply of ``plan`` would record (records default to ``{}``):
    for tests and for ``vbdecl diff A B``."""
    return {
        "format": 1, "name": plan["name"], "instance": None, "lineage": None, "serial": 0,
        "plan": plan, "revision": 0,
        "resources": {a["id"]: {"kind": a["kind"], "params": a["params"],
                                "record": (records or {}).get(a["id"], {})}
                      for a in plan["actions"]},
    }
