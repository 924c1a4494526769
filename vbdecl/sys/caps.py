"""Capabilities, securebits, no_new_privs and credential changes.

Thin, errno-faithful helpers: each raises :class:`~vbdecl.errors.SysError`
naming the call on failure. Capability sets are Python ints used as bit
masks (bit N = capability number N). The policy (which capabilities to keep,
in which order to call these) lives in :mod:`vbdecl.ops.sec`.
"""

from __future__ import annotations

import errno
import os
import struct

from vbdecl.sys.raw import check, raise_errno, syscall

PR_GET_KEEPCAPS = 7
PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_GET_SECUREBITS = 27
PR_SET_SECUREBITS = 28
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_IS_SET = 1
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_LOWER = 3
PR_CAP_AMBIENT_CLEAR_ALL = 4

# securebits (linux/securebits.h)
SECBIT_NOROOT = 1 << 0
SECBIT_NOROOT_LOCKED = 1 << 1
SECBIT_NO_SETUID_FIXUP = 1 << 2
SECBIT_NO_SETUID_FIXUP_LOCKED = 1 << 3
SECBIT_KEEP_CAPS = 1 << 4
SECBIT_KEEP_CAPS_LOCKED = 1 << 5
SECBIT_NO_CAP_AMBIENT_RAISE = 1 << 6
SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED = 1 << 7

_LINUX_CAPABILITY_VERSION_3 = 0x20080522



def _raw_prctl(option: int, a2: int = 0, a3: int = 0, a4: int = 0, a5: int = 0) -> int:
    return syscall("prctl", option, a2, a3, a4, a5)


# struct __user_cap_header_struct (version 3, this thread), then two
# struct __user_cap_data_struct {effective, permitted, inheritable}: the low
# and the high 32 capabilities.
_CAP_HEADER = struct.pack("=Ii", _LINUX_CAPABILITY_VERSION_3, 0)
_CAP_DATA = struct.Struct("=IIIIII")


def _prctl(option: int, a2: int = 0, a3: int = 0, a4: int = 0, a5: int = 0, *, what: str) -> int:
    return check(_raw_prctl(option, a2, a3, a4, a5), what)


_last_cap: int | None = None


def last_cap() -> int:
    """The highest capability number the running kernel knows (read once)."""
    global _last_cap
    if _last_cap is None:
        try:
            with open("/proc/sys/kernel/cap_last_cap") as f:
                _last_cap = int(f.read())
        except OSError:
            # /proc may not be mounted inside a fresh root: probe the bounding set.
            n = 0
            while _raw_prctl(PR_CAPBSET_READ, n + 1) >= 0:
                n += 1
            _last_cap = n
    return _last_cap


def capget() -> tuple[int, int, int]:
    """(effective, permitted, inheritable) of the calling thread."""
    data = bytearray(_CAP_DATA.size)
    check(syscall("capget", bytearray(_CAP_HEADER), data), "capget")
    eff, prm, inh, eff_hi, prm_hi, inh_hi = _CAP_DATA.unpack(data)
    return eff | eff_hi << 32, prm | prm_hi << 32, inh | inh_hi << 32


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set the calling thread's effective, permitted and inheritable sets."""
    m = 0xFFFFFFFF
    data = _CAP_DATA.pack(effective & m, permitted & m, inheritable & m,
                          (effective >> 32) & m, (permitted >> 32) & m, (inheritable >> 32) & m)
    check(syscall("capset", bytearray(_CAP_HEADER), data),
          f"capset(effective={effective:#x}, permitted={permitted:#x}, inheritable={inheritable:#x})",
          hint="a capability can only be kept if the process holds it (permitted set); "
               "run as root or in a user namespace")


def bounding_has(cap: int) -> bool:
    ret = _raw_prctl(PR_CAPBSET_READ, cap)
    if ret < 0:
        if ret == -errno.EINVAL:
            return False
        raise_errno(f"prctl(PR_CAPBSET_READ, {cap})", -ret)
    return bool(ret)


