"""cgroupfs: layout detection and every read and write of cgroup files.

Three layouts exist in the wild and one manifest must work on all of them:

- ``v2``: one unified cgroup2 hierarchy (usually at /sys/fs/cgroup) holding
  every controller;
- ``v1``: one cgroup v1 hierarchy per controller (or per group of
  controllers, e.g. ``cpu,cpuacct``);
- ``hybrid``: v1 controller hierarchies plus a cgroup2 mount (usually
  /sys/fs/cgroup/unified) that holds no or only some controllers.

Each *logical* controller (``memory``, ``cpu``, ``cpuacct``, ``pids``, ``io``)
is placed in the cgroup2 hierarchy when that hierarchy offers it, else in the
v1 hierarchy that carries it. In the hybrid layout the environment also gets
a directory in the cgroup2 hierarchy even without controllers there: it
tracks every process of the environment, gives ``cgroup.kill`` (teardown
kills atomically, forks in flight included) and ``cpu.stat`` (cpu time).

Environment cgroups are ``<hierarchy>/vbdecl/<instance>``. The hierarchy
roots come from /proc/self/mountinfo, or from a :class:`Layout` built by the
caller (tests point it at a temporary tree that mimics cgroupfs files).

Every write is one ``write(2)`` of the whole value, checked for a short
write and read back; a refusal is a :class:`~vbdecl.errors.SysError` naming
the file and the value, with a hint.

This module imports only the standard library (the run path uses it).
"""

from __future__ import annotations

import contextlib
import errno as _errno
import os
import signal
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

from vbdecl.errors import SysError

PARENT = "vbdecl"

# Logical controller -> name of the v1 subsystem.
V1_SUBSYS = {"memory": "memory", "cpu": "cpu", "cpuacct": "cpuacct", "pids": "pids", "io": "blkio"}
# Manifest limit -> logical controller.
LIMIT_CONTROLLER = {
    "memory": "memory", "memory_swap": "memory", "cpu": "cpu", "cpu_weight": "cpu",
    "pids": "pids", "io_weight": "io",
}
LIMITS = tuple(LIMIT_CONTROLLER)

CPU_PERIOD_US = 100_000
CPU_QUOTA_MIN_US = 1_000
# v1 memory files show "unlimited" as PAGE_COUNTER_MAX * PAGE_SIZE (about 2**63).
_V1_UNLIMITED = 1 << 62
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

_KILL_WAIT_S = 5.0


# --- layout -------------------------------------------------------------------


@dataclass
class Layout:
    """Where the cgroup hierarchies are and which controllers each offers."""

    unified: str | None = None                          # cgroup2 mount point
    v1: dict[str, str] = field(default_factory=dict)    # v1 subsystem -> mount point
    v2_controllers: frozenset[str] = frozenset()        # cgroup.controllers of the cgroup2 root

    @property
    def mode(self) -> str:
        if self.v1 and self.unified:
            return "hybrid"
        if self.v1:
            return "v1"
        if self.unified:
            return "v2"
        return "none"

    def place(self, ctrl: str) -> tuple[int, str] | None:
        """(version, hierarchy mount point) of a logical controller, or None."""
        if self.unified is not None and ctrl in self.v2_controllers:
            return 2, self.unified
        if ctrl == "cpuacct" and self.unified is not None and "cpu" in self.v2_controllers:
            return 2, self.unified
        sub = V1_SUBSYS.get(ctrl)
        if sub is not None and sub in self.v1:
            return 1, self.v1[sub]
        return None

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "unified": self.unified, "v1": dict(self.v1),
                "v2_controllers": sorted(self.v2_controllers)}


