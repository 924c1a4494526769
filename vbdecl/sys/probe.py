"""Light kernel probes for ``vbdecl doctor``: what this machine can do.

Each probe returns a dict with ``ok`` (bool), ``detail`` (str) and, when
something is missing, a ``hint``. Probes that change process state
(unshare) run in a forked child that exits at once.
"""

from __future__ import annotations

import os
import shutil

from vbdecl.sys.raw import syscall

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


CLONE_FLAGS = {
    "user": 0x10000000, "pid": 0x20000000, "mount": 0x00020000, "uts": 0x04000000,
    "ipc": 0x08000000, "net": 0x40000000, "cgroup": 0x02000000,
}
_NS_FILE = {"mount": "mnt"}
NOBODY = 65534


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _in_child(fn: Any) -> int:
    """Run ``fn()`` (returning an errno, 0 for success) in a forked child; its result."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            code = int(fn())
        except BaseException:
            code = 255
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _unshare(flags: int) -> int:
    return -syscall("unshare", flags)


def kernel() -> dict[str, Any]:
    u = os.uname()
    major, minor = (int(x) for x in u.release.split(".")[:2]) if u.release[:1].isdigit() else (0, 0)
    ok = (major, minor) >= (5, 10)
    return {"ok": ok, "detail": f"{u.sysname} {u.release} {u.machine}",
            "hint": None if ok else "vbdecl needs Linux 5.10 or newer (new mount API, pidfd, openat2)"}


def namespace(kind: str) -> dict[str, Any]:
    """Can this process create a ``kind`` namespace? (As non-root: inside a new user namespace.)"""
    if not os.path.exists(f"/proc/self/ns/{_NS_FILE.get(kind, kind)}"):
        return {"ok": False, "detail": "not built into this kernel",
                "hint": f"rebuild the kernel with CONFIG_{kind.upper()}_NS"}
    flags = CLONE_FLAGS[kind]
    if os.geteuid() != 0 and kind != "user":
        flags |= CLONE_FLAGS["user"]
    err = _in_child(lambda: _unshare(flags))
    if err == 0:
        return {"ok": True, "detail": "available" + (" (inside a user namespace)" if os.geteuid() and kind != "user" else "")}
    return {"ok": False, "detail": f"unshare failed: {os.strerror(err) if 0 < err < 255 else err}",
            "hint": "run as root, or allow unprivileged user namespaces (see the user-unprivileged check)"}


def unprivileged_userns() -> dict[str, Any]:
    """Can an unprivileged user create a user namespace? Tried as uid/gid 65534 in a child."""
    knobs = {
        "kernel.unprivileged_userns_clone": _read("/proc/sys/kernel/unprivileged_userns_clone"),
        "user.max_user_namespaces": _read("/proc/sys/user/max_user_namespaces"),
        "kernel.apparmor_restrict_unprivileged_userns":
            _read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"),
    }

    def attempt() -> int:
        if os.geteuid() == 0:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
        return _unshare(CLONE_FLAGS["user"])

    err = _in_child(attempt)
    known = {k: v for k, v in knobs.items() if v is not None}
    detail = ", ".join(f"{k}={v}" for k, v in known.items())
    if err == 0:
        return {"ok": True, "detail": "allowed" + (f" ({detail})" if detail else "")}
    hint = "enable them: sysctl -w kernel.unprivileged_userns_clone=1" \
        if knobs["kernel.unprivileged_userns_clone"] == "0" else \
        "sysctl -w user.max_user_namespaces=15000" if knobs["user.max_user_namespaces"] == "0" else \
        "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 (or an AppArmor profile for vbdecl)" \
        if knobs["kernel.apparmor_restrict_unprivileged_userns"] == "1" else \
        "unprivileged users cannot run sandboxes here; root still can"
    return {"ok": False, "detail": f"refused: {os.strerror(err) if 0 < err < 255 else err}"
            + (f" ({detail})" if detail else ""), "hint": hint}


def _filesystems() -> set[str]:
    text = _read("/proc/filesystems") or ""
    return {line.split()[-1] for line in text.splitlines() if line.split()}


def overlayfs() -> dict[str, Any]:
    if "overlay" in _filesystems():
        return {"ok": True, "detail": "overlay in /proc/filesystems"}
    mod = f"/lib/modules/{os.uname().release}"
    loadable = os.path.isdir(mod) and any("overlay" in f for _r, _d, fs in os.walk(os.path.join(mod, "kernel/fs/overlayfs"))
                                           for f in fs)
    return {"ok": loadable, "detail": "module not loaded" if loadable else "not available",
            "hint": "modprobe overlay" if loadable else "the overlay, tmp-overlay and ro-overlay entries need overlayfs"}


def cgroups() -> dict[str, Any]:
    try:
        from vbdecl.sys import cgroupfs

        info: dict[str, Any] = cgroupfs.detect()
        controllers = info.get("controllers", {})
        usable = [c for c, v in controllers.items() if v.get("usable")]
        # (mounted but not this user's to write, which an unprivileged review was told
        # was "missing")
        barred = [c for c, v in controllers.items() if not v.get("usable") and v.get("hierarchy")]
        missing = [c for c, v in controllers.items() if not v.get("usable") and not v.get("hierarchy")]
        out: dict[str, Any] = {"ok": bool(usable), "layout": info.get("mode"),
                               "detail": f"{info.get('mode')}; usable: {', '.join(usable) or 'none'}"
                               + (f"; not writable here: {', '.join(barred)}" if barred else "")
                               + (f"; missing: {', '.join(missing)}" if missing else ""),
                               "controllers": controllers, "info": info}
        if barred or missing:
            # (not writable: read-only for root too, or not delegated to a user)
            why = ("mounted read-only" if os.geteuid() == 0 else
                   "not writable by this user: limits need root; vbdecl does not use a "
                   "cgroup delegated to a user")
            out["hint"] = ("limits on " + ", ".join(barred + missing) + " cannot be enforced"
                           + (f" ({', '.join(barred)}: {why})" if barred else "")
                           + "; set limits.optional: true to treat them as warnings")
        return out
    except ImportError:
        pass
    mounts = _read("/proc/self/mountinfo") or ""
    v1: list[str] = []
    v2 = None
    for line in mounts.splitlines():
        parts = line.split()
        if "-" not in parts:
            continue
        fstype = parts[parts.index("-") + 1]
        if fstype == "cgroup2":
            v2 = parts[4]
        elif fstype == "cgroup":
            opts = parts[-1].split(",")
            v1.extend(o for o in opts if o in ("memory", "cpu", "cpuacct", "pids", "blkio", "cpuset"))
    layout = "v2" if v2 and not v1 else "hybrid" if v2 and v1 else "v1" if v1 else "none"
    controllers = sorted(set(v1) | set((_read(os.path.join(v2, "cgroup.controllers")) or "").split() if v2 else set()))
    return {"ok": bool(controllers), "layout": layout, "detail": f"{layout}; controllers: {', '.join(controllers) or 'none'}",
            "hint": None if controllers else "mount cgroup2 on /sys/fs/cgroup to use limits"}


def nftables() -> dict[str, Any]:
    loaded = os.path.isdir("/sys/module/nf_tables")
    # (a user's PATH often lacks the sbin directories that hold it)
    nft = shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin")
    pymod = os.path.exists("/usr/lib/python3/dist-packages/nftables")
    # (a module built into the kernel has no /sys/module entry unless it has parameters)
    detail = ", ".join(x for x in ("nf_tables loaded" if loaded else
                                   "nf_tables not among the loaded modules (built in, or it loads on first use)",
                                   f"nft at {nft}" if nft else "no nft binary",
                                   "python3-nftables" if pymod else "no python3-nftables") if x)
    ok = bool(nft or pymod)
    return {"ok": ok, "detail": detail,
            "hint": None if ok else "apt-get install nftables python3-nftables (needed for nat and ports)"}


def seccomp() -> dict[str, Any]:
    status = _read("/proc/self/status") or ""
    if "Seccomp:" not in status:
        return {"ok": False, "detail": "not built into this kernel", "hint": "CONFIG_SECCOMP_FILTER is needed; set security.seccomp: off"}
    actions = _read("/proc/sys/kernel/seccomp/actions_avail")
    lib = os.path.exists("/usr/lib/python3/dist-packages") and any(
        n.startswith("seccomp") for n in os.listdir("/usr/lib/python3/dist-packages"))
    return {"ok": True, "detail": f"filter mode; actions: {actions or '?'}"
            + ("" if lib else "; python3-seccomp not installed (raw BPF only)")}


def landlock() -> dict[str, Any]:
    from vbdecl.sys.landlock import abi_version

    abi = abi_version()
    if abi > 0:
        return {"ok": True, "abi": abi, "detail": f"ABI {abi}"}
    lsm = _read("/sys/kernel/security/lsm") or "?"
    return {"ok": False, "abi": 0, "detail": f"not enabled (active LSMs: {lsm})",
            "hint": "boot with lsm=landlock,... or set security.landlock.optional: true"}


def all_checks() -> dict[str, dict[str, Any]]:
    checks: dict[str, dict[str, Any]] = {"kernel": kernel()}
    for kind in ("user", "pid", "mount", "uts", "ipc", "net", "cgroup"):
        checks[f"namespace.{kind}"] = namespace(kind)
    checks["namespace.user-unprivileged"] = unprivileged_userns()
    checks["cgroups"] = cgroups()
    checks["overlayfs"] = overlayfs()
    checks["nftables"] = nftables()
    checks["seccomp"] = seccomp()
    checks["landlock"] = landlock()
    return checks
