"""The shared ctypes handle on libc and errno-faithful call checking.

One helper per syscall lives in the family module that needs it
(``sys.mount``, ``sys.ns``, ``sys.caps``, ...); they all use :func:`check`
so that every failure becomes a :class:`~vbdecl.errors.SysError` that names
the call, its arguments and the errno, with a hint where one helps.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import os

libc = ctypes.CDLL(None, use_errno=True)

ARCH = os.uname().machine   # = platform.machine(), without importing platform (its regexes)

# Syscall numbers for calls glibc 2.36 has no wrapper for, by architecture.
_SYSCALLS: dict[str, dict[str, int]] = {
    "x86_64": {
        "pivot_root": 155, "setns": 308, "pidfd_open": 434, "pidfd_send_signal": 424,
        "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
        "fspick": 433, "mount_setattr": 442, "openat2": 437, "close_range": 436,
        "clone3": 435, "landlock_create_ruleset": 444, "landlock_add_rule": 445,
        "landlock_restrict_self": 446, "seccomp": 317,
    },
    "aarch64": {
        "pivot_root": 41, "setns": 268, "pidfd_open": 434, "pidfd_send_signal": 424,
        "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
        "fspick": 433, "mount_setattr": 442, "openat2": 437, "close_range": 436,
        "clone3": 435, "landlock_create_ruleset": 444, "landlock_add_rule": 445,
        "landlock_restrict_self": 446, "seccomp": 277,
    },
}


def syscall_number(name: str) -> int:
    try:
        return _SYSCALLS[ARCH][name]
    except KeyError:
        raise OSError(_errno.ENOSYS, f"vbdecl does not know syscall {name} on {ARCH}") from None


_HINTS = {
    _errno.EPERM: "this needs privileges: run as root, or enable namespaces.user for an unprivileged sandbox",
    _errno.EACCES: "permission denied: check the path's permissions and whether you run as root",
    _errno.ENOSYS: "the running kernel does not support this call",
}


def check(ret: int, what: str, *, hint: str | None = None) -> int:
    """Return ``ret``, or raise SysError naming ``what`` if the call failed (ret == -1)."""
    if ret == -1:
        raise_errno(what, hint=hint)
    return ret


def raise_errno(what: str, err: int | None = None, *, hint: str | None = None) -> None:
    from vbdecl.errors import SysError

    code = ctypes.get_errno() if err is None else err
    raise SysError(f"{what}: {os.strerror(code)} ({_errno.errorcode.get(code, code)})",
                   errno=code, hint=hint or _HINTS.get(code))


def syscall(name: str, *args: object) -> int:
    """Raw syscall by name; returns the result (-1 with errno set on failure)."""
    result: int = libc.syscall(syscall_number(name), *args)
    return result
