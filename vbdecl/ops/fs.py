"""Ops ``fs.*``: the filesystem actions of a LIVE environment (``vbdecl apply``).

An ephemeral run does not use these: the sandbox child calls
:func:`vbdecl.runtime.rootfs.setup_root` with the whole spec. A live
environment's namespaces are held by its init (op ``env.namespaces``); the
engine then applies each filesystem action through these ops, in plan order,
and can add or remove one later (an in-place update).

Every apply/revert runs in a short-lived forked helper, so the vbdecl
process never changes its own namespaces:

1. host phase, in the host's namespaces: resolve sources, clone bind
   sources (``open_tree(OPEN_TREE_CLONE)``), make tmpfs, devpts, overlay and
   data mounts as *detached* mounts (:meth:`Builder.make`);
2. ``setns`` into the environment's mount namespace (and its user namespace
   when not root, or when the root vbdecl made belongs to that namespace's root,
   :func:`_root_owned_by`: what the root phase makes is then its, as in a run;
   the host phase gives what it makes to it too, ``Builder.owner``; its ipc
   namespace for mqueue, its pid namespace for proc,
   then fork so the proc instance belongs to it), found as the pinned file
   ``<runtime_dir>/ns/<name>`` or ``/proc/<env_pid>/ns/<name>`` (``ctx.extra
   ["ns"]`` may map ``mnt``/``pid``/... to other paths);
3. root phase: create the mount point inside the environment's root and
   ``move_mount`` the detached mount onto it (:meth:`Builder.place`).

``fs.rootfs`` builds the new root there and ``pivot_root``s the environment
into it (its init follows). Revert of a mount is ``umount2(MNT_DETACH)`` of
the target inside the environment plus removal of the mount points this
action created (if still empty). ``probe`` reads ``/proc/<env_pid>/mountinfo``
(or stats through ``/proc/<env_pid>/root``) without forking. Records carry the
environment's mount-namespace inode; a revert against another namespace (the
environment was replaced or is gone) does nothing.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import time
from typing import TYPE_CHECKING, Any

from vbdecl.errors import RuntimeSetupError
from vbdecl.ops import op_for, register
from vbdecl.ops.base import Context, Params, Record

if TYPE_CHECKING:
    from collections.abc import Callable

KINDS = {
    "fs.rootfs": "Rootfs", "fs.bind": "Bind", "fs.ro-bind": "RoBind", "fs.dev-bind": "DevBind",
    "fs.proc": "Proc", "fs.dev": "Dev", "fs.mqueue": "Mqueue", "fs.tmpfs": "Tmpfs",
    "fs.overlay": "Overlay", "fs.tmp-overlay": "TmpOverlay", "fs.ro-overlay": "RoOverlay",
    "fs.bind-data": "BindData", "fs.dir": "Dir", "fs.file": "File", "fs.symlink": "Symlink",
    "fs.chmod": "Chmod", "fs.remount-ro": "RemountRo", "fs.net-files": "NetFiles",
}
for _kind, _cls in KINDS.items():
    register(_kind, f"vbdecl.ops.fs:{_cls}")

_NS_FLAGS = {"user": 0x10000000, "mnt": 0x00020000, "ipc": 0x08000000, "pid": 0x20000000}
_JOIN = ("user", "mnt", "ipc", "pid")


# --- where the environment is ----------------------------------------------------------

def _ns_path(ctx: Context, name: str) -> str | None:
    override = (ctx.extra.get("ns") or {}).get(name)
    if override:
        return str(override)
    pinned = os.path.join(ctx.runtime_dir, "ns", name)
    from vbdecl.sys.ns import is_pinned

    if is_pinned(pinned):
        return pinned
    if ctx.env_pid:
        return f"/proc/{ctx.env_pid}/ns/{name}"
    return None


def _ns_inode(ctx: Context, name: str = "mnt") -> int | None:
    path = _ns_path(ctx, name)
    if path is None:
        return None
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _require_env(ctx: Context) -> int:
    ino = _ns_inode(ctx)
    if ino is None:
        raise RuntimeSetupError(
            "there is no live environment to change (its mount namespace is not pinned and "
            "no init pid is known)",
            hint="filesystem actions of a run are applied by the sandbox itself; for a live "
                 "environment apply env.namespaces first")
    if ino == os.stat("/proc/self/ns/mnt").st_ino:
        raise RuntimeSetupError("the environment shares vbdecl's own mount namespace",
                                hint="filesystem actions need namespaces.mount: true")
    return ino


def _same_env(ctx: Context, record: Record) -> bool:
    ino = _ns_inode(ctx)
    return ino is not None and ino == record.get("mnt_ns")


def _unescape(field: str) -> str:
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mountinfo_of(ctx: Context) -> list[dict[str, Any]] | None:
    """The environment's mounts (paths as seen from its root), or None if it is gone."""
    if not ctx.env_pid:
        return None
    try:
        with open(f"/proc/{ctx.env_pid}/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    out = []
    for line in lines:
        parts = line.split()
        sep = parts.index("-")
        out.append({"id": int(parts[0]), "parent": int(parts[1]), "target": _unescape(parts[4]),
                    "opts": parts[5].split(","),
                    "fstype": parts[sep + 1], "root": _unescape(parts[3])})
    return out


def _identity(mi: dict[str, Any]) -> dict[str, Any]:
    """What tells a mount from another: its id (the kernel reuses freed ids, so the
    filesystem type and root too), and where it is (``at``: links in the entry's
    target resolved; a link changed later does not move the mount). A bound host
    file replaced by a rename shows its root with "//deleted" appended: still the
    same mount."""
    return {"id": mi["id"], "fstype": mi["fstype"], "root": mi["root"].removesuffix("//deleted"),
            "at": mi["target"]}


def _mounted_over(ctx: Context, mi: dict[str, Any], mounts: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A mount made outside vbdecl on the mount ``mi`` at its very place (a tmpfs
    mounted over a read-only bind from inside, say), or None: what the environment
    sees there is then no longer the entry's. Another entry's mount at the same target
    is the manifest's own stacking."""
    ours = {ident["id"] for r in ctx.records.values()
            if isinstance(r, dict) and isinstance(ident := r.get("mount"), dict) and "id" in ident}
    return next((o for o in mounts
                 if o["parent"] == mi["id"] and o["target"] == mi["target"] and o["id"] not in ours), None)


def _recorded_identity(record: Record | None) -> dict[str, Any] | None:
    """The mount identity a record keeps; None for records from before identities."""
    ident = (record or {}).get("mount")
    return ident if isinstance(ident, dict) and "at" in ident else None


def _mounted(ctx: Context, target: str) -> dict[str, Any] | None:
    mounts = mountinfo_of(ctx)
    if mounts is None:
        return None
    found = [mi for mi in mounts if mi["target"] == target]
    return found[-1] if found else None


def _top_mount_at(ctx: Context, target: str) -> dict[str, Any] | None:
    """The top mount at ``target``, with links in the path followed as the kernel did
    when mounting there (mountinfo shows where they led); None when nothing is mounted
    there or the environment is gone."""
    from vbdecl.runtime.rootfs import _close
    from vbdecl.sys import mount as m

    found = _open_in_env(ctx, target, None)
    if found is None:
        return None
    fd = found[0]
    try:
        if not m.is_mount_root(fd):
            return None
        mnt_id = m.statx_fd(fd)[2]
    except OSError:
        return None
    finally:
        _close(fd)
    return next((mi for mi in mountinfo_of(ctx) or [] if mi["id"] == mnt_id), None)


def _open_in_env(ctx: Context, target: str, record: Record | None, *,
                 follow: bool = True) -> tuple[int, int] | None:
    """(an O_PATH fd on ``target``, resolved inside the environment's root, and the
    environment's mount namespace inode), or None: gone, or not ``record``'s."""
    from vbdecl.runtime.rootfs import _close, resolve

    ino = _ns_inode(ctx)
    root = _env_root_fd(ctx)
    if ino is None or root is None or (record is not None and record.get("mnt_ns") != ino):
        _close(root)
        return None
    try:
        return resolve(root, target, os.O_PATH, follow=follow), ino
    except OSError:
        return None
    finally:
        _close(root)


def _env_root_fd(ctx: Context) -> int | None:
    if not ctx.env_pid:
        return None
    try:
        return os.open(f"/proc/{ctx.env_pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None


def _on_the_way(target: str, *, with_target: bool = True) -> list[str]:
    """The paths from the root down to ``target``, as ensure_dir records those it makes."""
    from vbdecl.runtime.rootfs import _split

    comps = _split(target)
    ways = ["/" + "/".join(comps[:i]) for i in range(1, len(comps) + 1)]
    return ways if with_target else ways[:-1]


def _existing(ctx: Context, paths: list[str]) -> list[str] | None:
    """Which of ``paths`` exist in the environment (a path's last component not
    followed; one that cannot be looked up counts as there); None when it is gone."""
    from vbdecl.runtime.rootfs import _close, resolve

    root = _env_root_fd(ctx)
    if root is None:
        return None
    there = []
    try:
        for path in paths:
            try:
                fd = resolve(root, path, os.O_PATH, follow=False, missing_ok=True)
            except OSError:
                there.append(path)
                continue
            if fd >= 0:
                _close(fd)
                there.append(path)
        return there
    finally:
        _close(root)


def _missing(ctx: Context, target: str) -> list[str] | None:
    """What an apply at ``target`` would create on its way (the target included)."""
    ways = _on_the_way(target)
    there = _existing(ctx, ways)
    if there is None:
        return None
    return ways[ways.index(there[-1]) + 1:] if there else ways


def _made(ctx: Context, before: dict[str, Any]) -> list[str]:
    """What of ``before``'s missing paths an interrupted apply made."""
    return _existing(ctx, list(before.get("missing") or [])) or []


def _owned(record: Record) -> list[str]:
    """The paths an action removes when it goes (if empty): what it made, and what
    other actions made on the way to it that it took on (``adopted``)."""
    made, adopted = record.get("created"), record.get("adopted")
    made = made if isinstance(made, list) else []       # other families' records: not paths
    return _merge_created(made, adopted) if isinstance(adopted, list) else made


def _owners(ctx: Context) -> dict[str, list[Record]]:
    """Path -> the live filesystem records of this environment's mount namespace
    that own it (made or adopted it) or, holding paths of their own, declare it.
    A skipped optional mount owns nothing."""
    ino = _ns_inode(ctx)
    return _records_index(ctx, "fs_owners", ino, lambda _rid, r: _declared(r, ino))


def _writable_of(ctx: Context) -> list[str]:
    """The host directories the environment's sandbox may write (rootfs.sandbox_writable),
    of the spec and of the recorded one (a live update that stops writing a directory
    keeps what its sandbox may have put there); once per pair of specs, not per action
    (a scale review: 1.8 s of a 2,000-entry apply)."""
    from vbdecl.runtime.rootfs import sandbox_writable

    specs = (ctx.spec or None, ctx.extra.get("recorded_spec") or None)   # (an empty one is new each time)
    cached = ctx.extra.get("fs_writable")
    if cached is None or cached[0] is not specs[0] or cached[1] is not specs[1]:
        cached = (*specs, sorted({*sandbox_writable(specs[0] or {}), *sandbox_writable(specs[1] or {})}, key=len))
        ctx.extra["fs_writable"] = cached
    return list(cached[2])


def _records_index(ctx: Context, name: str, token: Any,
                   keys_of: Callable[[str, Record], list[str]]) -> dict[str, list[Record]]:
    """Key -> the live records ``keys_of`` files under it, kept in ``ctx.extra[name]``
    and brought up to date by the records that came and went since (an apply or
    destroy of N entries asks once per action: rebuilt each time, that was quadratic;
    a scale review measured 14 s of a 2,000-entry apply). A record is known by its id
    and identity, as actions replace a record rather than change it; a new ``token``
    (what ``keys_of`` depends on besides the record) starts the index again."""
    version = (id(ctx.records), getattr(ctx.records, "version", None))    # (ops.base.Records)
    cached = ctx.extra.get(name)
    if cached is None or cached[0] != token:
        cached = (token, {}, {}, None)
    elif version[1] is not None and cached[3] == version:
        unchanged: dict[str, list[Record]] = cached[2]
        return unchanged                # (nothing came or went: a plan asks once per entry)
    records = {(rid, id(r)): r for rid, r in ctx.records.items()}
    indexed: dict[tuple[str, int], Record] = cached[1]      # (holds the records: their ids stay theirs)
    index: dict[str, list[Record]] = cached[2]
    for key in indexed.keys() - records.keys():
        gone = indexed.pop(key)
        for k in keys_of(key[0], gone):
            index[k] = [r for r in index[k] if r is not gone]
            if not index[k]:
                del index[k]
    for key in records.keys() - indexed.keys():
        indexed[key] = records[key]
        for k in keys_of(key[0], records[key]):
            index.setdefault(k, []).append(records[key])
    ctx.extra[name] = (token, indexed, index, version)
    return index


def _declared(r: Record, ino: int | None) -> list[str]:
    """The paths ``r`` owns or declares in mount namespace ``ino`` (see _owners)."""
    if r.get("mnt_ns") != ino or ino is None or r.get("skipped"):
        return []
    paths, target = _owned(r), r.get("target")
    if isinstance(r.get("created"), list) and isinstance(target, str) and target not in paths:
        paths = [*paths, target]
    return list(dict.fromkeys(paths))


def _adopt(ctx: Context, record: Record, *, with_target: bool) -> Record:
    """``record`` with ``adopted``: the directories on the way to its target (the
    target too ``with_target``) that other live actions made (links excepted: they
    are their entries' own). vbdecl made them, so the last action to go removes
    them (see _unclaimed)."""
    owners = _owners(ctx)
    made = set(record.get("created") or ())
    theirs = {p for p in _on_the_way(record["target"], with_target=with_target)
              if p not in made and any(p in _owned(r) and not _is_link_of(r, p)
                                       for r in owners.get(p, ()) if r is not record)}
    theirs.update(p for p in record.get("adopted") or () if p not in made)
    if theirs:
        record["adopted"] = _merge_created([], sorted(theirs))
    return record


def _keeps_adopted(new: Record, old: Record) -> Record:
    """``new`` (an update's record) with what ``old`` had taken on, less what it made."""
    made = new.get("created") or ()
    adopted = [p for p in _merge_created(new.pop("adopted", []), old.get("adopted", [])) if p not in made]
    return {**new, "adopted": adopted} if adopted else new


def _is_link_of(record: Record, path: str) -> bool:
    """Whether ``path`` is the link a symlink entry's ``record`` made."""
    return "points_to" in record and record.get("target") == path


def _unclaimed(ctx: Context, record: Record) -> list[str]:
    """What ``record``'s action removes when it goes, less what another live action
    declares or owns too: a directory made on the way to one entry that a later
    entry declares stays until the last of them goes."""
    owners = _owners(ctx)
    return [p for p in _owned(record) if not any(r != record for r in owners.get(p, ()))]


# --- the helper ---------------------------------------------------------------------

class _Job:
    """What a helper does: a host phase, then a root phase inside the environment."""

    pid_ns = False     # the root phase must run in the environment's pid namespace
    ipc_ns = False

    def host(self, b: Any) -> None:
        """Host phase (host namespaces); ``b`` is a rootfs.Builder without a root."""

    def root(self, b: Any) -> Any:
        """Root phase (inside the environment); returns the JSON result."""
        return None


def _in_env(ctx: Context, job: _Job) -> Any:
    """Run ``job`` in a forked helper; return its result or raise its error."""
    _require_env(ctx)
    owner = _userns_root(ctx)
    paths = {}
    for name in _JOIN:
        if name == "user" and os.geteuid() == 0 and not (owner is not None and _root_owned_by(ctx, owner)):
            continue   # root acts on any namespace from the host's user namespace
        if (name == "pid" and not job.pid_ns) or (name == "ipc" and not job.ipc_ns):
            continue
        path = _ns_path(ctx, name)
        if path is None:
            continue
        try:
            if os.stat(path).st_ino == os.stat(f"/proc/self/ns/{name}").st_ino:
                continue
        except OSError:
            continue
        paths[name] = path
    writable = _writable_of(ctx)
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # helper
        try:
            os.close(r)
            _helper_main(job, paths, w, writable, owner)
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    try:
        while True:
            b = os.read(r, 65536)
            if not b:
                break
            chunks.append(b)
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    try:
        res = json.loads(b"".join(chunks))
    except ValueError:
        raise RuntimeSetupError("the filesystem helper died without an answer") from None
    if "error" in res:
        err = RuntimeSetupError(res["error"], hint=res.get("hint"))
        err.errno = res.get("errno")  # type: ignore[attr-defined]
        raise err
    return res["ok"]


def _send(w: int, payload: dict[str, Any]) -> None:
    data = json.dumps(payload).encode()
    while data:
        data = data[os.write(w, data):]


def _userns_root(ctx: Context) -> tuple[int, int] | None:
    """The host (uid, gid) of uid and gid 0 of the environment's user namespace, when it
    has one of its own that maps them; else None."""
    if not ctx.env_pid or os.geteuid() != 0:
        return None
    try:
        if os.stat(f"/proc/{ctx.env_pid}/ns/user").st_ino == os.stat("/proc/self/ns/user").st_ino:
            return None
        ids = []
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{ctx.env_pid}/{name}") as f:
                rows = [line.split() for line in f]
            ids.append(next(int(out) for inside, out, _count in rows if inside == "0"))
    except (OSError, ValueError, StopIteration):
        return None
    return ids[0], ids[1]


def _root_owned_by(ctx: Context, owner: tuple[int, int]) -> bool:
    """Whether the environment's root directory belongs to ``owner``: one vbdecl made for
    an environment with a user namespace (a root an older vbdecl made there, and a host
    directory given as rootfs, stay the host root's: entries go on being made as it)."""
    try:
        st = os.stat(f"/proc/{ctx.env_pid}/root/")
    except OSError:
        return False
    return (st.st_uid, st.st_gid) == owner


def _helper_main(job: _Job, paths: dict[str, str], w: int, writable: list[str],
                 owner: tuple[int, int] | None = None) -> None:
    from vbdecl.runtime.rootfs import Builder, _close, set_link_policy
    from vbdecl.sys import mount as m
    from vbdecl.sys.ns import setns

    b = None
    host_fd = staging = -1
    os.umask(0)     # modes as given, as setup_root makes them for a run (not cut by ours)
    try:
        # Nothing in the environment may ptrace us or open our /proc files (the host's root
        # and mount namespace, which we hold) once we are in its namespaces (a review)
        from vbdecl.sys.proc import seal_imports, set_dumpable

        set_dumpable(False)
        ns_fds = {name: os.open(path, os.O_RDONLY | os.O_CLOEXEC) for name, path in paths.items()}
        host_fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        staging = m.new_mount("tmpfs", [("mode", "0700")], m.MOUNT_ATTR_NOSUID | m.MOUNT_ATTR_NODEV)
        b = Builder(host_fd, None, staging, "/")
        b.owner = owner
        b.fence_writable(writable)     # (no link below them is followed to a source)
        # ipc and pid first: mqueue and proc instances belong to their creator's
        # namespaces, and are made (host phase) while still in the host's mount
        # namespace, where a fully visible proc exists.
        for name in ("ipc", "pid"):
            if name in ns_fds:
                setns(ns_fds[name], _NS_FLAGS[name], what=f"{name} namespace of the environment")
        if "pid" in ns_fds:
            inner = os.fork()   # a pid namespace applies to children
            if inner:
                os.waitpid(inner, 0)
                return
        job.host(b)
        for name in ("user", "mnt"):
            if name in ns_fds:
                setns(ns_fds[name], _NS_FLAGS[name], what=f"{name} namespace of the environment")
                if name == "mnt":
                    # the environment's root, where root inside may have planted a module
                    # at a path we would import from: nothing more is imported
                    seal_imports()
                if name == "user":
                    try:
                        os.setgid(0)
                        os.setuid(0)
                    except OSError:
                        pass
        for fd in ns_fds.values():
            os.close(fd)
        b.set_root("/")
        # (as a run's build: the host's root follows only root's links in the root)
        set_link_policy(os.geteuid() == 0 and "user" not in ns_fds)
        result = job.root(b)
        b.unlink_staged()
        _send(w, {"ok": result})
    except BaseException as exc:
        if b is not None:
            b.rollback_host()   # overlay upper/work directories this job created on the host
        msg = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        _send(w, {"error": msg, "hint": getattr(exc, "hint", None),
                  "errno": getattr(exc, "errno", None)})
    finally:
        if b is not None:
            b.close()
        _close(staging)
        _close(host_fd)


# --- ops -----------------------------------------------------------------------------

def _describe(kind: str, p: Params) -> str:
    t = p.get("target", "/")
    if kind in ("bind", "ro-bind", "dev-bind"):
        src = p.get("source") if p.get("fd") is None else f"fd {p['fd']}"
        extra = {"ro-bind": " (read-only)", "dev-bind": " (devices)"}.get(kind, "")
        return f"{kind} {src} -> {t}{extra}" + (" (optional)" if p.get("optional") else "")
    if kind in ("overlay", "tmp-overlay", "ro-overlay"):
        text = f"{kind} {':'.join(p.get('lower') or [])} -> {t}"
        return text + (f" (upper {p['upper']})" if p.get("upper") else "")
    if kind == "tmpfs":
        bits = [f"size={p['size']}" if p.get("size") else "", f"mode={p['mode']:o}" if p.get("mode")
                is not None else ""]
        return f"tmpfs {t}" + (f" ({', '.join(b for b in bits if b)})" if any(bits) else "")
    if kind in ("dir", "chmod") and p.get("mode") is not None:
        return f"{kind} {t} mode {p['mode']:o}"
    if kind == "symlink":
        return f"symlink {t} -> {p.get('points_to')}"
    if kind == "file":
        return f"file {t}" + (f" from {p['source']}" if p.get("source") else "")
    return f"{kind} {t}"


class _MountJob(_Job):
    def __init__(self, entry: dict[str, Any]) -> None:
        self.entry = entry
        self.made: Any = None
        self.pid_ns = entry["type"] == "proc"
        self.ipc_ns = entry["type"] == "mqueue"

    def host(self, b: Any) -> None:
        try:
            self.made = b.make(self.entry)
        except OSError as exc:
            raise self._hinted(exc) from None

    def root(self, b: Any) -> Any:
        try:
            b.place(self.entry, self.made)
        except OSError as exc:
            raise self._hinted(exc) from None
        finally:
            self.made.close()
        return {"created": b.created, "ids": b.created.ids, "skipped": bool(self.made.skip),
                "host_created": list(b.host_created)}

    def _hinted(self, exc: OSError) -> OSError:
        """``exc`` with the hint a run gives for this entry (rootfs.entry_hint: only keys its
        type accepts), not the syscall's generic one."""
        from vbdecl.runtime.rootfs import entry_hint

        hint = entry_hint(exc, self.entry)
        if hint is not None:
            exc.hint = hint     # type: ignore[attr-defined]
        return exc


class _UndoJob(_Job):
    """Unmount ``targets`` (top mount each, in order) and remove ``created`` paths if empty;
    ``own_file`` whatever its size, while it is the file made (``file_id``)."""

    def __init__(self, targets: list[str], created: list[str], *, own_file: str | None = None,
                 file_id: list[int] | None = None) -> None:
        self.targets = targets
        self.created = created
        self.own_file = own_file
        self.file_id = file_id

    def root(self, b: Any) -> Any:
        from vbdecl.sys import mount as m

        for target in self.targets:
            try:
                m.umount2(target, m.MNT_DETACH | m.UMOUNT_NOFOLLOW)
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.ENOENT):
                    raise
        from vbdecl.runtime.rootfs import remove_created

        ids = {self.own_file: (self.file_id[0], self.file_id[1])} if self.own_file and self.file_id else None
        kept: list[str] = []
        remove_created(b.root_fd, self.created, own_files=[self.own_file] if self.own_file else [], ids=ids,
                       kept=kept)
        return {"kept": kept}


def _host_ids(paths: list[str]) -> dict[str, list[int]]:
    """(st_dev, st_ino) of each host path (not followed), to remove only what was made."""
    out = {}
    for path in paths:
        try:
            st = os.lstat(path)
        except OSError:
            continue
        out[path] = [st.st_dev, st.st_ino]
    return out


def _deepest(paths: list[str], also: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """``paths`` without those above another of them or of ``also``: what a note names
    (/run/app, not /run, which stays only for /run/app)."""
    return [p for p in paths if not any(q.startswith(p.rstrip("/") + "/") for q in (*paths, *also))]


def _remove_host_created(ctx: Context, record: Record) -> None:
    """The host directories an overlay's apply made for its upper and work (and their
    parents), once its mount is gone: a rolled-back apply said "nothing was left" and
    left them (a contract review). An upper with what the environment wrote stays, and
    is told."""
    paths = [str(p) for p in record.get("host_created") or []]
    if not paths:
        return
    from vbdecl.runtime.rootfs import _close, remove_host_dirs

    host = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        ids = {p: (int(v[0]), int(v[1])) for p, v in (record.get("host_ids") or {}).items()}
        kept = remove_host_dirs(host, [p for p in paths if p in ids], ids=ids,
                                trees=frozenset([str(record.get("work") or "")]))
    finally:
        _close(host)
    kept = _deepest(kept)
    if kept:
        ctx.notes.append(f"{', '.join(kept)} stay{'s' if len(kept) == 1 else ''} on the host: not empty "
                         "(what the environment wrote into the overlay)")


def _undo(ctx: Context, job: _UndoJob) -> None:
    """Run ``job``; a directory it made that stays, for the environment wrote into it, is
    told (a day-2 review: `- dir[/run/app]` said nothing of the directory left with the
    environment's files), where the environment lives on."""
    res = _in_env(ctx, job)
    found = (res or {}).get("kept") or []
    # (and not what an earlier revert of this command told of)
    told: set[str] = ctx.extra.setdefault("fs_kept", set())
    kept = _deepest(found, told)
    told.update(found)
    if kept and ctx.env_stays:
        ctx.notes.append(f"{', '.join(kept)} stay{'s' if len(kept) == 1 else ''}: not empty (the "
                         "environment wrote there); vbdecl exec removes what is not wanted")


class _FsOp:
    kind = ""

    def describe(self, params: Params) -> str:
        return _describe(self.kind, params)

    def _entry(self, params: Params) -> dict[str, Any]:
        return {"type": self.kind, **params}


class _Mount(_FsOp):
    """A mount at ``target`` (binds, kernel filesystems, tmpfs, overlays, bind-data)."""

    # Records keep the mount's identity: another mount at the same target (one made
    # from inside in place of vbdecl's) is not this one.

    def apply(self, ctx: Context, params: Params) -> Record:
        ino = _require_env(ctx)
        res = _in_env(ctx, _MountJob(self._entry(params)))
        record = {"target": params["target"], "mnt_ns": ino, "created": res["created"],
                  "skipped": res["skipped"]}
        if res.get("host_created"):     # (an overlay's upper and work, and their parents)
            record["host_created"], record["work"] = res["host_created"], params.get("work")
            record["host_ids"] = _host_ids(res["host_created"])
        if res["skipped"]:
            return record
        top = _top_mount_at(ctx, params["target"])
        if top is not None:
            record["mount"] = _identity(top)
        if self.read_only(params):
            record["ro"] = True
        return _adopt(ctx, record, with_target=True)

    def read_only(self, params: Params) -> bool:
        """Whether the entry's mount is read-only itself (then one found writable, by
        whatever means, is drift that apply repairs: the process could write the host)."""
        return False

    def observe(self, ctx: Context, params: Params) -> dict[str, Any] | None:
        missing = _missing(ctx, params["target"])
        if missing is None:
            return None
        top = None if missing else _top_mount_at(ctx, params["target"])
        return {"missing": missing, "top": top["id"] if top is not None else None}

    def recover(self, ctx: Context, params: Params, before: dict[str, Any]) -> Record | None:
        ino = _ns_inode(ctx)
        if ino is None:
            return None
        made = _made(ctx, before)
        top = _top_mount_at(ctx, params["target"])
        if top is not None and top["id"] == before.get("top"):
            top = None      # mounted there before this apply
        if top is None and not made:
            return None
        # "mount": None: the mount points it made, no mount (killed before it mounted)
        record = {"target": params["target"], "mnt_ns": ino, "created": made, "skipped": False,
                  "mount": _identity(top) if top is not None else None}
        if top is not None and self.read_only(params):
            record["ro"] = True
        return _adopt(ctx, record, with_target=True)

    def revert(self, ctx: Context, record: Record) -> None:
        self._revert(ctx, record)
        if not record.get("host_created"):
            return
        ident = _recorded_identity(record)
        if ident is None or not any(_identity(mi) == ident for mi in mountinfo_of(ctx) or []):
            _remove_host_created(ctx, record)     # (only once its mount is gone)

    def _revert(self, ctx: Context, record: Record) -> None:
        if record.get("skipped") or not _same_env(ctx, record):
            return
        created = _unclaimed(ctx, record)
        ident = _recorded_identity(record)
        if ident is None:
            # no mount made (see recover), or a record from before identities: the top
            # mount there
            made_none = "mount" in record and record["mount"] is None
            _undo(ctx, _UndoJob([] if made_none else [record["target"]], created))
            return
        # Where the mount is, whatever links in the target say now; what the process
        # mounted over it goes with it (as what is mounted below it does).
        at = ident["at"]
        stack = [_identity(mi) for mi in mountinfo_of(ctx) or [] if mi["target"] == at]
        above = len(stack) - stack.index(ident) if ident in stack else 0
        _undo(ctx, _UndoJob([at] * above, created))

    def probe(self, ctx: Context, params: Params, record: Record | None) -> Record | None:
        ino = _ns_inode(ctx)
        if ino is None or (record is not None and record.get("mnt_ns") != ino):
            return None
        if record is not None and record.get("skipped"):
            # an optional source that has appeared since: drift, which apply repairs by
            # binding it (a user review found it never bound, shown as "ok")
            appeared = isinstance(self, _BindMount) and os.path.exists(str(params.get("source") or ""))
            return {**record, "skipped": False} if appeared else record
        if record is not None and "mount" in record and record["mount"] is None:
            return None     # an interrupted apply's mount points: no mount of its own
        ident = _recorded_identity(record)
        if record is not None and ident is not None:
            mounts = mountinfo_of(ctx) or []
            mi = next((mi for mi in mounts if _identity(mi) == ident), None)
            if mi is None:
                # the same mount, its source moved on the host (a rename: the kernel
                # shows the root's new path): changed outside vbdecl, not deleted
                moved = next((m for m in mounts if {**_identity(m), "root": ident["root"]} == ident), None)
                if moved is not None:
                    return {**record, "mount": _identity(moved)}
            if mi is not None and self._source_deleted(params, mi):
                return {**record, "mount": {**ident, "root": mi["root"]}}   # (...//deleted)
            if mi is not None and record.get("ro") and "ro" not in mi["opts"]:
                return {**record, "ro": False}      # made writable behind vbdecl's back
            over = _mounted_over(ctx, mi, mounts) if mi is not None else None
            if over is not None:
                return {**record, "mount": {**ident, "covered_by": over["fstype"]}}
            return record if mi is not None else None
        top = _top_mount_at(ctx, params["target"])
        if top is None:
            return None
        return record or {"target": params["target"], "mnt_ns": ino, "created": [],
                          "mount": _identity(top)}


    def _source_deleted(self, params: Params, mi: dict[str, Any]) -> bool:
        """Whether the bound host object is gone: the mount shows a deleted root, and no
        file is at the source now (a file replaced by a rename, /etc/resolv.conf say,
        is still bound as it was: not drift). A bound directory that was deleted takes
        no new entries, and binding the source again needs it back."""
        return (isinstance(self, _BindMount) and mi["root"].endswith("//deleted")
                and not os.path.isfile(str(params.get("source") or "")))


class _BindMount(_Mount):
    def preflight(self, params: Params) -> str | None:
        """Why the bind cannot be made, checked before anything of an apply changes: a
        replacement would otherwise have taken the old mount away first (its source
        deleted on the host), and could not put it back either."""
        source = str(params.get("source") or "")
        if params.get("optional") or os.path.exists(source):     # (a dangling link: missing)
            return None
        return (f"bind source {source} does not exist: create it, or change the manifest "
                "(optional: true binds it only when it exists)")

    def update(self, ctx: Context, params: Params, record: Record) -> Record:
        """A bind made read-only in place (bind -> ro-bind, the one change of a bind that
        plan.diff updates): the same mount, recursively, so that the process loses its
        write access through what it holds open too (its cwd, its fds), where a new
        mount would leave it the old one. Anything else (a rollback's way back, which
        must not make writable what the host mounted read-only below the source; a
        mount that is not the recorded one; a file open for writing through it, which
        makes the kernel refuse, EBUSY) is a new bind in place of the old."""
        ident = _recorded_identity(record)
        if self.read_only(params) and not record.get("ro") and ident is not None:
            done = _in_env(ctx, _ReadOnlyJob(ident))
            if done == "done":
                return {**record, "ro": True}
            if done == "busy":
                ctx.notes.append(f"{params['target']} was mounted anew read-only, not made read-only in "
                                 "place: a file is open for writing through it, and the process keeps "
                                 "what it holds open of the old mount")
        self.revert(ctx, record)
        return self.apply(ctx, params)


class _ReadOnlyJob(_Job):
    """Make the recorded mount read-only, recursively (mount_setattr acts only on
    mounts of the caller's mount namespace: the helper's root phase)."""

    def __init__(self, ident: dict[str, Any]) -> None:
        self.ident = ident

    def root(self, b: Any) -> str:
        from vbdecl.runtime.rootfs import _close, resolve
        from vbdecl.sys import mount as m

        fd = resolve(b.root_fd, str(self.ident["at"]), os.O_PATH, missing_ok=True)
        try:
            if fd < 0 or not m.is_mount_root(fd) or m.statx_fd(fd)[2] != self.ident["id"]:
                return "moved"
            # (a file open for writing through it, EBUSY: one written now and then is
            # closed again in a moment)
            for _ in range(50):
                try:
                    m.set_attrs(fd, m.MOUNT_ATTR_RDONLY, recursive=True)
                    return "done"
                except OSError as exc:
                    if exc.errno != errno.EBUSY:
                        raise
                time.sleep(0.01)
            return "busy"
        finally:
            _close(fd)


class Bind(_BindMount):
    kind = "bind"


class RoBind(_BindMount):
    kind = "ro-bind"

    def read_only(self, params: Params) -> bool:
        return True


class DevBind(_BindMount):
    kind = "dev-bind"


class Proc(_Mount):
    kind = "proc"


class Dev(_Mount):
    kind = "dev"


class Mqueue(_Mount):
    kind = "mqueue"


class Tmpfs(_Mount):
    kind = "tmpfs"

    def apply(self, ctx: Context, params: Params) -> Record:
        """Also the filesystem's device (``dev``): an update in place acts on that
        filesystem only (:meth:`update`)."""
        from vbdecl.runtime.rootfs import _close

        record = super().apply(ctx, params)
        ident = _recorded_identity(record)
        found = _open_in_env(ctx, str(ident["at"]), record, follow=False) if ident is not None else None
        if found is not None:
            try:
                record["dev"] = os.fstat(found[0]).st_dev
            finally:
                _close(found[0])
        return record

    def update(self, ctx: Context, params: Params, record: Record) -> Record:
        """A new size or mode, in place: the tmpfs keeps its files (a day-2 review lost
        them to a replacement for a larger size). Only on the filesystem this entry made:
        the mount there now must be the recorded one (its id) on the recorded device, or
        root inside could have vbdecl resize and chmod another, a host's /run bound there
        in its place (a review). Anything else, or a record from before: replaced."""
        from vbdecl.runtime.rootfs import DEFAULT_MODES, _close
        from vbdecl.sys import mount as m

        ident = _recorded_identity(record)
        found = _open_in_env(ctx, str(ident["at"]), record, follow=False) \
            if ident is not None and record.get("dev") is not None else None
        fd = -1 if found is None else found[0]
        try:
            if ident is None or fd < 0 or os.fstat(fd).st_dev != record["dev"] or \
                    m.statx_fd(fd)[2] != ident["id"] or not m.is_mount_root(fd):
                _close(fd)
                fd = -1
                self.revert(ctx, record)
                return self.apply(ctx, params)
            size = params.get("size")
            try:
                # (no size: tmpfs's own default, half of the memory)
                m.reconfigure(fd, [("size", str(int(size)) if size else "50%")])
            except OSError as exc:
                if not ctx.restoring:
                    from vbdecl.plan.fmt import size as shown

                    raise RuntimeSetupError(
                        f"tmpfs {params['target']}: cannot change its size to "
                        f"{shown(size) if size else 'the default'}: {getattr(exc, 'message', exc)}",
                        hint="a tmpfs cannot shrink below what it holds: remove files from it first, "
                             "or choose a larger size") from None
                # a rollback's: the environment filled the larger size meanwhile; it keeps it
                ctx.notes.append(f"{params['target']} keeps its larger size: it holds more than the "
                                 f"size it had ({getattr(exc, 'message', exc)})")
            mode = params.get("mode")
            m.fchmod_path_fd(fd, DEFAULT_MODES["tmpfs"] if mode is None else int(mode))
        finally:
            _close(fd)
        return dict(record)


class _OverlayMount(_Mount):
    def preflight(self, params: Params) -> str | None:
        """A lower directory that is missing (or no directory), or an upper or work
        directory that cannot be made (a file in its place or on its way), checked
        before anything of an apply changes, as a bind's source is: found while
        mounting, the apply had already made the entries before it (all reverted
        again). Missing upper and work directories are made (their parents too)."""
        for lower in params.get("lower") or []:
            if not os.path.isdir(lower):
                what = "is not a directory" if os.path.exists(lower) else "does not exist"
                return (f"overlay lower {lower} {what}: every lower directory must exist on "
                        "the host: create it, or change the manifest")
        for key in ("upper", "work"):
            path = params.get(key)
            if not isinstance(path, str):
                continue
            place = path
            while not os.path.lexists(place) and place != os.path.dirname(place):
                place = os.path.dirname(place)
            if not os.path.isdir(place):
                what = "is not a directory" if place == path else \
                    f"cannot be made: {place} on its way is not a directory"
                return f"overlay {key} {path} {what}: move that away, or change the manifest"
        return None


class Overlay(_OverlayMount):
    kind = "overlay"


class TmpOverlay(_OverlayMount):
    kind = "tmp-overlay"


class RoOverlay(_OverlayMount):
    kind = "ro-overlay"

    def read_only(self, params: Params) -> bool:
        return True


class BindData(_Mount):
    kind = "bind-data"

    def read_only(self, params: Params) -> bool:
        return bool(params.get("readonly"))


class _PathOp(_FsOp):
    """dir, file, symlink: something created at ``target`` inside the root."""

    #: params the record keeps and the probe reads back: one changed outside vbdecl
    #: is drift on that attribute (repaired in place), not an object gone
    observed: tuple[str, ...] = ()

    #: whether the target itself is a directory other actions may have made on their way
    adopts_target = False

    def apply(self, ctx: Context, params: Params) -> Record:
        ino = _require_env(ctx)
        res = _in_env(ctx, _MountJob(self._entry(params)))
        record = self._record(params, ino, res["created"])
        made = (res.get("ids") or {}).get(params["target"])
        if self.kind == "file" and made is not None:
            record["file_id"] = made    # (st_dev, st_ino): a revert removes only this file
        return _adopt(ctx, record, with_target=self.adopts_target)

    def observe(self, ctx: Context, params: Params) -> dict[str, Any] | None:
        missing = _missing(ctx, params["target"])
        return None if missing is None else {"missing": missing}

    def recover(self, ctx: Context, params: Params, before: dict[str, Any]) -> Record | None:
        made = _made(ctx, before)
        found = self.probe(ctx, params, None)
        if found is not None:
            return _adopt(ctx, {**found, "created": made}, with_target=self.adopts_target)
        ino = _ns_inode(ctx)
        if not made or ino is None:
            return None
        # what it made on the way (or made, then killed before it was as declared)
        return _adopt(ctx, self._record(params, ino, made), with_target=self.adopts_target)

    def _record(self, params: Params, ino: int | None, created: list[str]) -> Record:
        return {"target": params["target"], "mnt_ns": ino, "created": created,
                **{k: params.get(k) for k in self.observed}}

    def revert(self, ctx: Context, record: Record) -> None:
        created = _unclaimed(ctx, record)
        if not _same_env(ctx, record) or not created:
            return
        own = record.get("target") if self.kind == "file" else None
        _undo(ctx, _UndoJob([], created, own_file=own, file_id=record.get("file_id")))

    def probe(self, ctx: Context, params: Params, record: Record | None) -> Record | None:
        from vbdecl.runtime.rootfs import _close

        found = _open_in_env(ctx, params["target"], record, follow=False)
        if found is None:
            return None
        fd, ino = found
        try:
            st = os.fstat(fd)
            if not self._is_kind(st):
                return None
            seen = self._seen(st, fd)
        finally:
            _close(fd)
        differs = {k: v for k, v in seen.items() if params.get(k) is not None and v != params[k]}
        if differs and (record is None or not all(k in record for k in differs)):
            return None     # not this entry's object, or a record from before it kept these
        return {**(record or self._record(params, ino, [])), **differs}

    def _is_kind(self, st: os.stat_result) -> bool:
        raise NotImplementedError

    def _seen(self, st: os.stat_result, fd: int) -> dict[str, Any]:
        """The ``observed`` params as they are now (those that can be read)."""
        return {}

    def _reapply(self, ctx: Context, params: Params, record: Record) -> Record:
        """Apply ``params`` over what is there, keeping what vbdecl created its own."""
        new = self.apply(ctx, params)
        new["created"] = _merge_created(record.get("created", []), new["created"])
        return _keeps_adopted(new, record)


def _merge_created(old: list[str], new: list[str]) -> list[str]:
    """Paths an action created, parents first (they are removed in reverse): what it
    created before and what an update made again (say, a parent deleted meanwhile)."""
    return sorted(dict.fromkeys([*old, *new]), key=lambda p: p.rstrip("/").count("/"))


# dir, file, symlink and chmod change in place: as a destroy and a create, an
# interruption between the two lost what vbdecl had created (the object then
# stayed behind once its entry went) or left it with neither mode.

class Dir(_PathOp):
    kind = "dir"
    observed = ("mode",)
    undo_by_update = True   # as Chmod: a revert cut short may have set the old mode back
    adopts_target = True

    def apply(self, ctx: Context, params: Params) -> Record:
        """Records ``old_mode`` when it chmods a directory that was there before
        vbdecl: a revert sets that back, as a chmod entry's does."""
        before = _mode_in_env(ctx, params["target"], None, dir_only=True)
        return self._with_old_mode(ctx, params, super().apply(ctx, params), before)

    def _with_old_mode(self, ctx: Context, params: Params, record: Record, before: int | None) -> Record:
        mode = params.get("mode")
        if (params["target"] not in record["created"] and before is not None and mode is not None
                and before != mode and not params.get("keep_mode")):
            record["old_mode"] = before
            return _first_old_mode(ctx, record)
        return record

    def observe(self, ctx: Context, params: Params) -> dict[str, Any] | None:
        seen = super().observe(ctx, params)
        if seen is not None:
            seen["mode"] = _mode_in_env(ctx, params["target"], None, dir_only=True)
        return seen

    def recover(self, ctx: Context, params: Params, before: dict[str, Any]) -> Record | None:
        record = super().recover(ctx, params, before)
        return None if record is None else self._with_old_mode(ctx, params, record, before.get("mode"))

    def undo_from(self, record: Record, before: dict[str, Any]) -> Record:
        """An interrupted update gave a directory vbdecl did not make its first mode:
        the mode it had is the one to set back."""
        if ("old_mode" in record or record.get("target") in record.get("created", [])
                or before.get("mode") is None):
            return record
        return {**record, "old_mode": before["mode"]}

    def update(self, ctx: Context, params: Params, record: Record) -> Record:
        """A new mode, set in place. Without one, the directory gets the mode it had
        before vbdecl back, or the default mode when vbdecl made it."""
        from vbdecl.runtime.rootfs import DEFAULT_MODES

        target, mode, old = params["target"], params.get("mode"), record.get("old_mode")
        ours = target in record.get("created", [])
        if mode is None:
            mode = DEFAULT_MODES["dir"] if ours else old
        new = self._reapply(ctx, {**params, "mode": mode}, record)
        first = old if old is not None else new.get("old_mode")
        new.pop("old_mode", None)
        new["mode"] = params.get("mode")
        if params.get("mode") is not None and first is not None and not ours:
            new["old_mode"] = first
        return new

    def revert(self, ctx: Context, record: Record) -> None:
        """The mode from before goes back (the default one on a directory vbdecl made
        that another entry keeps), unless another live entry sets the mode."""
        from vbdecl.runtime.rootfs import DEFAULT_MODES

        target, old = record["target"], record.get("old_mode")
        if target in record.get("created", []):     # made by vbdecl: it goes, or another keeps it
            old = None if target in _unclaimed(ctx, record) else DEFAULT_MODES["dir"]
        if _same_env(ctx, record) and record.get("mode") is not None:
            _set_back_mode(ctx, record, old)
        super().revert(ctx, record)

    def probe(self, ctx: Context, params: Params, record: Record | None) -> Record | None:
        if _mode_set_later(ctx, "dir", params["target"]):
            params = {**params, "mode": None}    # a chmod after it has the last word on the mode
        return super().probe(ctx, params, record)

    def _is_kind(self, st: os.stat_result) -> bool:
        return stat.S_ISDIR(st.st_mode)

    def _seen(self, st: os.stat_result, fd: int) -> dict[str, Any]:
        from vbdecl.sys import mount as m

        # something mounted over the directory shows its own mode, not the directory's
        return {} if m.is_mount_root(fd) else {"mode": stat.S_IMODE(st.st_mode)}


class File(_PathOp):
    kind = "file"

    def preflight(self, params: Params) -> str | None:
        """A host source that is missing (or no file), checked before anything of an
        apply changes, as a bind's is: found while copying, the apply had already
        made the entries before it (all reverted again)."""
        source = params.get("source")
        if source is None or params.get("fd") is not None or params.get("content") is not None:
            return None
        if os.path.isdir(source):
            return (f"file source {source} is a directory: a file entry copies one file "
                    "(bind a directory instead)")
        if not os.path.exists(source):      # (a dangling link: missing)
            return (f"file source {source} does not exist: create it, or change the manifest "
                    "(content: gives the file's text inline)")
        try:        # (an unprivileged review: found only by run, 125; tried, not access(2),
            # which goes by the real uid and ignores the capabilities a service may hold)
            os.close(os.open(source, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC))
        except PermissionError:
            return (f"file source {source} cannot be read by this user: make it readable, or "
                    "change the manifest")
        except OSError:
            pass            # (said where it is read, in the words of what went wrong)
        pinned = params.get("source_sha256")
        if pinned is not None:
            from vbdecl.hashing import file_sha256

            if file_sha256(source) != pinned:
                return (f"file source {source} changed since this plan was made (a saved plan, or "
                        "a revision to roll back to, copies only the content it was made with): "
                        "plan the manifest again, or put the file back as it was")
        return None

    def apply(self, ctx: Context, params: Params) -> Record:
        """Also the device the file was written on: probe judges the content and mode of
        that file only, not of whatever a later entry mounts over it or over a directory
        above it (a bind of a host file, bind-data, the network's /etc/hosts)."""
        record = super().apply(ctx, params)
        seen = _file_now(ctx, params["target"], record, digest=False)
        if seen is not None and seen.get("dev") is not None:
            record["dev"], record["size"] = seen["dev"], seen["size"]
        return record

    def _record(self, params: Params, ino: int | None, created: list[str]) -> Record:
        """Also what was written: the file's mode and its content's digest, read back by
        probe (a day-2 review: a file edited or chmod-ed inside the environment was "ok")."""
        from vbdecl.runtime.rootfs import DEFAULT_MODES

        record = super()._record(params, ino, created)
        record["mode"] = DEFAULT_MODES["file"] if params.get("mode") is None else params["mode"]
        digest = _declared_sha256(params)
        if digest is not None:
            record["content_sha256"] = digest
        return record

    def probe(self, ctx: Context, params: Params, record: Record | None) -> Record | None:
        """The file, with its mode and content digest as they are now where they differ
        from what vbdecl wrote (drift that apply writes over). Records from before these
        were kept have nothing to compare with."""
        found = super().probe(ctx, params, record)
        if found is None or record is None:
            return found
        written = {k: record[k] for k in ("mode", "content_sha256") if record.get(k) is not None}
        if _other_mode_setter(ctx, record) is not None:
            written.pop("mode", None)       # (a chmod entry on the same file sets it)
        # (the device it was written on; a record from before it kept one: the device of
        # the file vbdecl made, if it made one)
        dev = record.get("dev")
        if dev is None and isinstance(record.get("file_id"), list | tuple) and record["file_id"]:
            dev = record["file_id"][0]
        if not written or dev is None:
            return found
        seen = _file_now(ctx, params["target"], record)
        if seen is None:
            return None     # (gone in between)
        if seen.get("dev") != dev:
            return found    # (another file shows there now: a mount over it, not an edit)
        return {**found, **{k: v for k, v in seen.items() if k in written and v != written[k]}}

    def update(self, ctx: Context, params: Params, record: Record) -> Record:
        """New content or mode, written over the file in place. A rollback's (restoring)
        copies the source as it is: the content it had is not kept anywhere, and the
        pin (engine.sources.pin_file_sources) would refuse the source edited since."""
        if ctx.restoring:
            params = {k: v for k, v in params.items() if k != "source_sha256"}
        return self._reapply(ctx, params, record)

    def _is_kind(self, st: os.stat_result) -> bool:
        return stat.S_ISREG(st.st_mode)


def _declared_sha256(params: Params) -> str | None:
    """The digest of the content a file entry writes, where the params say it: its
    ``content``, or its source's pinned digest (engine.sources.pin_file_sources)."""
    from vbdecl.hashing import sha256

    content = params.get("content")
    if params.get("fd") is not None:
        return None
    if isinstance(content, str):
        return str(sha256(content.encode()).hexdigest())
    pinned = params.get("source_sha256")
    return pinned if isinstance(pinned, str) else None


def _file_now(ctx: Context, target: str, record: Record, *, digest: bool = True) -> dict[str, Any] | None:
    """The device, mode, size and content digest of the regular file at ``target`` in
    the environment; its device None when something is mounted on the file itself.
    A size other than the one written is a changed content without reading it: the
    process may make the file as large as it likes (a review had a probe hash a
    sparse 4 PiB file, with apply's lock held), so only a file of the size written is
    hashed, and only that much of it."""
    from vbdecl.hashing import file_sha256
    from vbdecl.runtime.rootfs import _close
    from vbdecl.sys import mount as m

    found = _open_in_env(ctx, target, record, follow=False)
    if found is None:
        return None
    path_fd = found[0]
    try:
        st = os.fstat(path_fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        seen: dict[str, Any] = {"dev": None if m.is_mount_root(path_fd) else st.st_dev,
                                "mode": stat.S_IMODE(st.st_mode), "size": st.st_size}
        if not digest:
            return seen
        written = record.get("size")
        if isinstance(written, int) and st.st_size != written:
            seen["content_sha256"] = f"size:{st.st_size}"
            return seen
        # (read through the O_PATH fd: the name may be another file's by now)
        digest_now = file_sha256(f"/proc/self/fd/{path_fd}", limit=written if isinstance(written, int) else None)
        if digest_now is not None:      # (else there, but unreadable to us: not "gone")
            seen["content_sha256"] = digest_now
        return seen
    except OSError:
        return None
    finally:
        _close(path_fd)


class Symlink(_PathOp):
    kind = "symlink"
    observed = ("points_to",)

    def update(self, ctx: Context, params: Params, record: Record) -> Record:
        """A link vbdecl made now points elsewhere: a new link renamed over it, so
        the path always holds one of the two. Someone else's link is left to apply
        (which refuses to change it)."""
        if params["target"] not in record.get("created", []):
            return self._reapply(ctx, params, record)
        ino = _require_env(ctx)
        made = _in_env(ctx, _RelinkJob(params["target"], params["points_to"]))
        return {**record, "mnt_ns": ino, "points_to": params["points_to"],
                "created": _merge_created(record.get("created", []), made)}

    def _is_kind(self, st: os.stat_result) -> bool:
        return stat.S_ISLNK(st.st_mode)

    def _seen(self, st: os.stat_result, fd: int) -> dict[str, Any]:
        try:
            return {"points_to": os.readlink("", dir_fd=fd)}
        except OSError:
            return {}


class _RelinkJob(_Job):
    def __init__(self, target: str, points_to: str) -> None:
        self.target, self.points_to = target, points_to

    def root(self, b: Any) -> Any:
        from vbdecl.runtime.rootfs import _close, ensure_parent

        parent, name = ensure_parent(b.root_fd, self.target, b.created, 0o755)
        try:
            try:
                if not stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
                    raise OSError(errno.EEXIST, f"{self.target} already exists and is not a symlink")
            except FileNotFoundError:
                pass
            tmp = ".vbdecl-relink"      # short: any link name fits; one left by a kill goes
            try:
                if stat.S_ISLNK(os.stat(tmp, dir_fd=parent, follow_symlinks=False).st_mode):
                    os.unlink(tmp, dir_fd=parent)
            except FileNotFoundError:
                pass
            os.symlink(self.points_to, tmp, dir_fd=parent)
            try:
                os.rename(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
            except BaseException:
                os.unlink(tmp, dir_fd=parent)
                raise
        finally:
            _close(parent)
        return b.created


def _other_mode_setter(ctx: Context, record: Record) -> Record | None:
    """Another live dir or chmod entry of the environment that sets the mode of
    ``record``'s target (a review: a dir and a chmod on one directory each set back
    a mode that was the other's)."""
    setters = _records_index(ctx, "fs_mode_setters", None, lambda rid, r: (
        [r["target"]] if rid.startswith(("dir[", "chmod[")) and isinstance(r.get("target"), str)
        and r.get("mode") is not None else []))
    for other in setters.get(str(record.get("target")), ()):
        if other is not record and other != record and other.get("mnt_ns") == record.get("mnt_ns"):
            return other
    return None


def _first_old_mode(ctx: Context, record: Record) -> Record:
    """``record`` with the mode from before the first of the entries that set its
    target's mode, when another such entry is live: the mode it saw is that entry's."""
    other = _other_mode_setter(ctx, record)
    if other is not None and other.get("old_mode") is not None:
        return {**record, "old_mode": other["old_mode"]}
    return record


def _mode_set_later(ctx: Context, kind: str, target: str) -> bool:
    """Whether an entry after the ``kind`` entry at ``target`` in the manifest sets that
    path's mode again (entries are made in their order: the last one's mode stays)."""
    entries = ctx.spec.get("filesystem") or []
    cached = ctx.extra.get("fs_mode_entries")
    if cached is None or cached[0] is not entries:
        first: dict[tuple[str, str], int] = {}     # (kind, target) -> where its first entry is
        last_setter: dict[str, int] = {}           # target -> where the last entry setting its mode is
        for i, e in enumerate(entries):
            first.setdefault((e.get("type"), e.get("target")), i)
            if e.get("mode") is not None and (e.get("type") == "chmod" or (
                    e.get("type") == "dir" and not e.get("keep_mode"))):
                last_setter[e.get("target")] = i
        cached = (entries, first, last_setter)     # (once per spec: per entry, that was quadratic)
        ctx.extra["fs_mode_entries"] = cached
    mine = cached[1].get((kind, target))
    return mine is not None and cached[2].get(target, -1) > mine


def _set_back_mode(ctx: Context, record: Record, old: int | None) -> None:
    """What a dir or chmod entry that goes leaves as its target's mode: another live
    entry's mode when one sets it too, else ``old`` (None: nothing to set)."""
    other = _other_mode_setter(ctx, record)
    mode = other["mode"] if other is not None else old
    if mode is not None and mode != record.get("mode"):
        _in_env(ctx, _ChmodJob(record["target"], int(mode), missing_ok=True))


class _ChmodJob(_Job):
    """chmod ``target``; returns the mode before. A revert's (``missing_ok``) finds
    nothing to restore when the target is gone, or is a symlink now. Never through a
    link at the target: the environment's process may have put it there, leading to
    a file it may not chmod itself (rootfs.Builder._final)."""

    def __init__(self, target: str, mode: int, *, missing_ok: bool = False) -> None:
        self.target, self.mode, self.missing_ok = target, mode, missing_ok

    def root(self, b: Any) -> Any:
        from vbdecl.runtime.rootfs import _close, _refuse_link, resolve
        from vbdecl.sys import mount as m

        fd = resolve(b.root_fd, self.target, os.O_PATH, follow=False, missing_ok=self.missing_ok)
        if fd < 0:
            return None
        if self.missing_ok and stat.S_ISLNK(os.fstat(fd).st_mode):
            _close(fd)
            return None
        _refuse_link(fd, self.target)
        try:
            old = stat.S_IMODE(os.fstat(fd).st_mode)
            m.fchmod_path_fd(fd, self.mode)
        finally:
            _close(fd)
        return old


class Chmod(_FsOp):
    kind = "chmod"
    # a revert cut short (the mode from before set back, "done" not written) is undone
    # by setting the mode again, not by keeping the record as it was
    undo_by_update = True

    # A chmod of a directory other entries made takes it on (``adopted``): it stays
    # while the chmod does, and goes with the last of them.

    def apply(self, ctx: Context, params: Params) -> Record:
        ino = _require_env(ctx)
        old = _in_env(ctx, _ChmodJob(params["target"], int(params["mode"])))
        record = {"target": params["target"], "mnt_ns": ino, "old_mode": old, "mode": params["mode"]}
        return _adopt(ctx, _first_old_mode(ctx, record), with_target=True)

    def update(self, ctx: Context, params: Params, record: Record) -> Record:
        """A new mode, set in place; a revert still restores the mode from before."""
        new = self.apply(ctx, params)
        new["old_mode"] = record["old_mode"] if "old_mode" in record else new["old_mode"]
        return _keeps_adopted(new, record)

    def revert(self, ctx: Context, record: Record) -> None:
        if not _same_env(ctx, record):
            return
        _set_back_mode(ctx, record, record.get("old_mode"))
        gone = _unclaimed(ctx, record)
        if gone:
            _undo(ctx, _UndoJob([], gone))

    def observe(self, ctx: Context, params: Params) -> dict[str, Any] | None:
        return {"mode": _mode_in_env(ctx, params["target"], None)}

    def recover(self, ctx: Context, params: Params, before: dict[str, Any]) -> Record | None:
        found = self.probe(ctx, params, None)
        return None if found is None else _adopt(ctx, {**found, "old_mode": before.get("mode")},
                                                 with_target=True)

    def probe(self, ctx: Context, params: Params, record: Record | None) -> Record | None:
        mode = _mode_in_env(ctx, params["target"], record)
        if mode is None:
            return None
        if mode != params["mode"] and record is not None and _mode_set_later(ctx, "chmod", params["target"]):
            return record       # a dir entry after it set the mode, as the manifest says
        if mode != params["mode"]:
            # changed outside vbdecl (drift, set back in place), or not this entry's
            return {**record, "mode": mode} if record is not None and "mode" in record else None
        return record or {"target": params["target"], "mnt_ns": _ns_inode(ctx), "old_mode": None,
                          "mode": mode}


def _mode_in_env(ctx: Context, target: str, record: Record | None, *,
                 dir_only: bool = False) -> int | None:
    """The mode of ``target`` in the environment (resolved inside its root, as a chmod
    does), or None: gone, not a directory when ``dir_only``, or another environment
    than ``record``'s."""
    from vbdecl.runtime.rootfs import _close

    found = _open_in_env(ctx, target, record)
    if found is None:
        return None
    try:
        st = os.fstat(found[0])
    finally:
        _close(found[0])
    if dir_only and not stat.S_ISDIR(st.st_mode):
        return None
    return stat.S_IMODE(st.st_mode)


class _RemountJob(_Job):
    def __init__(self, target: str, undo: dict[str, Any] | None = None) -> None:
        self.target, self.undo = target, undo

    def root(self, b: Any) -> Any:
        from vbdecl.runtime.rootfs import _close, resolve
        from vbdecl.sys import mount as m

        if self.undo is not None:
            if self.undo.get("self_bound"):
                m.umount2(self.target, m.MNT_DETACH | m.UMOUNT_NOFOLLOW)
                return None
            if self.undo.get("was_ro"):     # read-only already (a ro-bind): it stays so
                return None
            fd = resolve(b.root_fd, self.target, os.O_PATH)
            try:
                m.set_attrs(fd, 0, m.MOUNT_ATTR_RDONLY, recursive=False)
            finally:
                _close(fd)
            return None
        fd = resolve(b.root_fd, self.target, os.O_PATH)
        try:
            self_bound = not m.is_mount_root(fd)
            was_ro = not self_bound and bool(os.fstatvfs(fd).f_flag & os.ST_RDONLY)
        finally:
            _close(fd)
        b.place({"type": "remount-ro", "target": self.target}, b.make({"type": "remount-ro"}))
        return {"self_bound": self_bound, "was_ro": was_ro}


class RemountRo(_FsOp):
    kind = "remount-ro"

    def apply(self, ctx: Context, params: Params) -> Record:
        ino = _require_env(ctx)
        res = _in_env(ctx, _RemountJob(params["target"]))
        return {"target": params["target"], "mnt_ns": ino, **res}

    def revert(self, ctx: Context, record: Record) -> None:
        if _same_env(ctx, record):
            if "was_ro" not in record:      # (a record from before was_ro: the manifest tells)
                record = {**record, "was_ro": _declared_read_only(ctx, record["target"])}
            _in_env(ctx, _RemountJob(record["target"], undo=record))

    def probe(self, ctx: Context, params: Params, record: Record | None) -> Record | None:
        mi = _mounted(ctx, params["target"])
        if mi is None or "ro" not in mi["opts"]:
            return None
        return record or {"target": params["target"], "mnt_ns": _ns_inode(ctx), "self_bound": False,
                          "was_ro": _declared_read_only(ctx, params["target"])}


def _declared_read_only(ctx: Context, target: str) -> bool:
    """Whether the manifest (as applied, or as wanted now) mounts ``target`` read-only
    itself (its op's read_only): what a remount-ro there found, when its record cannot say."""
    specs = (ctx.spec, ctx.extra.get("recorded_spec") or {})
    for e in (e for spec in specs for e in spec.get("filesystem") or []):
        kind = f"fs.{e.get('type')}"
        if e.get("target") == target and kind in KINDS:
            op = op_for(kind)
            if isinstance(op, _Mount) and op.read_only(e):
                return True
    return False


class _NetFilesJob(_Job):
    def __init__(self, params: Params, hosts_base: str | None) -> None:
        self.params, self.hosts_base = params, hosts_base
        self.made: Any = None

    def host(self, b: Any) -> None:
        from vbdecl.runtime.rootfs import Made

        self.made = Made()
        b.make_net_files(self.params, self.made, self.hosts_base)

    def root(self, b: Any) -> Any:
        targets = [sub for sub, _, _ in self.made.mounts]
        try:
            b._attach_made("", self.made)
        finally:
            self.made.close()
        return {"mounts": targets, "created": b.created}


class NetFiles(_FsOp):
    """/etc/resolv.conf and /etc/hosts (read-only binds of staged files; never a host file)."""

    kind = "net-files"

    def describe(self, params: Params) -> str:
        parts = []
        if params.get("dns"):
            parts.append("resolv.conf: " + ", ".join(params["dns"]))
        if params.get("hosts"):
            parts.append("hosts: " + ", ".join(params["hosts"]))
        return "network files" + (f" ({'; '.join(parts)})" if parts else "")

    def _params(self, ctx: Context, params: Params) -> Params:
        p = dict(params)
        p.setdefault("hostname", (ctx.spec or {}).get("hostname"))
        return p

    def apply(self, ctx: Context, params: Params) -> Record:
        ino = _require_env(ctx)
        res = _in_env(ctx, _NetFilesJob(self._params(ctx, params), self._hosts_base(ctx)))
        return {"mnt_ns": ino, **res}

    def _hosts_base(self, ctx: Context) -> str | None:
        from vbdecl.runtime.rootfs import _close, read_root_hosts

        root = _env_root_fd(ctx)
        if root is None:
            return None
        try:
            if _mounted(ctx, "/etc/hosts") is not None:
                return None   # ours (an earlier apply): start from the default again
            return read_root_hosts(root)
        finally:
            _close(root)

    def revert(self, ctx: Context, record: Record) -> None:
        if _same_env(ctx, record):
            _undo(ctx, _UndoJob(list(reversed(record.get("mounts") or [])),
                                  list(record.get("created") or [])))

    def update(self, ctx: Context, params: Params, record: Record) -> Record:
        self.revert(ctx, record)
        return self.apply(ctx, params)

    def probe(self, ctx: Context, params: Params, record: Record | None) -> Record | None:
        ino = _ns_inode(ctx)
        if ino is None or (record is not None and record.get("mnt_ns") != ino):
            return None
        mounts = (record or {}).get("mounts")
        if mounts is None:
            mounts = [t for t in ("/etc/resolv.conf", "/etc/hosts") if _mounted(ctx, t)]
            return {"mnt_ns": ino, "mounts": mounts, "created": []} if mounts else None
        return record if all(_mounted(ctx, t) for t in mounts) else None


class _RootfsJob(_Job):
    def __init__(self, rootfs: str | None) -> None:
        self.rootfs = rootfs
        self.mnt = -1

    def host(self, b: Any) -> None:
        from vbdecl.runtime.rootfs import _close, clone_rootfs
        from vbdecl.sys import mount as m

        if self.rootfs is None:
            self.mnt = m.new_mount("tmpfs", b.tmpfs_options("0755"),
                                   m.MOUNT_ATTR_NOSUID | m.MOUNT_ATTR_NODEV, source="tmpfs")
        else:
            src = os.open(self.rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                self.mnt = clone_rootfs(src)
            finally:
                _close(src)

    def root(self, b: Any) -> Any:
        from vbdecl.runtime.rootfs import _close, _pick_base
        from vbdecl.sys import mount as m

        try:
            m.mount(None, "/", None, m.MS_REC | m.MS_SLAVE)
        except OSError:
            pass
        try:
            base = _pick_base()
        except RuntimeSetupError as exc:
            if os.listdir("/"):
                raise
            # (an empty root: the environment's own, left by an interrupted apply whose
            # revert failed twice, not the host's copy a new root is built from; a limits
            # review was told to make /tmp in the host's root)
            raise RuntimeSetupError("the environment's root is an empty one left by an interrupted apply: "
                                    "a new root cannot be built in it",
                                    hint="vbdecl destroy the environment, then apply it again") from exc
        # The staging tmpfs is in the environment's namespace (never the host's)
        # and goes away with the old root.
        m.mount("tmpfs", base, "tmpfs", m.MS_NOSUID | m.MS_NODEV, "mode=0700")
        os.mkdir(f"{base}/newroot", 0o755)
        tfd = os.open(f"{base}/newroot", os.O_PATH | os.O_CLOEXEC)
        try:
            m.attach(self.mnt, tfd)
        finally:
            _close(tfd)
            _close(self.mnt)
        b.close()
        os.chdir(f"{base}/newroot")
        m.pivot_root(".", ".")        # every process whose root was the old one follows
        m.umount2(".", m.MNT_DETACH)
        os.chdir("/")
        return None


class Rootfs(_FsOp):
    kind = "rootfs"
    # Its revert leaves the root to the environment's mount namespace: undoing a
    # destroy keeps the root still there rather than building one over it.
    revert_leaves = True

    def describe(self, params: Params) -> str:
        root = params.get("rootfs")
        return f"root: {root}" if root else "root: a fresh tmpfs"

    def preflight(self, params: Params) -> str | None:
        """A host directory that is not there (found while building, the apply had
        already made the environment's namespaces)."""
        root = params.get("rootfs")
        if root is None or os.path.isdir(root):
            return None
        what = "is not a directory" if os.path.exists(root) else "does not exist"
        return f"rootfs {root} {what}: create it (a directory holding the root), or change the manifest"

    def apply(self, ctx: Context, params: Params) -> Record:
        ino = _require_env(ctx)
        _in_env(ctx, _RootfsJob(params.get("rootfs")))
        return {"mnt_ns": ino, "rootfs": params.get("rootfs")}

    def revert(self, ctx: Context, record: Record) -> None:
        """Nothing to undo: the root lives and dies with the environment's mount namespace."""

    def probe(self, ctx: Context, params: Params, record: Record | None) -> Record | None:
        ino = _ns_inode(ctx)
        if ino is None or record is None or record.get("mnt_ns") != ino:
            return None
        return record if _mounted(ctx, "/") is not None else None
