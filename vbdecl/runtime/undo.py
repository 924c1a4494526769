"""What a run's root changed on the host, undone once the sandbox is gone.

A run builds its root in a mount namespace of its own; what it creates there
lands on the host only through a bind, a rw overlay or a host directory that
is the root (a dir, file or symlink entry below a bind, a mount point made in
one, a chmod of a bound directory). ``vbdecl apply`` records those and its
destroy removes them; a run reports them (rootfs.Builder.host_changes) and
removes them the same way when its sandbox is gone, from inside the mount
namespace it kept (the paths are the root's), so that a run leaves the host
as it found it. vb does not: bubblewrap leaves them.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

def keep_namespaces(pid: int, user: bool) -> dict[str, int]:
    """fds on ``pid``'s mount namespace (and user namespace, which owns it), which
    keep it, and so the root, after the sandbox's processes are gone. Empty when
    ``pid`` is gone already."""
    fds: dict[str, int] = {}
    try:
        for name in ("user", "mnt") if user else ("mnt",):
            fds[name] = os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        close(fds)
        return {}
    return fds


def close(fds: dict[str, int]) -> None:
    for fd in fds.values():
        os.close(fd)
    fds.clear()


def undo(fds: dict[str, int], changes: dict[str, Any]) -> None:
    """Set back the modes and remove the paths of ``changes`` (newest first: what was
    created stays if it is not empty, or no longer what was made), in a helper that
    enters the kept namespaces. Best effort: the run is over, whatever happens."""
    if "mnt" not in fds:
        return
    pid = os.fork()
    if pid == 0:
        try:
            _undo_inside(fds, changes)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def _undo_inside(fds: dict[str, int], changes: dict[str, Any]) -> None:
    from vbdecl.runtime.rootfs import undo_host_changes
    from vbdecl.sys.ns import CLONE_NEWNS, CLONE_NEWUSER, setns

    for name, flag in (("user", CLONE_NEWUSER), ("mnt", CLONE_NEWNS)):
        if name in fds:
            setns(fds[name], flag, what=f"the run's {name} namespace")
            if name == "user":
                try:        # root there, if mapped; the capabilities there do the rest
                    os.setgid(0)
                    os.setuid(0)
                except OSError:
                    pass
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)    # the run's root, after setns
    undo_host_changes(root, changes, "/")
