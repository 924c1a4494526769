"""Mount syscalls: mount(2), umount2, pivot_root, the new mount API and openat2.

One errno-faithful helper per syscall; every failure raises
:class:`~vbdecl.errors.SysError` naming the call and its arguments.
Everything that takes a path also takes a directory fd, so callers can work
on fds (``openat2`` with ``RESOLVE_IN_ROOT``, then ``move_mount`` /
``mount_setattr`` on the fd) and never resolve a path twice.

This module only imports ctypes and os: it is on the run path.
"""

from __future__ import annotations

import ctypes
import errno
import os

from vbdecl.sys.libc import check, libc, raise_errno, syscall_number

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

RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

STATX_MNT_ID = 0x1000
STATX_ATTR_MOUNT_ROOT = 0x2000

_c_long = ctypes.c_long
_c_ulong = ctypes.c_ulong


# Syscalls newer than libc's table (same number on x86_64 and aarch64).
_EXTRA_SYSCALLS = {"fchmodat2": 452}


def _nr(name: str) -> int:
    return _EXTRA_SYSCALLS.get(name) or syscall_number(name)


def _b(path: str | None) -> bytes | None:
    return None if path is None else os.fsencode(path)


def _hint_for(err: int) -> str | None:
    if err == errno.ENOENT:
        return "the path does not exist: check the source, or mark the entry optional"
    if err == errno.ENOTDIR:
        return "a path component is not a directory"
    if err == errno.EXDEV or err == errno.ELOOP:
        return "the path leaves the environment's root or crosses a symlink it may not follow"
    return None


def _sys(name: str, what: str, *args: object) -> int:
    ret: int = libc.syscall(_c_long(syscall_number(name)), *args)
    if ret == -1:
        err = ctypes.get_errno()
        raise_errno(what, err, hint=_hint_for(err))
    return ret


# --- mount(2) family ----------------------------------------------------------

libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, _c_ulong, ctypes.c_char_p]
libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def mount(source: str | None, target: str, fstype: str | None = None, flags: int = 0,
          data: str | None = None) -> None:
    ret = libc.mount(_b(source), _b(target), _b(fstype), _c_ulong(flags), _b(data))
    if ret == -1:
        err = ctypes.get_errno()
        raise_errno(f"mount({source!r}, {target!r}, {fstype!r}, {flags:#x}, {data!r})", err,
                    hint=_hint_for(err))


def umount2(target: str, flags: int = 0) -> None:
    check(libc.umount2(_b(target), flags), f"umount2({target!r}, {flags:#x})")


def pivot_root(new_root: str, put_old: str) -> None:
    _sys("pivot_root", f"pivot_root({new_root!r}, {put_old!r})",
         ctypes.c_char_p(_b(new_root)), ctypes.c_char_p(_b(put_old)))


# --- the new mount API --------------------------------------------------------

class MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


class OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


def open_tree(dirfd: int, path: str, flags: int) -> int:
    """A new fd on the mount at path (OPEN_TREE_CLONE: a detached copy)."""
    return _sys("open_tree", f"open_tree({dirfd}, {path!r}, {flags:#x})",
                ctypes.c_int(dirfd), ctypes.c_char_p(_b(path)), ctypes.c_uint(flags))


def clone_tree(fd: int, *, recursive: bool = True) -> int:
    """A detached copy of the mount tree at ``fd`` (an O_PATH fd), close-on-exec."""
    flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH
    if recursive:
        flags |= AT_RECURSIVE
    return open_tree(fd, "", flags)


def move_mount(from_fd: int, from_path: str, to_fd: int, to_path: str, flags: int) -> None:
    _sys("move_mount", f"move_mount({from_fd}, {from_path!r}, {to_fd}, {to_path!r}, {flags:#x})",
         ctypes.c_int(from_fd), ctypes.c_char_p(_b(from_path)), ctypes.c_int(to_fd),
         ctypes.c_char_p(_b(to_path)), ctypes.c_uint(flags))


def attach(mnt_fd: int, target_fd: int) -> None:
    """Attach the (detached) mount ``mnt_fd`` on the object ``target_fd`` refers to."""
    move_mount(mnt_fd, "", target_fd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH)


def mount_setattr(fd: int, path: str, flags: int, attr_set: int = 0, attr_clr: int = 0,
                  propagation: int = 0) -> None:
    attr = MountAttr(attr_set, attr_clr, propagation, 0)
    _sys("mount_setattr",
         f"mount_setattr({fd}, {path!r}, {flags:#x}, set={attr_set:#x}, clr={attr_clr:#x})",
         ctypes.c_int(fd), ctypes.c_char_p(_b(path)), ctypes.c_uint(flags),
         ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)))


