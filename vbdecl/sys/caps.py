"""Capabilities and user namespaces as this process has them.

Thin, errno-faithful helpers: each raises :class:`~vbdecl.errors.SysError`
naming the call on failure. Capability sets are Python ints used as bit
masks (bit N = capability number N). The policy (which capabilities to keep)
lives in :mod:`vbdecl.ops.sec`; the process makes the changes (ids,
capability sets, no_new_privs) in its last steps, :mod:`vbdecl.sys.laststep`.
"""

from __future__ import annotations

import _struct as struct
import errno

from vbdecl.sys import oslite as os
from vbdecl.sys.raw import check, raise_errno, syscall

PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
CAP_SETPCAP = 8

_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def _raw_prctl(option: int, a2: int = 0, a3: int = 0, a4: int = 0, a5: int = 0) -> int:
    return syscall("prctl", option, a2, a3, a4, a5)


# struct __user_cap_header_struct (version 3, this thread), then two
# struct __user_cap_data_struct {effective, permitted, inheritable}: the low
# and the high 32 capabilities.
_CAP_HEADER = struct.pack("=Ii", _LINUX_CAPABILITY_VERSION_3, 0)
_CAP_DATA = struct.Struct("=IIIIII")


_last_cap: int | None = None


def last_cap() -> int:
    """The highest capability number the running kernel knows (asked once), from the
    kernel itself: PR_CAPBSET_READ refuses a number above it. Never from
    /proc/sys/kernel/cap_last_cap, which in a sandbox's root is the sandbox's file (a
    review planted "0" there, and the bounding set was not cut)."""
    global _last_cap
    if _last_cap is None:
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
    """Set the calling thread's capability sets (each within the permitted one)."""
    data = _CAP_DATA.pack(effective & 0xFFFFFFFF, permitted & 0xFFFFFFFF, inheritable & 0xFFFFFFFF,
                          effective >> 32, permitted >> 32, inheritable >> 32)
    check(syscall("capset", bytearray(_CAP_HEADER), data), "capset")


def drop_bounding(keep: int) -> None:
    """Drop every capability but those in ``keep`` from the bounding set (needs
    CAP_SETPCAP effective)."""
    n = 0
    while (held := _raw_prctl(PR_CAPBSET_READ, n)) >= 0:
        if held and not keep >> n & 1:
            check(_raw_prctl(PR_CAPBSET_DROP, n), "prctl(PR_CAPBSET_DROP)")
        n += 1


def set_no_new_privs() -> None:
    """PR_SET_NO_NEW_PRIVS: no execve of ours (or our children's) gains privileges."""
    check(_raw_prctl(PR_SET_NO_NEW_PRIVS, 1), "prctl(PR_SET_NO_NEW_PRIVS)")


def drop_all() -> None:
    """Keep no capability and gain none ever again: no_new_privs, the bounding set
    emptied (while CAP_SETPCAP is still effective), the ambient set cleared, then
    effective, permitted and inheritable emptied."""
    set_no_new_privs()
    effective, _, _ = capget()
    if effective >> CAP_SETPCAP & 1:
        drop_bounding(0)
    check(_raw_prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL), "prctl(PR_CAP_AMBIENT_CLEAR_ALL)")
    capset(0, 0, 0)


def map_hint() -> str | None:
    """Why a uid or gid change can fail in a user namespace, as a hint (None elsewhere)."""
    if in_initial_user_ns():
        return None
    return ("the id is not mapped in this user namespace: add it to spec.idmap "
            "(or use the id the caller is mapped to)")


def in_initial_user_ns(proc_dir: int | None = None) -> bool:
    """True when the caller is in the host's (initial) user namespace.

    The initial namespace maps the whole id range onto itself; any other
    namespace shows a narrower map. Without /proc, assume the initial one
    (callers use this to refuse host-wide changes, so erring this way is safe).
    Read with os.read: the root builder asks in a forked child, where a text
    file object's machinery would cost copy-on-write faults. ``proc_dir``: an fd
    of a /proc to read instead of the one at /proc (the host's, kept by a process
    that entered an environment).
    """
    try:
        fd = os.open("self/uid_map" if proc_dir is not None else "/proc/self/uid_map",
                     os.O_RDONLY | os.O_CLOEXEC, dir_fd=proc_dir)
    except OSError:
        return True
    try:
        fields = os.read(fd, 4096).split()
    except OSError:
        return True
    finally:
        os.close(fd)
    return fields == [b"0", b"0", b"4294967295"]


def caps_of_status(text: str) -> dict[str, int]:
    """Parse the Cap* lines of a /proc/PID/status text into masks (for tests and doctor)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("Cap"):
            key, _, value = line.partition(":")
            out[key] = int(value.strip(), 16)
    return out


MAX_USER_NAMESPACES = "/proc/sys/user/max_user_namespaces"


def set_max_user_namespaces(limit: int, proc_dir: int | None = None) -> None:
    """Write user.max_user_namespaces of the caller's user namespace.

    The sysctl is per user namespace (the one of the writing process, whichever
    /proc it writes through: ``proc_dir``, see :func:`in_initial_user_ns`), and a
    limit counts every namespace created below it; so 0 here refuses nested
    user namespaces for everything inside, and cannot be raised again without
    CAP_SYS_RESOURCE in this namespace.
    """
    try:
        fd = os.open(MAX_USER_NAMESPACES.removeprefix("/proc/") if proc_dir is not None
                     else MAX_USER_NAMESPACES, os.O_WRONLY | os.O_CLOEXEC, dir_fd=proc_dir)
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
