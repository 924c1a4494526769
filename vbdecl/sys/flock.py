"""Lock files that can be removed by their last user, and locks on directories.

``lock(path)`` takes an exclusive flock on ``path``, creating it, and makes
sure the file it locked is still the one at ``path``: a holder may unlink the
lock file when it leaves nothing to protect (so a host without environments
keeps nothing of vbdecl's), and a waiter that locked the unlinked inode must
not think it holds the lock. ``lock_dir(path, shared=...)`` locks a directory
that stays (nothing to create or remove), shared or exclusive.
"""

from __future__ import annotations

import fcntl
import os
import time

# These locks are held for milliseconds: one held this long is a vbdecl stopped (^Z) or
# stuck, which every later command waited for without a word (a concurrency review)
WAIT_SECONDS = 60.0


def lock(path: str | os.PathLike[str], timeout: float = WAIT_SECONDS) -> int:
    """An fd holding an exclusive flock on ``path`` (close it to release); LockedError,
    naming the holder, after ``timeout`` seconds of waiting."""
    deadline = time.monotonic() + timeout
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        _wait(fd, path, deadline, timeout, fcntl.LOCK_EX)
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # removed while we waited: lock the file that is there now


def lock_dir(path: str, *, shared: bool, timeout: float = WAIT_SECONDS) -> int:
    """An fd holding a flock (shared or exclusive) on the directory ``path``; as
    :func:`lock` otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    _wait(fd, path, time.monotonic() + timeout, timeout, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
    return fd


def _wait(fd: int, path: str | os.PathLike[str], deadline: float, timeout: float, how: int) -> None:
    """flock(``how``) on ``fd``, polled so that the wait ends at ``deadline``."""
    delay = 0.0005
    while True:
        try:
            fcntl.flock(fd, how | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        if time.monotonic() >= deadline:
            from vbdecl.errors import LockedError

            who = sorted(holders(fd))
            os.close(fd)
            raise LockedError(f"{path} is still locked after {timeout:g} s"
                              + (f", by pid {', '.join(map(str, who))}" if who else ""),
                              hint="a vbdecl that is stopped (Ctrl-Z) or stuck holds it: let it go on, "
                                   "or end it, then run the command again")
        time.sleep(delay)
        delay = min(delay * 2, 0.005)


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
