"""Lock files that can be removed by their last user.

``lock(path)`` takes an exclusive flock on ``path``, creating it, and makes
sure the file it locked is still the one at ``path``: a holder may unlink the
lock file when it leaves nothing to protect (so a host without environments
keeps nothing of vbdecl's), and a waiter that locked the unlinked inode must
not think it holds the lock.
"""

from __future__ import annotations

import fcntl
import os


def lock(path: str | os.PathLike[str]) -> int:
    """An fd holding an exclusive flock on ``path`` (close it to release)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # removed while we waited: lock the file that is there now
