"""Mount syscalls: mount(2), umount2, pivot_root, the new mount API and openat2.

One errno-faithful helper per syscall; every failure raises
:class:`~vbdecl.errors.SysError` naming the call and its arguments.
Everything that takes a path also takes a directory fd, so callers can work
on fds (``openat2`` with ``RESOLVE_IN_ROOT``, then ``move_mount`` /
``mount_setattr`` on the fd) and never resolve a path twice.

This module only imports errno, _struct and vbdecl's oslite: it is on the run path.
"""

from __future__ import annotations

import _struct as struct
import errno

from vbdecl.sys import oslite as os
from vbdecl.sys.raw import raise_errno, syscall

# mount(2) flags
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_SILENT = 0x8000
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20

MNT_DETACH = 0x2
UMOUNT_NOFOLLOW = 0x8

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000

OPEN_TREE_CLONE = 0x1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC

MOVE_MOUNT_F_SYMLINKS = 0x1
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_T_SYMLINKS = 0x10
MOVE_MOUNT_T_EMPTY_PATH = 0x40

MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR_NOSYMFOLLOW = 0x200000

FSOPEN_CLOEXEC = 0x1
FSMOUNT_CLOEXEC = 0x1

FSCONFIG_SET_FLAG = 0
FSCONFIG_SET_STRING = 1
FSCONFIG_SET_PATH = 3
FSCONFIG_SET_FD = 5
FSCONFIG_CMD_CREATE = 6
FSCONFIG_CMD_RECONFIGURE = 7

FSPICK_CLOEXEC = 0x1
FSPICK_EMPTY_PATH = 0x8

RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

STATX_MNT_ID = 0x1000
STATX_ATTR_MOUNT_ROOT = 0x2000


def _b(path: str | None) -> bytes | None:
    return None if path is None else os.fsencode(path)


def _hint_for(err: int) -> str | None:
    if err == errno.ENOENT:
        return "the path does not exist: check it (a source is a host path, a target one inside the environment)"
    if err == errno.ENOTDIR:
        return "a path component is not a directory"
    if err == errno.EXDEV or err == errno.ELOOP:
        return "the path leaves the environment's root or crosses a symlink it may not follow"
    return None


def _sys(name: str, what: str, *args: int | bytes | bytearray | None) -> int:
    ret = syscall(name, *args)
    if ret < 0:
        raise_errno(what, -ret, hint=_hint_for(-ret))
    return ret


# --- mount(2) family ----------------------------------------------------------

def mount(source: str | None, target: str, fstype: str | None = None, flags: int = 0,
          data: str | None = None) -> None:
    _sys("mount", f"mount({source!r}, {target!r}, {fstype!r}, {flags:#x}, {data!r})",
         _b(source), _b(target), _b(fstype), flags, _b(data))


def umount2(target: str, flags: int = 0) -> None:
    _sys("umount2", f"umount2({target!r}, {flags:#x})", _b(target), flags)


def pivot_root(new_root: str, put_old: str) -> None:
    _sys("pivot_root", f"pivot_root({new_root!r}, {put_old!r})", _b(new_root), _b(put_old))


# --- the new mount API --------------------------------------------------------

_MOUNT_ATTR = struct.Struct("=QQQQ")     # struct mount_attr
_OPEN_HOW = struct.Struct("=QQQ")        # struct open_how


def open_tree(dirfd: int, path: str, flags: int) -> int:
    """A new fd on the mount at path (OPEN_TREE_CLONE: a detached copy)."""
    return _sys("open_tree", f"open_tree({dirfd}, {path!r}, {flags:#x})", dirfd, _b(path), flags)


def clone_tree(fd: int, *, recursive: bool = True) -> int:
    """A detached copy of the mount tree at ``fd`` (an O_PATH fd), close-on-exec."""
    flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH
    if recursive:
        flags |= AT_RECURSIVE
    return open_tree(fd, "", flags)