def set_attrs(fd: int, attr_set: int, attr_clr: int = 0, *, recursive: bool = True) -> None:
    flags = AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)
    mount_setattr(fd, "", flags, attr_set, attr_clr)


def fsopen(fstype: str) -> int:
    return _sys("fsopen", f"fsopen({fstype!r})", ctypes.c_char_p(_b(fstype)),
                ctypes.c_uint(FSOPEN_CLOEXEC))


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
        lines.append(msg.decode(errors="replace").strip())
    return "; ".join(lines)


def fsconfig(fsfd: int, cmd: int, key: str | None = None, value: str | bytes | None = None,
             aux: int = 0) -> None:
    val = os.fsencode(value) if isinstance(value, str) else value
    ret = libc.syscall(_c_long(syscall_number("fsconfig")), ctypes.c_int(fsfd),
                       ctypes.c_uint(cmd), ctypes.c_char_p(_b(key)), ctypes.c_char_p(val),
                       ctypes.c_int(aux))
    if ret == -1:
        err = ctypes.get_errno()
        log = _fs_log(fsfd)
        shown = value if cmd != FSCONFIG_SET_FD else f"fd {aux}"
        raise_errno(f"fsconfig({key!r}={shown!r})" + (f" [{log}]" if log else ""), err,
                    hint=_hint_for(err))


def fsmount(fsfd: int, attr_flags: int = 0) -> int:
    return _sys("fsmount", f"fsmount({fsfd}, {attr_flags:#x})", ctypes.c_int(fsfd),
                ctypes.c_uint(FSMOUNT_CLOEXEC), ctypes.c_uint(attr_flags))


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
            exc.args = (f"creating a {fstype} mount: {exc}",)
            if hasattr(exc, "message"):
                exc.message = f"creating a {fstype} mount: {exc.message}"
            raise
        return fsmount(fsfd, attr_flags)
    finally:
        os.close(fsfd)


# --- path resolution ----------------------------------------------------------

def openat2(dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = 0) -> int:
    how = OpenHow(flags | os.O_CLOEXEC, mode if flags & (os.O_CREAT | os.O_TMPFILE) else 0, resolve)
    return _sys("openat2", f"openat2({path!r})", ctypes.c_int(dirfd),
                ctypes.c_char_p(_b(path)), ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))


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


class Statx(ctypes.Structure):
    _fields_ = [("mask", ctypes.c_uint32), ("blksize", ctypes.c_uint32),
                ("attributes", ctypes.c_uint64), ("nlink", ctypes.c_uint32),
                ("uid", ctypes.c_uint32), ("gid", ctypes.c_uint32), ("mode", ctypes.c_uint16),
                ("_pad1", ctypes.c_uint16), ("ino", ctypes.c_uint64), ("size", ctypes.c_uint64),
                ("blocks", ctypes.c_uint64), ("attributes_mask", ctypes.c_uint64),
                ("_times", ctypes.c_uint8 * 64), ("rdev_major", ctypes.c_uint32),
                ("rdev_minor", ctypes.c_uint32), ("dev_major", ctypes.c_uint32),
                ("dev_minor", ctypes.c_uint32), ("mnt_id", ctypes.c_uint64),
                ("_spare", ctypes.c_uint8 * 112)]


libc.statx.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint,
                       ctypes.POINTER(Statx)]


def statx_fd(fd: int) -> Statx:
    buf = Statx()
    check(libc.statx(fd, b"", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, STATX_MNT_ID, ctypes.byref(buf)),
          f"statx(fd {fd})")
    return buf


def is_mount_root(fd: int) -> bool:
    """True when ``fd`` refers to the root of a mount (a mount point)."""
    st = statx_fd(fd)
    if st.attributes_mask & STATX_ATTR_MOUNT_ROOT:
        return bool(st.attributes & STATX_ATTR_MOUNT_ROOT)
    # Old kernel: compare the mount id with the parent's.
    parent = os.open("..", os.O_PATH | os.O_CLOEXEC, dir_fd=fd)
    try:
        return bool(statx_fd(parent).mnt_id != st.mnt_id)
    finally:
        os.close(parent)


def fchmod_path_fd(fd: int, mode: int) -> None:
    """chmod the object an O_PATH fd refers to (never follows a symlink)."""
    ret = libc.syscall(_c_long(_nr("fchmodat2")), ctypes.c_int(fd), ctypes.c_char_p(b""),
                       ctypes.c_uint(mode), ctypes.c_int(AT_EMPTY_PATH))
    if ret == 0:
        return
    err = ctypes.get_errno()
    if err not in (errno.ENOSYS, errno.EINVAL, errno.EBADF):
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
