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


def holders(fd: int) -> set[int]:
    """The pids /proc/locks names as holding a flock on the file ``fd`` is open on, of
    processes still running (empty when that cannot be read). Only the kernel knows who
    holds a lock: a pid a holder wrote into the file may be of a process long gone, or
    reused since. (The kernel's is the pid that took the lock: a child that inherited
    it holds it on after that pid exits, and is not named.)"""
    st = os.fstat(fd)
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return set()
    pids = set()
    for line in lines:
        if "->" in line:
            continue        # (a process waiting for that lock, not holding it)
        fields = line.split()
        # 1: FLOCK  ADVISORY  WRITE 8336 fe:00:2147162 0 EOF
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == key and fields[4].isdigit():
            pids.add(int(fields[4]))
    return {pid for pid in pids if os.path.exists(f"/proc/{pid}")}