def reopen_read_only(fd: int) -> int:
    """A new open file description of the object ``fd`` is open on, with its access mode
    and status flags, through a detached read-only, nosuid, noexec bind of that object
    alone: its mode, owner and times cannot be changed through the new fd, nor through
    ``/proc/self/fd`` (EROFS), nor can it be opened there again for writing, but
    a device (a terminal, /dev/null) reads and writes as before. Needs CAP_SYS_ADMIN
    over the mount; raises OSError where that, or the object (a pipe, a socket: no
    mount of theirs may be cloned), refuses. Close-on-exec."""
    import fcntl

    mnt = clone_tree(fd, recursive=False)
    try:
        set_attrs(mnt, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC, recursive=False)
        flags = fcntl.fcntl(fd, fcntl.F_GETFL) & (os.O_ACCMODE | os.O_APPEND | os.O_NONBLOCK)
        # (opened without blocking: a serial line's open waits for its carrier)
        new = os.open(f"/proc/self/fd/{mnt}", flags | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    finally:
        os.close(mnt)
    if not flags & os.O_NONBLOCK:
        try:
            fcntl.fcntl(new, fcntl.F_SETFL, flags)
        except OSError:
            os.close(new)
            raise
    return new


def move_mount(from_fd: int, from_path: str, to_fd: int, to_path: str, flags: int) -> None:
    _sys("move_mount", f"move_mount({from_fd}, {from_path!r}, {to_fd}, {to_path!r}, {flags:#x})",
         from_fd, _b(from_path), to_fd, _b(to_path), flags)


def attach(mnt_fd: int, target_fd: int) -> None:
    """Attach the (detached) mount ``mnt_fd`` on the object ``target_fd`` refers to."""
    move_mount(mnt_fd, "", target_fd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH)


def mount_setattr(fd: int, path: str, flags: int, attr_set: int = 0, attr_clr: int = 0,
                  propagation: int = 0) -> None:
    attr = _MOUNT_ATTR.pack(attr_set, attr_clr, propagation, 0)
    _sys("mount_setattr",
         f"mount_setattr({fd}, {path!r}, {flags:#x}, set={attr_set:#x}, clr={attr_clr:#x})",
         fd, _b(path), flags, attr, len(attr))


def set_attrs(fd: int, attr_set: int, attr_clr: int = 0, *, recursive: bool = True) -> None:
    flags = AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)
    mount_setattr(fd, "", flags, attr_set, attr_clr)


def fsopen(fstype: str) -> int:
    return _sys("fsopen", f"fsopen({fstype!r})", _b(fstype), FSOPEN_CLOEXEC)


def _fs_log(fsfd: int) -> str:
    """The messages the filesystem context logged (read(2) on the fs fd)."""
    lines = []
    for _ in range(16):
        try:
            msg = os.read(fsfd, 1024)
        except OSError:
            break
        if not msg:
            break
        # (each message begins with its level: "e ", "w " or "i ")
        lines.append(msg.decode(errors="replace").strip().removeprefix("e ").removeprefix("w ")
                     .removeprefix("i "))
    return "; ".join(lines)


def fsconfig(fsfd: int, cmd: int, key: str | None = None, value: str | bytes | None = None,
             aux: int = 0) -> None:
    val = os.fsencode(value) if isinstance(value, str) else value
    ret = syscall("fsconfig", fsfd, cmd, _b(key), val, aux)
    if ret < 0:
        err = -ret
        log = _fs_log(fsfd)
        if cmd in (FSCONFIG_CMD_CREATE, FSCONFIG_CMD_RECONFIGURE):
            # (no key: the step that checks the options together and makes the filesystem)
            what = f"the kernel refused its options (fsconfig {'CREATE' if cmd == FSCONFIG_CMD_CREATE else 'RECONFIGURE'})"
        else:
            shown = value if cmd != FSCONFIG_SET_FD else f"fd {aux}"
            what = f"fsconfig({key!r}={shown!r})"
        raise_errno(what + (f" [{log}]" if log else ""), err, hint=_hint_for(err))


def reconfigure(fd: int, options: list[tuple[str, str]]) -> None:
    """Set ``options`` of the filesystem mounted at ``fd`` (an O_PATH fd on a mount's
    root; fspick), as ``mount -o remount,...`` would, without touching the mount's own
    flags (nosuid, nodev, ...)."""
    fsfd = _sys("fspick", f"fspick(fd {fd})", fd, b"", FSPICK_CLOEXEC | FSPICK_EMPTY_PATH)
    try:
        for key, value in options:
            fsconfig(fsfd, FSCONFIG_SET_STRING, key, value)
        fsconfig(fsfd, FSCONFIG_CMD_RECONFIGURE)
    finally:
        os.close(fsfd)


def fsmount(fsfd: int, attr_flags: int = 0) -> int:
    return _sys("fsmount", f"fsmount({fsfd}, {attr_flags:#x})", fsfd, FSMOUNT_CLOEXEC, attr_flags)