def bounding_drop(cap: int) -> None:
    _prctl(PR_CAPBSET_DROP, cap, what=f"prctl(PR_CAPBSET_DROP, {cap})")


def ambient_clear() -> None:
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, what="prctl(PR_CAP_AMBIENT_CLEAR_ALL)")


def ambient_raise(cap: int) -> None:
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap,
           what=f"prctl(PR_CAP_AMBIENT_RAISE, {cap})")


def set_keepcaps(on: bool) -> None:
    _prctl(PR_SET_KEEPCAPS, int(on), what=f"prctl(PR_SET_KEEPCAPS, {int(on)})")


def set_no_new_privs() -> None:
    _prctl(PR_SET_NO_NEW_PRIVS, 1, what="prctl(PR_SET_NO_NEW_PRIVS, 1)")


def _map_hint() -> str | None:
    if not _in_user_ns():
        return None
    return ("the id is not mapped in this user namespace: add it to spec.idmap "
            "(or use the id the caller is mapped to)")


def setgroups(groups: list[int]) -> None:
    try:
        os.setgroups(groups)
    except OSError as e:
        raise_errno(f"setgroups({groups})", e.errno or 0)


def setresgid(gid: int) -> None:
    try:
        os.setresgid(gid, gid, gid)
    except OSError as e:
        raise_errno(f"setresgid({gid}, {gid}, {gid})", e.errno or 0, hint=_map_hint())


def setresuid(uid: int) -> None:
    try:
        os.setresuid(uid, uid, uid)
    except OSError as e:
        raise_errno(f"setresuid({uid}, {uid}, {uid})", e.errno or 0, hint=_map_hint())


def setgroups_allowed() -> bool:
    """False when this user namespace has ``setgroups`` denied (unprivileged maps)."""
    try:
        with open("/proc/self/setgroups") as f:
            return f.read().strip() != "deny"
    except OSError:
        return True


def _in_user_ns() -> bool:
    return not in_initial_user_ns()


def in_initial_user_ns() -> bool:
    """True when the caller is in the host's (initial) user namespace.

    The initial namespace maps the whole id range onto itself; any other
    namespace shows a narrower map. Without /proc, assume the initial one
    (callers use this to refuse host-wide changes, so erring this way is safe).
    """
    try:
        with open("/proc/self/uid_map") as f:
            fields = f.read().split()
    except OSError:
        return True
    return fields == ["0", "0", "4294967295"]


def caps_of_status(text: str) -> dict[str, int]:
    """Parse the Cap* lines of a /proc/PID/status text into masks (for tests and doctor)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("Cap"):
            key, _, value = line.partition(":")
            out[key] = int(value.strip(), 16)
    return out


MAX_USER_NAMESPACES = "/proc/sys/user/max_user_namespaces"
CLONE_NEWUSER = 0x10000000


def set_max_user_namespaces(limit: int) -> None:
    """Write user.max_user_namespaces of the caller's user namespace.

    The sysctl is per user namespace (the one of the writing process), and a
    limit counts every namespace created below it; so 0 here refuses nested
    user namespaces for everything inside, and cannot be raised again without
    CAP_SYS_RESOURCE in this namespace.
    """
    try:
        fd = os.open(MAX_USER_NAMESPACES, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as e:
        raise_errno(f"open({MAX_USER_NAMESPACES})", e.errno or errno.ENOENT,
                    hint="mount /proc in the environment (a `proc` filesystem entry), or let the "
                         "runtime call vbdecl.ops.sec.prepare_in_child before pivot_root")
        return
    try:
        os.write(fd, f"{limit}\n".encode())
    except OSError as e:
        raise_errno(f"write({MAX_USER_NAMESPACES}, {limit})", e.errno or errno.EPERM,
                    hint="needs CAP_SYS_RESOURCE in the environment's user namespace")
    finally:
        os.close(fd)


def userns_creation_blocked() -> bool:
    """True when a child of the caller cannot create a user namespace."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 0 if syscall("unshare", CLONE_NEWUSER) < 0 else 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0
