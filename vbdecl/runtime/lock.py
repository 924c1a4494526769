"""``status.lock_file``: an exclusive flock held for the environment's lifetime."""

from __future__ import annotations

import errno
import fcntl
import os

from vbdecl.errors import LockedError, RuntimeSetupError


def acquire(path: str, beside: list[str] | None = None) -> int:
    """Open (creating) ``path`` and take an exclusive non-blocking flock; return the fd.

    The fd is close-on-exec: the lock is held by vbdecl and the sandbox's
    init (which inherit it across fork) and released when all of them exit.
    ``beside``: the host directories the sandbox may write (sandbox_writable).
    """
    from vbdecl.runtime.rootfs import open_status_file

    try:
        # no symlink the sandbox may have made: it would get vbdecl to truncate what it names
        fd = open_status_file(path, os.O_RDWR | os.O_CREAT, beside or [])
    except OSError as exc:
        raise RuntimeSetupError(f"cannot open the lock file {path}: {exc.strerror}",
                                hint=getattr(exc, "hint", None)
                                or "status.lock_file must be in a writable directory, and "
                                   "not a symlink") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = _holder(fd)
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            err = LockedError(f"the lock file {path} is held by another environment"
                              + (f" (pid {holder})" if holder else ""),
                              hint="wait for it to exit, or use another status.lock_file")
            err.exit_code = 125
            raise err from None
        raise RuntimeSetupError(f"cannot lock {path}: {exc.strerror}") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass
    return fd


def _holder(fd: int) -> str | None:
    """The pid the file names, while that process holds the lock (not one long gone)."""
    from vbdecl.sys.flock import holders

    try:
        text = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text if text.isdigit() and int(text) in holders(fd) else None