def new_mount(fstype: str, options: list[tuple[str, str | int | None]], attr_flags: int = 0,
              source: str | None = None) -> int:
    """A detached mount of a fresh ``fstype`` instance; returns its (close-on-exec) fd.

    ``options`` are applied in order: a ``None`` value sets a flag, an ``int``
    passes an fd (FSCONFIG_SET_FD), a ``str`` a string.
    """
    fsfd = fsopen(fstype)
    try:
        if source is not None:
            fsconfig(fsfd, FSCONFIG_SET_STRING, "source", source)
        for key, value in options:
            if value is None:
                fsconfig(fsfd, FSCONFIG_SET_FLAG, key)
            elif isinstance(value, int):
                fsconfig(fsfd, FSCONFIG_SET_FD, key, None, value)
            else:
                fsconfig(fsfd, FSCONFIG_SET_STRING, key, value)
        try:
            fsconfig(fsfd, FSCONFIG_CMD_CREATE)
        except OSError as exc:
            what = f"creating {'an' if fstype[:1] in 'aeiou' else 'a'} {fstype} mount"
            exc.args = (f"{what}: {exc}",)
            if hasattr(exc, "message"):
                exc.message = f"{what}: {exc.message}"
            raise
        return fsmount(fsfd, attr_flags)
    finally:
        os.close(fsfd)


# --- path resolution ----------------------------------------------------------

def openat2(dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = 0, *,
            missing_ok: bool = False) -> int:
    """openat2(2), close-on-exec. With ``missing_ok`` a missing path is -1, not an
    error: callers that look before they create skip the exception's cost."""
    how = _OPEN_HOW.pack(flags | os.O_CLOEXEC,
                         mode if flags & (os.O_CREAT | os.O_TMPFILE) else 0, resolve)
    ret = syscall("openat2", dirfd, _b(path), how, len(how))
    if ret < 0:
        if missing_ok and ret == -errno.ENOENT:
            return -1
        raise_errno(f"openat2({path!r})", -ret, hint=_hint_for(-ret))
    return ret


_openat2_ok: bool | None = None


def openat2_supported() -> bool:
    global _openat2_ok
    if _openat2_ok is None:
        try:
            os.close(openat2(AT_FDCWD, "/", os.O_PATH, 0, RESOLVE_IN_ROOT))
            _openat2_ok = True
        except OSError as exc:
            _openat2_ok = exc.errno not in (errno.ENOSYS, errno.EPERM)
    return _openat2_ok


# struct statx: the u64 fields vbdecl reads, by offset, in a 256-byte buffer.
_STATX_SIZE = 256
_U64 = struct.Struct("=Q")
_STATX_ATTRIBUTES, _STATX_ATTRIBUTES_MASK, _STATX_MNT_ID = 8, 56, 144


def statx_fd(fd: int) -> tuple[int, int, int]:
    """(attributes, attributes_mask, mnt_id) of the object ``fd`` refers to."""
    buf = bytearray(_STATX_SIZE)
    _sys("statx", f"statx(fd {fd})", fd, b"", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, STATX_MNT_ID, buf)
    return (_U64.unpack_from(buf, _STATX_ATTRIBUTES)[0],
            _U64.unpack_from(buf, _STATX_ATTRIBUTES_MASK)[0], _U64.unpack_from(buf, _STATX_MNT_ID)[0])


def is_mount_root(fd: int) -> bool:
    """True when ``fd`` refers to the root of a mount (a mount point)."""
    attributes, mask, mnt_id = statx_fd(fd)
    if mask & STATX_ATTR_MOUNT_ROOT:
        return bool(attributes & STATX_ATTR_MOUNT_ROOT)
    # Old kernel: compare the mount id with the parent's.
    parent = os.open("..", os.O_PATH | os.O_CLOEXEC, dir_fd=fd)
    try:
        return statx_fd(parent)[2] != mnt_id
    finally:
        os.close(parent)


def fchmod_path_fd(fd: int, mode: int, *, through_proc: bool = True) -> None:
    """chmod the object an O_PATH fd refers to (never follows a symlink). Kernels
    without fchmodat2 (before 6.6) go through /proc/self/fd, unless not ``through_proc``
    (where /proc may be a sandbox's: then ENOSYS)."""
    ret = syscall("fchmodat2", fd, b"", mode, AT_EMPTY_PATH)
    if ret == 0:
        return
    err = -ret
    if err not in (errno.ENOSYS, errno.EINVAL, errno.EBADF) or not through_proc:
        raise_errno(f"fchmodat2(fd {fd}, {mode:#o})", err)
    # Older kernels: go through a real fd.
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    real = os.open(".", flags, dir_fd=fd) if _is_dir(fd) else None
    if real is None:
        real = os.open(f"/proc/self/fd/{fd}", flags)
    try:
        os.fchmod(real, mode)
    finally:
        os.close(real)


def _is_dir(fd: int) -> bool:
    import stat

    return stat.S_ISDIR(os.fstat(fd).st_mode)
