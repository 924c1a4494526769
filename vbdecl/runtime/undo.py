"""What a run's root changed on the host, undone once the sandbox is gone.

A run builds its root in a mount namespace of its own; what it creates there
lands on the host only through a bind, a rw overlay or a host directory that
is the root (a dir, file or symlink entry below a bind, a mount point made in
one, a chmod of a bound directory). ``vbdecl apply`` records those and its
destroy removes them; a run reports them (rootfs.Builder.host_changes) and
removes them the same way when its sandbox is gone, from inside the mount
namespace it kept (the paths are the root's), so that a run leaves the host
as it found it. What keeps the namespaces and undoes the changes is a janitor
(runtime/janitor.py), started before the build: the sandbox's pid 1 tells it
what the build changes as it goes, over a pipe of their own, so that neither a
SIGKILL of vbdecl nor one that cuts the build short leaves anything. vb does not
undo them: bubblewrap leaves them.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def follow(pid: int, reports: int) -> tuple[int, int] | None:
    """Start the janitor that undoes the changes of ``pid``'s root, which the build
    reports on ``reports`` (rootfs._ChangeReports, JSON lines), once the sandbox is
    gone: when :func:`finish` ends its pipe, or when vbdecl dies. It holds fds on
    ``pid``'s mount namespace, and its user namespace when that is not ours (new or
    joined: it owns the mount namespace), which keep them, and so the root, after the
    sandbox's processes are gone. None when ``pid`` is gone already."""
    from vbdecl.runtime.janitor import fork_janitor
    from vbdecl.sys import proc as sysproc

    started = sysproc.start_time(pid)
    fds: dict[str, int] = {}
    try:
        user = os.stat(f"/proc/{pid}/ns/user").st_ino != os.stat("/proc/self/ns/user").st_ino
        for name in ("user", "mnt") if user else ("mnt",):
            fds[name] = os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
        if started is None:
            return None
        return fork_janitor("vbdecl-undo", [*fds.values(), reports],
                            lambda fd: _janitor(fd, fds, pid, started, reports))
    except OSError:
        return None
    finally:
        for fd in fds.values():
            os.close(fd)


def finish(janitor: tuple[int, int]) -> None:
    """The sandbox is gone: let the janitor undo the changes, and wait for it."""
    from vbdecl.runtime.janitor import dismiss

    dismiss(*janitor)


def _janitor(fd: int, fds: dict[str, int], pid: int, started: int, reports: int) -> None:
    """Set back the modes and remove the paths of the build's reports (newest first:
    what was created stays if it is not empty, or no longer what was made), from
    inside the kept namespaces, once the sandbox is gone. The run is over whatever
    happens: what could not be undone is a warning."""
    import json

    from vbdecl.runtime.janitor import read_lines, wait_gone
    from vbdecl.runtime.rootfs import merge_change_reports

    told = read_lines(reports)     # until the build is done (or pid 1 is gone)
    read_lines(fd)                 # until the run is over (or vbdecl is gone)
    wait_gone(pid, started)
    if not told:
        return
    try:
        root, changes = merge_change_reports([json.loads(line) for line in told])
        if changes is None:
            return
        failed = _undo_inside(fds, changes, root)
        if failed:
            warn(f"could not {'; '.join(failed)}")
    except BaseException as exc:
        warn(f"{exc}")


def warn(why: str) -> None:
    try:
        os.write(2, f"vbdecl: warning: this run's changes to bound host directories were not all "
                    f"undone: {why}\n".encode())
    except OSError:
        pass


def _undo_inside(fds: dict[str, int], changes: dict[str, Any], root_path: str) -> list[str]:
    from vbdecl.runtime.rootfs import undo_host_changes
    from vbdecl.sys.ns import CLONE_NEWNS, CLONE_NEWUSER, setns, unshare
    from vbdecl.sys.proc import seal_imports

    for name, flag in (("user", CLONE_NEWUSER), ("mnt", CLONE_NEWNS)):
        if name in fds:
            setns(fds[name], flag, what=f"the run's {name} namespace")
            if name == "mnt":
                seal_imports()      # (the run's root is its process's to fill)
            if name == "user":
                try:        # root there, if mapped; the capabilities there do the rest
                    os.setgid(0)
                    os.setuid(0)
                except OSError:
                    pass
    unshare(CLONE_NEWNS)    # a copy of the run's mounts, ours alone to make writable for the undo
    # the run's root: / after setns, or where a build cut short was making it (if it
    # is not there, the build got through to its end before it could tell)
    try:
        root = os.open(root_path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        root_path = "/"
        root = os.open(root_path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    return undo_host_changes(root, changes, root_path)
