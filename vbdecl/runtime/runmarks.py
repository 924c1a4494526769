"""Marks of the runs that make cgroups, so that one nobody cleaned up after is found.

A `vbdecl run`'s host objects are reverted by the run, or by its janitor once the
run is killed (runtime/hostactions.py). When both are killed (`kill -9` of the two,
an OOM kill, `pkill -9 vbdecl`), the network's objects are still found through the
registries they are in (net.shared, ops.nat), but the run's cgroup directories were
named only in the janitor's memory: a crash review found them left for good.

So such a run holds a shared flock on ``<runtime root>/<instance>.run`` from before
its first host action until its reverts are done (its janitor inherits it). A mark
that nobody holds belongs to a run that is gone: :func:`sweep` removes that run's
cgroup directories once they are empty (a sandbox that outlived both keeps them until
it exits), then the mark. A mark is made under a temporary name, locked, then renamed
into place, so that no sweep takes a live run's mark for a dead one's (a sweep that
takes the temporary file before it is locked makes the run start over).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from typing import Any

SUFFIX = ".run"


def _path(root: str, instance: str) -> str:
    return os.path.join(root, instance + SUFFIX)


def hold(root: str, instance: str) -> int:
    """Make and lock the mark of ``instance`` in the runtime root ``root``; its fd (keep
    it open, in the janitor too, until :func:`release`)."""
    for _ in range(5):
        fd = _try_hold(root, instance)
        if fd is not None:
            return fd
    raise FileNotFoundError(f"cannot make the mark of {instance} in {root}: swept as it was made")


def _try_hold(root: str, instance: str) -> int | None:
    """:func:`hold` once; None when a sweep took the temporary file before it was locked,
    or removed an emptied <state>/run between the makedirs and the open."""
    os.makedirs(root, mode=0o700, exist_ok=True)
    tmp = os.path.join(root, f".{instance}{SUFFIX}.tmp")
    try:
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        os.rename(tmp, _path(root, instance))
    except FileNotFoundError:
        os.close(fd)
        return None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        os.close(fd)
        raise
    return fd


def release(root: str, instance: str, fd: int, *, done: bool, own_root: bool) -> None:
    """Let go of the mark (``fd``); remove it when the run's reverts are ``done`` (else a
    later sweep finishes them), and then ``root`` too when ``own_root`` (``<state>/run``
    of a --state-dir, removed when empty) and empty."""
    if done:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(_path(root, instance))
        if own_root:
            with contextlib.suppress(OSError):
                os.rmdir(root)
    os.close(fd)


def sweep(root: str, layout: Any = None, *, own_root: bool = False) -> list[str]:
    """Remove the empty cgroup directories of the runs whose marks in ``root`` nobody
    holds, and those marks; the instances whose groups were removed. A group that still
    holds a process (a sandbox that outlived its run) stays, with its mark, for a later
    sweep. ``layout``: the cgroupfs.Layout (the machine's by default); ``own_root``: as
    for :func:`release`."""
    try:
        names = os.listdir(root)
    except OSError:
        return []
    swept = []
    for name in names:
        if name.endswith(SUFFIX + ".tmp") and name.startswith("."):
            _drop_if_free(os.path.join(root, name), None, layout)   # (a run killed as it made it)
        elif name.endswith(SUFFIX) and not name.startswith("."):
            instance = name[:-len(SUFFIX)]
            if _drop_if_free(os.path.join(root, name), instance, layout):
                swept.append(instance)
    if own_root:
        with contextlib.suppress(OSError):
            os.rmdir(root)
    return swept


def _drop_if_free(path: str, instance: str | None, layout: Any) -> bool:
    """Lock ``path`` (exclusively, without waiting); if it is free and still the file
    at ``path``, remove ``instance``'s empty groups and then the file. Whether it removed
    groups (a mark whose run had made none yet, or removed them, goes all the same)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False        # its run (or its janitor) is alive
        try:
            if os.stat(path).st_ino != os.fstat(fd).st_ino:
                return False    # removed, and maybe made again, while we opened it
        except FileNotFoundError:
            return False
        removed: bool | None = False
        if instance is not None:
            removed = _remove_empty_groups(instance, layout)
            if removed is None:
                return False
        os.unlink(path)
        return bool(removed)
    finally:
        os.close(fd)


def _remove_empty_groups(instance: str, layout: Any) -> bool | None:
    """rmdir ``instance``'s cgroup directories (children first) and the empty ``vbdecl``
    parents; whether there were any, None when one is still in use."""
    from vbdecl.sys import cgroupfs

    layout = layout or cgroupfs.current_layout()
    record = cgroupfs.find_group(layout, instance)
    if record is not None:
        for path in reversed(record["created"]):
            try:
                os.rmdir(path)
            except FileNotFoundError:
                pass
            except OSError:
                return None
    cgroupfs.remove_empty_parents(layout)
    return record is not None