def _unescape(field_: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    if "\\" not in field_:
        return field_
    out, i = [], 0
    while i < len(field_):
        if field_[i] == "\\" and i + 4 <= len(field_) and field_[i + 1:i + 4].isdigit():
            out.append(chr(int(field_[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field_[i])
            i += 1
    return "".join(out)


_V1_MOUNT_OPTIONS = frozenset({
    "rw", "ro", "xattr", "noprefix", "clone_children", "cpuset_v2_mode", "none",
})


def parse_mountinfo(text: str) -> tuple[str | None, dict[str, str]]:
    """(cgroup2 mount point, {v1 subsystem: mount point}) from mountinfo text.

    Only mounts of a hierarchy's root (mountinfo root field ``/``) count;
    the first mount of each wins.
    """
    unified: str | None = None
    v1: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split()
        try:
            sep = parts.index("-")
        except ValueError:
            continue
        if len(parts) < sep + 4:
            continue
        fstype, super_opts = parts[sep + 1], parts[sep + 3]
        root, mnt = _unescape(parts[3]), _unescape(parts[4])
        if root != "/":
            continue
        if fstype == "cgroup2":
            if unified is None:
                unified = mnt
        elif fstype == "cgroup":
            for opt in super_opts.split(","):
                if opt in _V1_MOUNT_OPTIONS or "=" in opt:
                    continue
                v1.setdefault(opt, mnt)
    return unified, v1


def read_controllers(unified: str) -> frozenset[str]:
    try:
        return frozenset(read(os.path.join(unified, "cgroup.controllers")).split())
    except SysError:
        return frozenset()


def layout_from_mountinfo(text: str) -> Layout:
    unified, v1 = parse_mountinfo(text)
    ctrls = read_controllers(unified) if unified else frozenset()
    return Layout(unified=unified, v1=v1, v2_controllers=ctrls)


_override: Layout | None = None
_cached: Layout | None = None


def set_layout(layout: Layout | None) -> None:
    """Use ``layout`` instead of the detected one (tests); None restores detection."""
    global _override, _cached
    _override = layout
    _cached = None


def current_layout() -> Layout:
    """The layout of this machine (cached per process), or the one set by set_layout()."""
    global _cached
    if _override is not None:
        return _override
    if _cached is None:
        forced = os.environ.get("VBDECL_CGROUP_LAYOUT")
        if forced:
            _cached = layout_from_json(forced)
        else:
            with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
                _cached = layout_from_mountinfo(f.read())
    return _cached


def layout_from_json(text: str) -> Layout:
    """A layout from ``{"unified": path|null, "v1": {subsys: path}, "v2_controllers": [...]}``
    (``VBDECL_CGROUP_LAYOUT``, a test hook like VBDECL_FAULT: the hierarchy roots are
    injectable, e.g. to hide a controller; inert unless set). ``v2_controllers``
    defaults to what the cgroup2 root offers."""
    import json

    from vbdecl.errors import UsageError

    try:
        data = json.loads(text)
        unified = data.get("unified")
        ctrls = data.get("v2_controllers")
        return Layout(unified=unified, v1=dict(data.get("v1") or {}),
                      v2_controllers=frozenset(ctrls) if ctrls is not None
                      else read_controllers(unified) if unified else frozenset())
    except (ValueError, AttributeError, TypeError) as exc:
        raise UsageError(f"VBDECL_CGROUP_LAYOUT is not a layout: {exc}",
                         hint='e.g. {"unified": null, "v1": {"memory": "/sys/fs/cgroup/memory"}}'
                         ) from None


# --- file access ----------------------------------------------------------------

_HINTS = {
    _errno.EINVAL: "the kernel refused this value: check its range and unit",
    _errno.EBUSY: "the cgroup is in use in a way that forbids this value (for a memory limit: "
                  "the environment already uses more; for cpu: the parent's quota is smaller)",
    _errno.ENOENT: "the file does not exist: the controller is not available or not enabled "
                   "for this cgroup (see `vbdecl doctor`)",
    _errno.EACCES: "permission denied: vbdecl's cgroups need root; run as root",
    _errno.EPERM: "operation not permitted: vbdecl's cgroups need root; run as root",
    _errno.EOPNOTSUPP: "the hierarchy does not support this operation here "
                       "(cgroup v2: a cgroup with processes cannot enable controllers for children)",
    _errno.ENOSPC: "the cgroup has no controllers enabled for this (cgroup v2)",
}


# Root refused too (not "run as root", a review): a cgroup hierarchy mounted read-only
# (a container's), or a security module
_ROOT_DENIED = ("refused to root: the cgroup hierarchy is read-only here (in a container?), or a "
                "security module refused; see `vbdecl doctor`")


def _fail(what: str, exc: OSError, hint: str | None = None) -> SysError:
    code = exc.errno or 0
    if hint is None and code in (_errno.EACCES, _errno.EPERM) and os.geteuid() == 0:
        hint = _ROOT_DENIED
    return SysError(f"{what}: {os.strerror(code)} ({_errno.errorcode.get(code, code)})",
                    errno=code, hint=hint or _HINTS.get(code))


def read(path: str) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise _fail(f"cannot read {path}", exc) from None
    try:
        chunks = []
        while True:
            b = os.read(fd, 65536)
            if not b:
                break
            chunks.append(b)
    except OSError as exc:
        raise _fail(f"cannot read {path}", exc) from None
    finally:
        os.close(fd)
    return b"".join(chunks).decode().strip()


def read_kv(path: str) -> dict[str, int]:
    """A flat-keyed file (``key value`` per line) as a dict of ints."""
    out: dict[str, int] = {}
    for line in read(path).splitlines():
        k, _, v = line.partition(" ")
        try:
            out[k] = int(v)
        except ValueError:
            continue
    return out


def write(path: str, value: str, *, hint: str | None = None) -> None:
    """Write ``value`` with one write(2) of the whole string; a short write is an error."""
    data = value.encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    except OSError as exc:
        raise _fail(f"cannot open {path} to write {value!r}", exc, hint) from None
    try:
        n = os.write(fd, data)
    except OSError as exc:
        raise _fail(f"writing {value!r} to {path}", exc, hint) from None
    finally:
        os.close(fd)
    if n != len(data):
        raise SysError(f"writing {value!r} to {path}: short write ({n} of {len(data)} bytes)",
                       errno=_errno.EIO, hint="the kernel accepted only part of the value; retry")


def same_value(file: str, written: str, shown: str) -> bool:
    """Whether ``shown`` (read back) is what the kernel keeps for ``written``."""
    w, s = written.strip(), shown.strip()
    if w == s:
        return True
    base = os.path.basename(file)
    if base in ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes", "memory.max",
                "memory.swap.max", "memory.high", "memory.low", "memory.min"):
        wi, si = _memval(w), _memval(s)
        if wi is None or si is None:
            return wi is None and si is None
        return si == wi // PAGE_SIZE * PAGE_SIZE
    if base == "cpu.max":
        wq, _, wp = w.partition(" ")
        sq, _, sp = s.partition(" ")
        return wq == sq and (not wp or wp == sp)
    if base == "cpu.cfs_quota_us":
        return int(w) < 0 and int(s) < 0
    if base == "io.weight":
        return s.splitlines()[0].split() == ["default", w.split()[-1]]
    return False


def _memval(text: str) -> int | None:
    """Bytes, or None for unlimited ("max", -1, or the v1 huge number)."""
    if text in ("max", "-1"):
        return None
    n = int(text)
    return None if n >= _V1_UNLIMITED else n


def write_checked(path: str, value: str, *, hint: str | None = None) -> str:
    """Write then read back; returns what the kernel shows. Mismatch is an error."""
    write(path, value, hint=hint)
    shown = read(path)
    if not same_value(path, value, shown):
        raise SysError(f"wrote {value!r} to {path} but the kernel shows {shown!r}",
                       errno=_errno.EIO,
                       hint="another process changes this cgroup, or the kernel clamps the value")
    return shown


# --- limits: manifest values -> files -------------------------------------------


def cpu_quota(cores: float, period: int = CPU_PERIOD_US) -> int:
    return max(CPU_QUOTA_MIN_US, round(cores * period))


def weight_to_shares(weight: int) -> int:
    """cpu.weight (1..10000, default 100) -> v1 cpu.shares (default 1024), as systemd maps it."""
    return max(2, min(262144, weight * 1024 // 100))


def shares_to_weight(shares: int) -> int:
    return max(1, min(10000, round(shares * 100 / 1024)))


def io_weight_v1(weight: int, file: str) -> int:
    """io.weight (1..10000, default 100) -> blkio.weight (10..1000, default 500) or
    blkio.bfq.weight (1..1000, default 100)."""
    if file == "blkio.bfq.weight":
        return max(1, min(1000, weight))
    return max(10, min(1000, weight * 5))


def _mem(v: int | None, v2: bool) -> str:
    if v is None:
        return "max" if v2 else "-1"
    return str(int(v))


def limit_writes(version: int, limit: str, value: Any, limits: dict[str, Any],
                 cgdir: str | None = None) -> list[tuple[str, str]]:
    """The (file, value) writes, in order, that set ``limit`` to ``value`` (None: unlimited
    or the default). Pure except for choosing the v1 io file, which needs ``cgdir``.

    ``limits`` is the whole normalized limits dict (v1 memory+swap need both values).
    """
    if limit == "memory":
        if version == 2:
            return [("memory.max", _mem(value, True))]
        return [("memory.limit_in_bytes", _mem(value, False))]
    if limit == "memory_swap":
        if version == 2:
            return [("memory.swap.max", _mem(value, True))]
        mem = limits.get("memory")
        if value is None or mem is None:
            return [("memory.memsw.limit_in_bytes", "-1")]
        return [("memory.memsw.limit_in_bytes", str(int(mem) + int(value)))]
    if limit == "cpu":
        if version == 2:
            if value is None:
                return [("cpu.max", f"max {CPU_PERIOD_US}")]
            return [("cpu.max", f"{cpu_quota(float(value))} {CPU_PERIOD_US}")]
        quota = "-1" if value is None else str(cpu_quota(float(value)))
        return [("cpu.cfs_period_us", str(CPU_PERIOD_US)), ("cpu.cfs_quota_us", quota)]
    if limit == "cpu_weight":
        w = 100 if value is None else int(value)
        if version == 2:
            return [("cpu.weight", str(w))]
        return [("cpu.shares", str(weight_to_shares(w)))]
    if limit == "pids":
        return [("pids.max", "max" if value is None else str(int(value)))]
    if limit == "io_weight":
        w = 100 if value is None else int(value)
        if version == 2:
            return [("io.weight", f"default {w}")]
        file = v1_io_file(cgdir) if cgdir else "blkio.weight"
        if file is None:
            raise SysError(f"no blkio weight file in {cgdir}", errno=_errno.ENOENT,
                           hint="io_weight on cgroup v1 needs the BFQ (blkio.bfq.weight) or CFQ "
                                "(blkio.weight) I/O scheduler")
        return [(file, str(io_weight_v1(w, file)))]
    raise ValueError(f"unknown limit {limit!r}")


def v1_io_file(cgdir: str) -> str | None:
    for f in ("blkio.weight", "blkio.bfq.weight"):
        if os.path.exists(os.path.join(cgdir, f)):
            return f
    return None


def read_limit(version: int, limit: str, cgdir: str) -> Any:
    """The live value of ``limit`` in manifest units (None: unlimited/default)."""
    j = os.path.join
    if limit == "memory":
        return _memval(read(j(cgdir, "memory.max" if version == 2 else "memory.limit_in_bytes")))
    if limit == "memory_swap":
        if version == 2:
            return _memval(read(j(cgdir, "memory.swap.max")))
        memsw = _memval(read(j(cgdir, "memory.memsw.limit_in_bytes")))
        mem = _memval(read(j(cgdir, "memory.limit_in_bytes")))
        if memsw is None or mem is None:
            return None
        return memsw - mem
    if limit == "cpu":
        if version == 2:
            q, _, p = read(j(cgdir, "cpu.max")).partition(" ")
            return None if q == "max" else int(q) / int(p)
        quota = int(read(j(cgdir, "cpu.cfs_quota_us")))
        return None if quota < 0 else quota / int(read(j(cgdir, "cpu.cfs_period_us")))
    if limit == "cpu_weight":
        if version == 2:
            return int(read(j(cgdir, "cpu.weight")))
        return shares_to_weight(int(read(j(cgdir, "cpu.shares"))))
    if limit == "pids":
        v = read(j(cgdir, "pids.max"))
        return None if v == "max" else int(v)
    if limit == "io_weight":
        if version == 2:
            return int(read(j(cgdir, "io.weight")).splitlines()[0].split()[-1])
        f = v1_io_file(cgdir)
        if f is None:
            return None
        w = int(read(j(cgdir, f)))
        return w if f == "blkio.bfq.weight" else w // 5
    raise ValueError(f"unknown limit {limit!r}")


# --- availability ----------------------------------------------------------------


def needed_controllers(limits: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for name, ctrl in LIMIT_CONTROLLER.items():
        if limits.get(name) is not None and ctrl not in out:
            out.append(ctrl)
    return out


#: what to do when this user may not make cgroups. vbdecl makes its groups below the
#: hierarchy's root (PARENT), never in a cgroup delegated to the caller (a user's review
#: delegated one and was still refused): asking for delegation would not help.
NOT_DELEGATED_HINT = ("run as root (limits need it: vbdecl does not use a cgroup delegated to you), "
                      "or set limits.optional: true to run without the limits (with a warning)")


def missing(layout: Layout, limits: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Limits that cannot be had on ``layout``: (limit, message, hint) for each.

    Checks what can be known before any cgroup exists: the controller's
    hierarchy, write access to it, and (v1) swap accounting. Files that exist
    only below the root (v2 swap, v1 BFQ weight) are checked when applied.
    """
    out: list[tuple[str, str, str]] = []
    for limit, ctrl in LIMIT_CONTROLLER.items():
        if limits.get(limit) is None:
            continue
        where = layout.place(ctrl)
        if where is None:
            if layout.mode == "none":
                msg, hint = "no cgroup hierarchy is mounted", \
                    "mount cgroup2 on /sys/fs/cgroup (or set limits.optional: true)"
            elif layout.unified and ctrl in read_controllers(layout.unified):
                msg, hint = f"the {ctrl} controller is not available", "see `vbdecl doctor`"
            else:
                msg = (f"limits.{limit} needs the {ctrl} controller, which this machine offers "
                       f"neither in cgroup v2 nor as a v1 hierarchy (layout: {layout.mode})")
                hint = (f"enable the {ctrl} controller (v2: it must be listed in "
                        f"{layout.unified or '/sys/fs/cgroup'}/cgroup.controllers), or drop "
                        f"limits.{limit}, or set limits.optional: true")
            out.append((limit, msg, hint))
            continue
        version, mount = where
        base = os.path.join(mount, PARENT)
        probe_dir = base if os.path.isdir(base) else mount
        if not os.access(probe_dir, os.W_OK):
            out.append((limit, f"limits.{limit}: {probe_dir} is not writable by this user",
                        NOT_DELEGATED_HINT))
            continue
        if limit == "memory_swap":
            if version == 1 and not os.path.exists(os.path.join(mount, "memory.memsw.limit_in_bytes")):
                out.append((limit, "limits.memory_swap needs swap accounting, which this kernel "
                                   "does not do (no memory.memsw.limit_in_bytes)",
                            "boot with swapaccount=1, or drop limits.memory_swap, or set "
                            "limits.optional: true"))
            elif version == 1 and limits.get("memory") is None:
                out.append((limit, "limits.memory_swap needs limits.memory on cgroup v1 (v1 "
                                   "limits memory and swap only together)",
                            "set limits.memory as well"))
    return out


def detect() -> dict[str, Any]:
    """The layout and usable controllers, for `vbdecl doctor`."""
    layout = current_layout()
    controllers: dict[str, Any] = {}
    for ctrl in ("memory", "cpu", "cpuacct", "pids", "io"):
        where = layout.place(ctrl)
        if where is None:
            controllers[ctrl] = {"usable": False, "version": None, "hierarchy": None}
            continue
        version, mount = where
        controllers[ctrl] = {"usable": os.access(mount, os.W_OK), "version": version,
                             "hierarchy": mount}
    mem = layout.place("memory")
    swap: bool | None = None
    if mem is not None and mem[0] == 1:
        swap = os.path.exists(os.path.join(mem[1], "memory.memsw.limit_in_bytes"))
    elif mem is not None:
        parent = os.path.join(mem[1], PARENT)
        swap = os.path.exists(os.path.join(parent, "memory.swap.max")) if os.path.isdir(parent) \
            else None
    limits = {}
    for limit, ctrl in LIMIT_CONTROLLER.items():
        limits[limit] = bool(controllers[ctrl]["usable"])
    if swap is False:
        limits["memory_swap"] = False
    return {**layout.to_json(), "controllers": controllers, "swap_accounting": swap,
            "limits": limits, "kill": "cgroup.kill" if layout.unified else "signal loop"}


# --- group lifecycle ---------------------------------------------------------------


def _mkdir(path: str) -> bool:
    """mkdir; False if it existed. (Tests of fake trees replace this.)"""
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        return False
    return True


def _rmdir(path: str) -> None:
    os.rmdir(path)


def group_plan(layout: Layout, controllers: list[str]) -> list[dict[str, Any]]:
    """The directories (one per hierarchy) an environment needs, without creating any."""
    dirs: dict[str, dict[str, Any]] = {}
    for ctrl in controllers:
        where = layout.place(ctrl)
        if where is None:
            continue
        version, mount = where
        d = dirs.setdefault(mount, {"hierarchy": mount, "version": version, "controllers": []})
        if version == 2 or ctrl not in d["controllers"]:
            d["controllers"].append(ctrl)
    if layout.unified is not None and layout.unified not in dirs:
        # A tracking cgroup: every process, cgroup.kill, cpu.stat; no controllers needed.
        dirs[layout.unified] = {"hierarchy": layout.unified, "version": 2, "controllers": [],
                                "tracking": layout.mode == "hybrid"}
    elif layout.unified is None and "cpuacct" not in controllers:
        acct = layout.place("cpuacct")
        if acct is not None and acct[1] not in dirs:
            dirs[acct[1]] = {"hierarchy": acct[1], "version": 1, "controllers": ["cpuacct"]}
        elif acct is not None:
            dirs[acct[1]]["controllers"].append("cpuacct")
    # v2 controllers listed by name in subtree_control: cpuacct is part of cpu there.
    for d in dirs.values():
        if d["version"] == 2:
            d["controllers"] = [c for c in d["controllers"] if c != "cpuacct"]
    return list(dirs.values())


def _enable_v2(cgdir: str, controllers: list[str]) -> list[str]:
    """Enable controllers in cgdir/cgroup.subtree_control; returns those we enabled."""
    if not controllers:
        return []
    path = os.path.join(cgdir, "cgroup.subtree_control")
    have = set(read(path).split())
    want = [c for c in controllers if c not in have]
    if want:
        write(path, " ".join(f"+{c}" for c in want),
              hint="the controller must be listed in cgroup.controllers of this cgroup and "
                   "the cgroup must have no processes of its own")
    return want


def empty_record(layout: Layout, instance: str) -> dict[str, Any]:
    """A group record that holds no directory (yet)."""
    return {"instance": instance, "layout": layout.mode, "dirs": [], "created": [],
            "parents_created": [], "unified": None, "controllers": {}, "warnings": []}


def create_group(layout: Layout, instance: str, controllers: list[str]) -> dict[str, Any]:
    """Create ``<hierarchy>/vbdecl/<instance>`` in every hierarchy needed.

    Returns the record: exactly the directories created, and which ``vbdecl``
    parents we created. On failure everything created so far is removed.
    """
    record = empty_record(layout, instance)
    try:
        for d in group_plan(layout, controllers):
            try:
                _create_one(record, instance, d)
            except SysError as exc:
                if d.get("tracking") and exc.errno in (_errno.EACCES, _errno.EPERM, _errno.EROFS):
                    # hybrid: the cgroup2 tracking dir is an extra (cgroup.kill, cpu time);
                    # without it teardown kills by signal and cpu time comes from cpuacct.
                    record["tracking_skipped"] = exc.message
                    acct = layout.place("cpuacct")
                    if acct is not None and "cpuacct" not in record["controllers"]:
                        _create_one(record, instance, {"hierarchy": acct[1], "version": acct[0],
                                                       "controllers": ["cpuacct"]})
                    continue
                raise
    except BaseException:
        try:
            remove_group(record)
        except SysError:
            pass
        raise
    return record


def remake_dirs(record: dict[str, Any], dirs: list[dict[str, Any]]) -> None:
    """Make ``dirs`` of the group ``record`` again (removed behind vbdecl's back):
    the same paths with the same controllers, empty; the caller moves processes in."""
    for d in dirs:
        mount = os.path.dirname(os.path.dirname(d["path"]))
        _make_dir(record, mount, int(d["version"]), d["controllers"], d["path"])


def find_group(layout: Layout, instance: str) -> dict[str, Any] | None:
    """The record of the ``<hierarchy>/vbdecl/<instance>`` directories that exist now,
    in every hierarchy of ``layout``; None when there is none.

    For recovery: a :func:`create_group` whose record was lost (vbdecl killed
    before it was journaled) left directories that only their name ties to the
    instance. The record has the shape :func:`create_group` returns, so
    :func:`remove_group` removes them (and the ``vbdecl`` parents when empty). One
    killed between making a ``vbdecl`` parent and the instance's directory in it
    left the parent alone: :func:`remove_empty_parents` takes it."""
    if not instance or os.sep in instance or instance in (".", ".."):
        return None
    record = empty_record(layout, instance)
    hierarchies: dict[str, int] = {}
    if layout.unified is not None:
        hierarchies[layout.unified] = 2
    for mount in layout.v1.values():
        hierarchies.setdefault(mount, 1)
    for mount, version in hierarchies.items():
        path = os.path.join(mount, PARENT, instance)
        if not os.path.isdir(path):
            continue
        ctrls = [c for c in ("memory", "cpu", "cpuacct", "pids", "io")
                 if layout.place(c) == (version, mount)]
        if version == 2:
            try:   # what the parent enabled for it: create_group's controllers
                enabled = set(read(os.path.join(path, "cgroup.controllers")).split())
            except SysError:
                enabled = set()
            ctrls = [c for c in ctrls if c in enabled or (c == "cpuacct" and "cpu" in enabled)]
            record["unified"] = path
        record["created"].append(path)
        record["dirs"].append({"path": path, "version": version,
                               "controllers": [c for c in ctrls if not (version == 2 and c == "cpuacct")]})
        for c in ctrls:
            record["controllers"][c] = path
    return record if record["dirs"] else None


def remove_empty_parents(layout: Layout) -> None:
    """Remove the ``vbdecl`` parent of each hierarchy of ``layout`` that is empty: one a
    vbdecl killed between making it and its group's directory in it left (a kill
    review found them left for good; recovery's probe finds only groups). Safe whoever
    made it: rmdir takes only an empty cgroup, and :func:`_make_dir` retries when it
    loses its parent so."""
    mounts = dict.fromkeys([*([layout.unified] if layout.unified else []), *layout.v1.values()])
    for mount in mounts:
        with contextlib.suppress(OSError):
            _rmdir(os.path.join(mount, PARENT))


def _make_dir(record: dict[str, Any], mount: str, version: int, ctrls: list[str], path: str) -> bool:
    """mkdir ``path`` (``<mount>/vbdecl/<instance>``) and its parent (noted in the
    record when made), with ``ctrls`` enabled down to it on cgroup2. False when it
    existed already."""
    parent = os.path.dirname(path)
    for _attempt in range(5):
        if version == 2:
            _enable_v2(mount, ctrls)
        try:
            if _mkdir(parent) and parent not in record["parents_created"]:
                record["parents_created"].append(parent)
        except OSError as exc:
            raise _fail(f"cannot create {parent}", exc) from None
        if version == 2:
            _enable_v2(parent, ctrls)
        try:
            return _mkdir(path)
        except FileNotFoundError:
            continue  # another environment removed the empty parent just now: retry
        except OSError as exc:
            raise _fail(f"cannot create {path}", exc) from None
    raise SysError(f"cannot create {path}: its parent keeps disappearing",
                   errno=_errno.ENOENT, hint="retry; another vbdecl is tearing down")


def _create_one(record: dict[str, Any], instance: str, d: dict[str, Any]) -> None:
    mount, version, ctrls = d["hierarchy"], d["version"], d["controllers"]
    path = os.path.join(mount, PARENT, instance)
    made = _make_dir(record, mount, version, ctrls, path)
    if not made and read(os.path.join(path, "cgroup.procs")):
        raise SysError(f"{path} already exists and has processes", errno=_errno.EEXIST,
                       hint="an earlier run of this instance is still alive: "
                            "`vbdecl destroy` or `vbdecl recover` it first")
    record["created"].append(path)
    record["dirs"].append({"path": path, "version": version, "controllers": ctrls})
    if version == 2:
        record["unified"] = path
    for c in ctrls:
        record["controllers"][c] = path
    if version == 2 and "cpu" in ctrls:
        record["controllers"]["cpuacct"] = path


def _dir_of(record: dict[str, Any], ctrl: str) -> tuple[int, str] | None:
    path = record.get("controllers", {}).get(ctrl)
    if path is None:
        return None
    for d in record.get("dirs", []):
        if d["path"] == path:
            return int(d["version"]), path
    return None


def limit_dir(record: dict[str, Any], limit: str) -> tuple[int, str] | None:
    """(version, directory) of the group's cgroup that holds ``limit``, or None."""
    return _dir_of(record, LIMIT_CONTROLLER[limit])


def join(record: dict[str, Any], pid: int = 0, *, skip: Collection[str] = ()) -> None:
    """Move ``pid`` (0: the caller) into every directory of the group but those in ``skip``."""
    for d in record.get("dirs", []):
        if d["path"] in skip:
            continue
        write(os.path.join(d["path"], "cgroup.procs"), str(pid),
              hint="the process must exist and be allowed to move (v2: the target must have "
                   "no child cgroups with controllers)")


def init_stays_out(record: dict[str, Any]) -> list[str]:
    """The directories of the group a live environment's init is kept out of: those of
    the v1 memory controller. The init is the largest process there (a Python process,
    its memory counted in the OOM score though charged where it was forked), so an OOM
    of the group, where the init may not lower its ``oom_score_adj`` to -1000 (no
    CAP_SYS_RESOURCE), took it and the environment with it. Out of that directory
    (in the others: pids, cpu, the cgroup2 tracking one) only the payload can be
    picked. On cgroup2 a process is in one cgroup for every controller, and an OOM
    picks among the whole subtree: the init stays in (see docs/security.md)."""
    return [d["path"] for d in record.get("dirs", [])
            if int(d.get("version", 0)) == 1 and "memory" in d.get("controllers", [])]


def join_all(record: dict[str, Any], first: int, pids: Callable[[], list[int]],
             timeout: float = _KILL_WAIT_S, *, first_out: Collection[str] = ()) -> None:
    """Move ``first`` into the group (but the directories ``first_out``, where it is
    moved out of, if an older vbdecl put it there, to where it came from), then every
    other process ``pids()`` lists (an environment given limits while it runs), pass
    after pass until one finds none left outside: a child forked before its parent moved
    is caught by the next pass, one forked after is inside already. Inside means in
    every directory of the group."""
    join(record, first, skip=first_out)
    for d in record.get("dirs", []):
        if d["path"] in first_out and first in _procs(d["path"]):
            above = os.path.dirname(os.path.dirname(d["path"]))
            _move(first, [t for t in (d.get("origin"), above) if t and os.path.isdir(t)])
    dirs = [d["path"] for d in record.get("dirs", [])]
    if dirs:
        def outside() -> list[int]:
            inside = set.intersection(*(set(_procs(d)) for d in dirs))
            return [pid for pid in pids() if pid not in inside and pid != first]

        _move_until_settled(outside, lambda pid: join(record, pid), dirs[0], timeout)


def _move_until_settled(outside: Callable[[], list[int]], move: Callable[[int], None], where: str,
                        timeout: float) -> None:
    """``move`` every process ``outside()`` lists, pass after pass until one finds none
    left: a child forked before its parent moved is caught by the next pass, one forked
    after is inside already. A process gone meanwhile is no error."""
    for late in _passes(timeout):
        left = outside()
        if not left:
            return
        if late:
            raise SysError(f"processes {left[:8]} keep appearing outside {where}",
                           errno=_errno.EBUSY, hint="a process inside forks faster than it "
                                                    "can be moved; retry")
        for pid in left:
            try:
                move(pid)
            except SysError as exc:
                if exc.errno != _errno.ESRCH:
                    raise


def _passes(timeout: float) -> Iterator[bool]:
    """Passes of a loop that waits for processes to settle, with growing sleeps in
    between (0.5 ms up to 20 ms); each says whether ``timeout`` has run out."""
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while True:
        yield time.monotonic() > deadline
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


def note_origins(record: dict[str, Any], paths: list[str]) -> None:
    """Remember, per directory of the group, the cgroup of that hierarchy among ``paths``
    (a process's cgroups, as host paths) that the environment came from:
    :func:`release_group` moves its processes back there."""
    for d in record.get("dirs", []):
        origin = _under(os.path.dirname(os.path.dirname(d["path"])), paths)
        if origin is not None:
            d["origin"] = origin


def _under(top: str, paths: list[str]) -> str | None:
    """The first of ``paths`` (cgroups, as host paths) that is ``top`` or below it."""
    top = top.rstrip("/")
    return next((p for p in paths if p == top or p.startswith(top + "/")), None)


def members(path: str) -> list[int]:
    """The processes in the cgroup directory ``path`` ([] when it is gone)."""
    return _procs(path)


def _procs(path: str) -> list[int]:
    try:
        text = read(os.path.join(path, "cgroup.procs"))
    except SysError as exc:
        if exc.errno == _errno.ENOENT:
            return []
        raise
    return [int(p) for p in text.split()]


def _populated(path: str) -> bool:
    try:
        return read_kv(os.path.join(path, "cgroup.events")).get("populated", 0) == 1
    except SysError as exc:
        if exc.errno == _errno.ENOENT:
            return False
        raise


def kill_all(record: dict[str, Any], timeout: float = _KILL_WAIT_S) -> None:
    """Kill every process in the group and wait (bounded) until it is empty."""
    deadline = time.monotonic() + timeout
    _step_out(record)
    unified = record.get("unified")
    if unified and os.path.isdir(unified):
        kill_file = os.path.join(unified, "cgroup.kill")
        if os.path.exists(kill_file):
            if _populated(unified):
                write(kill_file, "1")
                delay = 0.0005
                while _populated(unified):
                    if time.monotonic() > deadline:
                        raise SysError(f"processes in {unified} survive cgroup.kill",
                                       errno=_errno.EBUSY,
                                       hint="a process is stuck in the kernel (D state); "
                                            "retry `vbdecl destroy` later")
                    time.sleep(delay)
                    delay = min(delay * 2, 0.02)
        else:
            _freeze(unified, True)
    # v1 directories (and v2 without cgroup.kill): SIGKILL loop until empty.
    delay = 0.0005
    for d in record.get("dirs", []):
        path = d["path"]
        while True:
            pids = _procs(path)
            if not pids:
                break
            if time.monotonic() > deadline:
                raise SysError(f"processes {pids[:8]} in {path} survive SIGKILL",
                               errno=_errno.EBUSY,
                               hint="a process is stuck in the kernel (D state); "
                                    "retry `vbdecl destroy` later")
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(delay)
            delay = min(delay * 2, 0.02)
    if unified and os.path.isdir(unified) and not os.path.exists(os.path.join(unified, "cgroup.kill")):
        _freeze(unified, False)


def _step_out(record: dict[str, Any]) -> None:
    """If the calling process is inside the group (a helper that joined it), move it to
    the hierarchy's root first, so that the kill never hits vbdecl itself."""
    me = os.getpid()
    for d in record.get("dirs", []):
        if me in _procs(d["path"]):
            root = os.path.dirname(os.path.dirname(d["path"]))
            write(os.path.join(root, "cgroup.procs"), str(me))


def _freeze(path: str, on: bool) -> None:
    f = os.path.join(path, "cgroup.freeze")
    if os.path.exists(f):
        try:
            write(f, "1" if on else "0")
        except SysError:
            pass


def remove_group(record: dict[str, Any], timeout: float = _KILL_WAIT_S) -> None:
    """Kill what is left inside, remove the directories the record created, and the
    ``vbdecl`` parents if they are empty. Idempotent."""
    kill_all(record, timeout)
    deadline = time.monotonic() + timeout
    for path in reversed(record.get("created", [])):
        delay = 0.0005
        while True:
            try:
                _rmdir(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno == _errno.EBUSY and time.monotonic() < deadline:
                    # v1: killed tasks leave the cgroup a moment after they die.
                    time.sleep(delay)
                    delay = min(delay * 2, 0.02)
                    continue
                raise _fail(f"cannot remove {path}", exc,
                            "a process or a child cgroup is still inside; retry "
                            "`vbdecl destroy`") from None
            break
    # The shared ``vbdecl`` parents go with their last environment, whoever created
    # them: rmdir only succeeds on an empty cgroup, and a concurrent create_group
    # that loses its parent this way retries.
    parents = dict.fromkeys([*record.get("parents_created", []),
                             *(os.path.dirname(p) for p in record.get("created", [])
                               if os.path.basename(os.path.dirname(p)) == PARENT)])
    for parent in parents:
        try:
            _rmdir(parent)
        except OSError as exc:
            # Another environment uses it (or removed it already): fine.
            if exc.errno not in (_errno.EBUSY, _errno.ENOTEMPTY, _errno.ENOENT):
                raise _fail(f"cannot remove {parent}", exc) from None


# --- limits on a group --------------------------------------------------------------


def _v1_memory_pair(cgdir: str, mem: int | None, memsw: int | None) -> list[tuple[str, str]]:
    """Write memory.limit_in_bytes and memory.memsw.limit_in_bytes in the order the kernel
    accepts (memsw >= memory at every step). Returns the writes done."""
    mem_f = os.path.join(cgdir, "memory.limit_in_bytes")
    sw_f = os.path.join(cgdir, "memory.memsw.limit_in_bytes")
    cur = _memval(read(mem_f))
    new_s = _mem(mem, False)
    sw_s = _mem(memsw, False)
    raising = mem is None or (cur is not None and mem > cur)
    order = [(sw_f, sw_s), (mem_f, new_s)] if raising else [(mem_f, new_s), (sw_f, sw_s)]
    for f, v in order:
        write_checked(f, v)
    return order


def extend_group(layout: Layout, record: dict[str, Any], ctrl: str,
                 keep_out: Collection[int] = (), pids: Callable[[], list[int]] | None = None,
                 timeout: float = _KILL_WAIT_S) -> dict[str, Any]:
    """Add a controller to a live group (a limit added to a live environment).

    v2: enable the controller for the group's cgroup2 dir. v1: create the dir in
    that controller's hierarchy and move every process of the environment into it,
    but ``keep_out`` (the init, out of a v1 memory cgroup: :func:`init_stays_out`):
    those of a directory of the group the init is in (never one it is kept out of,
    which would leave the init, and so exec's commands and a restarted process,
    which join the init's cgroups, out of the new limit), and those ``pids()`` lists
    (the environment's processes, for a group whose only directory is one the init
    stays out of). Pass after pass, as :func:`join_all`: a child forked before its
    parent moved is caught by the next. Returns the extension (kept in the limit's
    record, undone by :func:`retract_group`)."""
    where = layout.place(ctrl)
    if where is None:
        raise SysError(f"the {ctrl} controller is not available here (layout {layout.mode})",
                       errno=_errno.ENOENT, hint="see `vbdecl doctor`")
    version, mount = where
    instance = record["instance"]
    unified = record.get("unified")
    if version == 2:
        if not unified or os.path.dirname(os.path.dirname(unified)) != mount.rstrip("/"):
            raise SysError(f"the group has no dir in {mount}", errno=_errno.ENOENT,
                           hint="destroy and re-apply the environment")
        _enable_v2(mount, [ctrl])
        _enable_v2(os.path.dirname(unified), [ctrl])
        return {"ctrl": ctrl, "path": unified, "version": 2, "created": False,
                "parent_created": False}
    part: dict[str, Any] = {"instance": instance, "layout": layout.mode, "dirs": [], "created": [],
                            "parents_created": [], "unified": None, "controllers": {}}
    _create_one(part, instance, {"hierarchy": mount, "version": 1, "controllers": [ctrl]})
    path = part["created"][0]
    stays_out = set(init_stays_out(record))
    source = unified or next((d["path"] for d in record.get("dirs", []) if d["path"] not in stays_out), None)

    def members() -> list[int]:
        found = _procs(source) if source else []
        if pids is not None:
            found += [p for p in pids() if p not in found]
        return [p for p in found if p not in keep_out]

    first = members()
    ext = {"ctrl": ctrl, "path": path, "version": 1, "created": True,
           "parent_created": bool(part["parents_created"]),
           "origin": _origin_in(mount, first[0]) if first else None}
    def outside() -> list[int]:
        inside = set(_procs(path))
        return [pid for pid in members() if pid not in inside]

    try:
        _move_until_settled(outside, lambda pid: write(os.path.join(path, "cgroup.procs"), str(pid)),
                            path, timeout)
    except BaseException:
        retract_group(ext)     # (its processes back where they were, alive)
        raise
    return ext


def _origin_in(mount: str, pid: int) -> str | None:
    """The cgroup of hierarchy ``mount`` that ``pid`` is in (where :func:`retract_group`
    moves the processes back: the hierarchy's root would take them out of a cgroup
    their caller limits them by, such as a systemd unit's)."""
    from vbdecl.sys import proc as sysproc

    return _under(mount, sysproc.cgroup_paths(pid, include_root=True))


def with_extension(record: dict[str, Any], ext: dict[str, Any] | None) -> dict[str, Any]:
    """A view of the group record that includes an extension."""
    if not ext:
        return record
    view = {**record, "controllers": {**record.get("controllers", {}), ext["ctrl"]: ext["path"]}}
    if not any(d["path"] == ext["path"] for d in record.get("dirs", [])):
        view["dirs"] = [*record.get("dirs", []),
                        {"path": ext["path"], "version": ext["version"], "controllers": [ext["ctrl"]]}]
    return view


def retract_group(ext: dict[str, Any]) -> None:
    """Undo :func:`extend_group`: move the processes out (:func:`_move_out`) and remove
    the dir (v1); the v2 controller stays enabled (other environments may use it)."""
    if not ext.get("created"):
        return
    path = ext["path"]
    parent = os.path.dirname(path)
    _move_out(path, ext.get("origin"))
    remove_group({"dirs": [], "created": [path], "unified": None,
                  "parents_created": [parent] if ext.get("parent_created") else []})


def release_group(record: dict[str, Any], timeout: float = _KILL_WAIT_S) -> None:
    """Move every process of the group out of it, alive (:func:`_move_out`): an
    environment that lives on without its limits. :func:`remove_group` then finds
    nothing to kill."""
    for d in record.get("dirs", []):
        _move_out(d["path"], d.get("origin"), timeout)


def _move_out(path: str, origin: str | None = None, timeout: float = _KILL_WAIT_S) -> None:
    """Move the processes of ``<above>/vbdecl/<instance>`` back to ``origin``, the cgroup
    they came from (:func:`note_origins`), else (it is gone, or refuses them) to
    ``<above>``, the cgroup the group was made in. A process that forks meanwhile may
    leave a child behind: moved on the next pass."""
    above = os.path.dirname(os.path.dirname(path))
    targets = [t for t in (origin, above) if t and os.path.isdir(t)]
    for late in _passes(timeout):
        pids = _procs(path)
        if not pids:
            return
        if late:
            raise SysError(f"processes {pids[:8]} keep appearing in {path}", errno=_errno.EBUSY,
                           hint="a process inside forks faster than it can be moved; retry")
        for pid in pids:
            _move(pid, targets)


def _move(pid: int, targets: list[str]) -> None:
    """Write ``pid`` into the first of ``targets`` that takes it (gone already: done)."""
    for i, target in enumerate(targets):
        try:
            write(os.path.join(target, "cgroup.procs"), str(pid),
                  hint=f"{target} must be able to hold processes (cgroup v2: no controllers "
                       "enabled for its children unless it is the root)")
            return
        except SysError as exc:
            if exc.errno == _errno.ESRCH:
                return
            if i == len(targets) - 1:
                raise


def set_limit(record: dict[str, Any], limit: str, value: Any,
              limits: dict[str, Any]) -> dict[str, Any]:
    """Set one limit on the group; returns the limit's record."""
    ctrl = LIMIT_CONTROLLER[limit]
    where = _dir_of(record, ctrl)
    if where is None:
        raise SysError(f"limits.{limit}: the {ctrl} controller is not part of this environment's "
                       f"cgroup", errno=_errno.ENOENT,
                       hint="re-apply the environment so its cgroup is created with this "
                            "controller (`vbdecl apply`)")
    version, cgdir = where
    writes: list[tuple[str, str]]
    if version == 1 and limit in ("memory", "memory_swap") and \
            os.path.exists(os.path.join(cgdir, "memory.memsw.limit_in_bytes")):
        mem = limits.get("memory") if limit == "memory_swap" else value
        swap = value if limit == "memory_swap" else limits.get("memory_swap")
        if limit == "memory" and swap is None:
            writes = [(os.path.join(cgdir, f), v) for f, v in
                      limit_writes(1, "memory", value, limits)]
            # memsw may sit below a raised memory limit only if it was set: keep it unlimited.
            sw = _memval(read(os.path.join(cgdir, "memory.memsw.limit_in_bytes")))
            if sw is not None:
                writes = _v1_memory_pair(cgdir, value, None)
            else:
                for f, v in writes:
                    write_checked(f, v)
        else:
            if limit == "memory_swap" and mem is None and value is not None:
                raise SysError("limits.memory_swap needs limits.memory on cgroup v1",
                               errno=_errno.EINVAL, hint="set limits.memory as well")
            memsw = None if mem is None or swap is None else int(mem) + int(swap)
            writes = _v1_memory_pair(cgdir, None if mem is None else int(mem), memsw)
    else:
        if limit == "memory_swap" and version == 1:
            raise SysError("limits.memory_swap needs swap accounting, which this kernel does not "
                           f"do (no memory.memsw.limit_in_bytes in {cgdir})",
                           errno=_errno.ENOENT, hint="boot with swapaccount=1")
        if limit == "memory_swap" and not os.path.exists(os.path.join(cgdir, "memory.swap.max")):
            raise SysError(f"limits.memory_swap needs swap accounting (no memory.swap.max in "
                           f"{cgdir})", errno=_errno.ENOENT,
                           hint="build the kernel with CONFIG_MEMCG_SWAP, or drop "
                                "limits.memory_swap")
        writes = [(os.path.join(cgdir, f), v) for f, v in
                  limit_writes(version, limit, value, limits, cgdir)]
        for f, v in writes:
            write_checked(f, v)
    return {"limit": limit, "value": value, "version": version, "dir": cgdir,
            "writes": [[f, v] for f, v in writes]}


def probe_limit(record: dict[str, Any], limit: str) -> Any:
    """The live value (manifest units); raises FileNotFoundError-like SysError if gone."""
    where = _dir_of(record, LIMIT_CONTROLLER[limit])
    if where is None:
        return None
    return read_limit(where[0], limit, where[1])


# --- usage ---------------------------------------------------------------------------


def _int_or_none(path: str) -> int | None:
    try:
        v = read(path)
    except SysError:
        return None
    try:
        return int(v)
    except ValueError:
        return None


def usage(record: dict[str, Any]) -> dict[str, Any]:
    """Live usage with the limits: memory current/peak, cpu time, pids; None where unknown."""
    j = os.path.join
    out: dict[str, Any] = {"memory": None, "cpu": None, "pids": None}
    mem = _dir_of(record, "memory")
    if mem is not None:
        v, d = mem
        if v == 2:
            cur, peak = _int_or_none(j(d, "memory.current")), _int_or_none(j(d, "memory.peak"))
        else:
            cur = _int_or_none(j(d, "memory.usage_in_bytes"))
            peak = _int_or_none(j(d, "memory.max_usage_in_bytes"))
        out["memory"] = {"current": cur, "peak": peak, "limit": _safe(read_limit, v, "memory", d),
                         "oom_kills": _oom_kills(v, d)}
    cpu_usec: int | None = None
    unified = record.get("unified")
    if unified:
        try:
            cpu_usec = read_kv(j(unified, "cpu.stat")).get("usage_usec")
        except SysError:
            cpu_usec = None
    if cpu_usec is None:
        acct = _dir_of(record, "cpuacct")
        if acct is not None and acct[0] == 1:
            ns = _int_or_none(j(acct[1], "cpuacct.usage"))
            cpu_usec = None if ns is None else ns // 1000
    cpu = _dir_of(record, "cpu")
    out["cpu"] = {"usage_usec": cpu_usec,
                  "limit": _safe(read_limit, cpu[0], "cpu", cpu[1]) if cpu else None,
                  "weight": _safe(read_limit, cpu[0], "cpu_weight", cpu[1]) if cpu else None}
    pids = _dir_of(record, "pids")
    if pids is not None:
        out["pids"] = {"current": _int_or_none(j(pids[1], "pids.current")),
                       "peak": _int_or_none(j(pids[1], "pids.peak")),
                       "limit": _safe(read_limit, pids[0], "pids", pids[1])}
    elif unified:
        try:
            out["pids"] = {"current": len(_procs(unified)), "peak": None, "limit": None}
        except SysError:
            pass
    return out


def _safe(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except (SysError, ValueError):
        return None


def _oom_kills(version: int, cgdir: str) -> int | None:
    try:
        if version == 2:
            return read_kv(os.path.join(cgdir, "memory.events")).get("oom_kill")
        return read_kv(os.path.join(cgdir, "memory.oom_control")).get("oom_kill")
    except SysError:
        return None


def oom_kills(record: dict[str, Any]) -> int:
    """How many processes of this group the OOM killer killed (0 if unknown)."""
    mem = _dir_of(record, "memory")
    if mem is None or not os.path.isdir(mem[1]):
        return 0
    return _oom_kills(*mem) or 0


def oom_killed(record: dict[str, Any]) -> bool:
    """Whether the kernel's OOM killer killed a process of this group (call before revert)."""
    mem = _dir_of(record, "memory")
    if mem is None:
        return False
    n = _oom_kills(*mem)
    if n is not None:
        return n > 0
    # Old v1 kernels without oom_kill in memory.oom_control: the limit was hit.
    return (_int_or_none(os.path.join(mem[1], "memory.failcnt")) or 0) > 0
