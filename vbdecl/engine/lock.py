"""Locks: one flock per environment, held for the whole command, and a short
global lock for shared allocations (addresses, bridges).

The holder writes its pid, command line and start time into the lock file,
so that a second command can name it. An unlinked lock file (the env was
destroyed and its directory removed while we waited) is detected by
comparing inodes after flock, and the lock is taken again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vbdecl.errors import LockedError

POLL = 0.05


def _read_holder(path: Path) -> dict[str, Any]:
    """The holder's record. It writes it right after it takes the lock: an empty
    or half-written file is read again for up to ~0.1 s before giving up."""
    for _ in range(20):
        try:
            info = json.loads(path.read_text() or "{}")
        except (OSError, ValueError):
            info = {}
        if isinstance(info, dict) and info:
            return info
        time.sleep(0.005)
    return {}


def _holder_text(path: Path, fd: int) -> str:
    """Who holds the lock on ``path`` (``fd`` open on it): the holder its record names
    only while that process holds the lock (the record outlives it, and a process
    that is not vbdecl may take the lock without writing one)."""
    from vbdecl.sys.flock import holders

    info = _read_holder(path)
    pids = holders(fd)
    if not info or info.get("pid") not in pids:
        held = sorted(pids)
        return "another process" + (f" (pid {', '.join(map(str, held))}: {_cmdline(held[0])})"
                                    if len(held) == 1 and _cmdline(held[0]) else
                                    f" (pid {', '.join(map(str, held))})" if held else "")
    since = info.get("since")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if since else "?"
    return f"pid {info.get('pid')} ({info.get('command', '?')}) since {when}"


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _held_by(path: Path, fd: int) -> dict[str, Any]:
    """The record of the lock's holder when the pid it names holds the lock; else the
    pid the kernel names, with its command line (a day-2 review's `ls --json` named a
    rollback long finished while `flock` held the lock), or {} when nobody can be told."""
    from vbdecl.sys.flock import holders

    try:
        info: dict[str, Any] = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict):
        info = {}
    pids = sorted(holders(fd))
    if not pids or info.get("pid") in pids:
        return info     # (/proc/locks unreadable, or a child that inherited it: the record)
    return {"pid": pids[0], "command": _cmdline(pids[0]) or None}


def holder(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The holder of a lock file (:func:`_held_by`), or None when it is free."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return _held_by(path, fd)
            raise
        return None
    finally:
        os.close(fd)


class Lock:
    """An acquired flock; :meth:`release` (or the context manager) drops it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire(path: str | os.PathLike[str], *, timeout: float = 0.0, what: str = "environment",
            command: str | None = None, record: bool = True) -> Lock:
    """Take an exclusive flock on ``path`` (created if missing).

    ``timeout`` 0 fails at once; a positive value polls until then; a
    negative value waits forever. Raises LockedError naming the holder.
    """
    path = Path(path)
    deadline = time.monotonic() + timeout
    from vbdecl.engine.paths import ensure_dir

    ensure_dir(str(path.parent))
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:   # its directory was removed (a first apply forgotten)
            if timeout >= 0 and time.monotonic() >= deadline + 1.0:
                raise               # (it cannot be made again: not a race)
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            time.sleep(POLL)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                os.close(fd)
                raise
            if timeout >= 0 and time.monotonic() >= deadline:
                hint = ("wait for it to finish, or pass --lock-timeout SECONDS to wait"
                        if timeout == 0 else "it is still running; try again later")
                try:
                    said = _holder_text(path, fd)
                finally:
                    os.close(fd)
                raise LockedError(f"the {what} is locked by {said}", where=str(path), hint=hint) from None
            os.close(fd)
            time.sleep(POLL)
            continue
        # The file may have been unlinked (env removed) between open and flock.
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        if record:
            info = {"pid": os.getpid(), "command": command or " ".join(sys.argv),
                    "since": time.time()}
            data = json.dumps(info).encode()
            os.pwrite(fd, data, 0)      # then cut what a longer old record left: never empty
            os.ftruncate(fd, len(data))
        return Lock(path, fd)


def env_lock(name: str, state_dir: str | None = None, *, timeout: float = 0.0,
             command: str | None = None) -> Lock:
    """The per-environment lock (``envs/<name>/lock``)."""
    from vbdecl.engine import paths

    return acquire(paths.lock_file(name, state_dir), timeout=timeout,
                   what=f"environment {name!r}", command=command)


@contextlib.contextmanager
def global_lock(state_dir: str | os.PathLike[str] | None = None,
                timeout: float = 30.0) -> Iterator[Lock]:
    """A short host-wide lock around shared allocations (addresses, bridges).

    Hold it only for the allocation itself; every environment waits on it.
    """
    from vbdecl.engine import paths

    lock = acquire(os.path.join(paths.state_root(state_dir), "global.lock"), timeout=timeout,
                   what="global allocation lock")
    try:
        yield lock
    finally:
        lock.release()
