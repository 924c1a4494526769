"""Landlock: ABI detection, rulesets, path and port rules (the process enforces
its ruleset with landlock_restrict_self in vbdecl.sys.laststep).

The access-right constants follow linux/landlock.h. :func:`fs_rights` and
:func:`net_rights` give every right the running ABI knows, so a ruleset that
handles them all denies whatever no rule grants.
"""

from __future__ import annotations

import _struct as struct
import errno
import os
import stat

from vbdecl.sys.raw import check, raise_errno, syscall

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

LANDLOCK_CREATE_RULESET_VERSION = 1 << 0

LANDLOCK_RULE_PATH_BENEATH = 1
LANDLOCK_RULE_NET_PORT = 2

# Filesystem rights (ABI in which they appeared).
EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
READ_DIR = 1 << 3
REMOVE_DIR = 1 << 4
REMOVE_FILE = 1 << 5
MAKE_CHAR = 1 << 6
MAKE_DIR = 1 << 7
MAKE_REG = 1 << 8
MAKE_SOCK = 1 << 9
MAKE_FIFO = 1 << 10
MAKE_BLOCK = 1 << 11
MAKE_SYM = 1 << 12
REFER = 1 << 13        # ABI 2
TRUNCATE = 1 << 14     # ABI 3
IOCTL_DEV = 1 << 15    # ABI 5

# Network rights (ABI 4).
BIND_TCP = 1 << 0
CONNECT_TCP = 1 << 1

# Scopes (ABI 6).
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
SCOPE_SIGNAL = 1 << 1

# Rights that apply to a non-directory (the kernel refuses the others on files).
FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV

FS_NAMES: dict[str, int] = {
    "execute": EXECUTE, "write_file": WRITE_FILE, "read_file": READ_FILE,
    "read_dir": READ_DIR, "remove_dir": REMOVE_DIR, "remove_file": REMOVE_FILE,
    "make_char": MAKE_CHAR, "make_dir": MAKE_DIR, "make_reg": MAKE_REG,
    "make_sock": MAKE_SOCK, "make_fifo": MAKE_FIFO, "make_block": MAKE_BLOCK,
    "make_sym": MAKE_SYM, "refer": REFER, "truncate": TRUNCATE, "ioctl_dev": IOCTL_DEV,
}


# struct landlock_ruleset_attr {handled_access_fs, handled_access_net, scoped}
_RULESET_ATTR = struct.Struct("=QQQ")
# struct landlock_path_beneath_attr {allowed_access, parent_fd} (packed)
_PATH_BENEATH_ATTR = struct.Struct("=Qi")
# struct landlock_net_port_attr {allowed_access, port}
_NET_PORT_ATTR = struct.Struct("=QQ")


_abi: int | None = None


def abi_version() -> int:
    """The Landlock ABI of the running kernel; 0 when Landlock is unavailable."""
    global _abi
    if _abi is None:
        ret = syscall("landlock_create_ruleset", None, 0, LANDLOCK_CREATE_RULESET_VERSION)
        _abi = ret if ret > 0 else 0
    return _abi


def fs_rights(abi: int) -> int:
    """Every filesystem right ABI ``abi`` knows."""
    if abi < 1:
        return 0
    mask = (1 << 13) - 1
    if abi >= 2:
        mask |= REFER
    if abi >= 3:
        mask |= TRUNCATE
    if abi >= 5:
        mask |= IOCTL_DEV
    return mask


def net_rights(abi: int) -> int:
    return BIND_TCP | CONNECT_TCP if abi >= 4 else 0


def scopes(abi: int) -> int:
    return SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0


def create_ruleset(handled_fs: int, handled_net: int = 0, scoped: int = 0) -> int:
    """A new ruleset fd (close-on-exec) handling the given rights."""
    attr = _RULESET_ATTR.pack(handled_fs, handled_net, scoped)
    return check(
        syscall("landlock_create_ruleset", attr, len(attr), 0),
        f"landlock_create_ruleset(fs={handled_fs:#x}, net={handled_net:#x}, scoped={scoped:#x})",
        hint="the kernel lacks Landlock (or this ABI's rights); set security.landlock.optional: "
             "true for best effort")


def add_path_rule(ruleset_fd: int, path: str, access: int,
                  opener: Callable[[str], int] | None = None, *, where: str = "landlock rule") -> int:
    """Grant ``access`` beneath ``path`` (opened with ``opener``, an O_PATH fd; by
    default following symlinks); on a non-directory only the file rights apply.
    ``where``: the rule's key, which errors name (``security.landlock.read[0]``).

    Returns the access actually granted (masked for files).
    """
    try:
        fd = opener(path) if opener is not None else os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError as e:
        why = getattr(e, "hint", None) if e.errno == errno.ELOOP else None     # (a link refused)
        raise_errno(f"{where}: {path!r} inside the environment", e.errno or errno.ENOENT,
                    hint=why or "the path must exist inside the environment: create it with a "
                    "filesystem entry, or remove it from security.landlock")
        raise  # unreachable
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            access &= FILE_RIGHTS
        if access:
            attr = _PATH_BENEATH_ATTR.pack(access, fd)
            check(syscall("landlock_add_rule", ruleset_fd, LANDLOCK_RULE_PATH_BENEATH, attr, 0),
                  f"{where}: landlock_add_rule({path!r}, access={access:#x})")
    finally:
        os.close(fd)
    return access


def add_port_rule(ruleset_fd: int, port: int, access: int) -> None:
    attr = _NET_PORT_ATTR.pack(access, port)
    check(syscall("landlock_add_rule", ruleset_fd, LANDLOCK_RULE_NET_PORT, attr, 0),
          f"landlock_add_rule(port={port}, access={access:#x})",
          hint="port rules need Landlock ABI 4 (Linux 6.7)")
