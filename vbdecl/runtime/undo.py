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

def keep_namespaces(pid: int) -> dict[str, int]:
    """fds on ``pid``'s mount namespace, and its user namespace when that is not
    ours (new or joined: it owns the mount namespace), which keep them, and so the
    root, after the sandbox's processes are gone. Empty when ``pid`` is gone already."""
    fds: dict[str, int] = {}
    try:
        user = os.stat(f"/proc/{pid}/ns/user").st_ino != os.stat("/proc/self/ns/user").st_ino
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
    enters the kept namespaces. The run is over whatever happens: what could not be
    undone is a warning."""
    if "mnt" not in fds:
        _warn("the sandbox was gone before its namespaces could be kept")
        return
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            failed = _undo_inside(fds, changes)
            if failed:
                _warn(f"could not set back the mode of {', '.join(failed)}")
            else:
                code = 0
        except BaseException as exc:
            _warn(f"{exc}")
        finally:
            os._exit(code)
    os.waitpid(pid, 0)


def _warn(why: str) -> None:
    try:
        os.write(2, f"vbdecl: warning: this run's changes to bound host directories were not all "
                    f"undone: {why}\n".encode())
    except OSError:
        pass


def _undo_inside(fds: dict[str, int], changes: dict[str, Any]) -> list[str]:
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
    return undo_host_changes(root, changes, "/")
