"""Process helpers: prctl, close_range, pidfds, controlling tty, start times, cgroups of a pid.

Stdlib and :mod:`vbdecl.sys.raw` only: these run between fork and exec on the run path.
"""

from __future__ import annotations

import errno
import sys

from vbdecl.sys import _linux, signals
from vbdecl.sys import oslite as os
from vbdecl.sys.raw import check, raise_errno, syscall

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    ImportState = tuple[list[Any], list[str], list[Any], dict[str, Any]]

PR_SET_PDEATHSIG = 1
PR_GET_PDEATHSIG = 2
PR_SET_DUMPABLE = 4
PR_SET_NAME = 15
PR_SET_CHILD_SUBREAPER = 36
TIOCSCTTY = 0x540E
CLOSE_RANGE_MAX = 0xFFFFFFFF


def set_pdeathsig(sig: int, expected_parent: int) -> None:
    """Die with ``sig`` when the parent dies; closes the race with a parent already gone."""
    set_death_signal(sig)
    ppid = os.getppid()
    # pid 1 of a new pid namespace sees its parent as 0; the host's /proc
    # (still mounted at this point) tells whether that parent lives.
    if ppid == 0 and expected_parent > 0:
        if not alive(expected_parent, None):
            os.kill(os.getpid(), sig)
            os._exit(128 + sig)
        return
    if ppid != expected_parent:
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)


def watch_parent(sig: int, parent: int) -> int:
    """Have the kernel send us ``sig`` when ``parent``, our parent, dies; one gone
    already (we were reparented) is told at once: ``sig`` is sent now. Returns the
    death signal set before (see :func:`set_death_signal`). Note the kernel's rule:
    the death of the parent *thread* that forked us counts."""
    previous = death_signal()
    set_death_signal(sig)
    if os.getppid() != parent:
        os.kill(os.getpid(), sig)
    return previous


def death_signal() -> int:
    """The signal we get when our parent dies (0: none)."""
    buf = bytearray(4)
    check(syscall("prctl", PR_GET_PDEATHSIG, buf, 0, 0, 0), "prctl(PR_GET_PDEATHSIG)")
    return int.from_bytes(buf, sys.byteorder)


def set_death_signal(sig: int) -> None:
    check(syscall("prctl", PR_SET_PDEATHSIG, sig, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")


def set_dumpable(on: bool) -> None:
    """PR_SET_DUMPABLE: off, only CAP_SYS_PTRACE of our memory's user namespace may
    ptrace us or read our /proc files (which root owns then)."""
    check(syscall("prctl", PR_SET_DUMPABLE, int(on), 0, 0, 0), "prctl(PR_SET_DUMPABLE)")


def seal_imports() -> None:
    """Load no module from files any more, only built-in and frozen ones: called once
    this process, privileged, has entered a root it does not trust (an environment's,
    whose root inside may have planted a module at a path the interpreter would look
    at: a security review ran its code as the host's root through ``vbdecl exec``).
    What is imported already stays; an import of anything else fails."""
    sys.meta_path[:] = [f for f in sys.meta_path
                        if getattr(f, "__name__", "") in ("BuiltinImporter", "FrozenImporter")]
    sys.path_hooks.clear()
    sys.path_importer_cache.clear()
    sys.path.clear()


def import_state() -> ImportState:
    """What :func:`seal_imports` clears, for :func:`restore_imports`: a child that runs in
    our memory (spawn.shares_memory) seals our interpreter too."""
    return list(sys.meta_path), list(sys.path), list(sys.path_hooks), dict(sys.path_importer_cache)


def restore_imports(state: ImportState) -> None:
    sys.meta_path[:], sys.path[:], sys.path_hooks[:] = state[0], state[1], state[2]
    sys.path_importer_cache.clear()
    sys.path_importer_cache.update(state[3])


def set_child_subreaper() -> None:
    """PR_SET_CHILD_SUBREAPER: orphans among our descendants (a daemon's double fork, a
    shell's background job whose shell exited) are reparented to us, not to the pid
    namespace's init. Children forked from now on are marked as having one above."""
    check(syscall("prctl", PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "prctl(PR_SET_CHILD_SUBREAPER)")


def confine_supervisor_calls() -> int:
    """Install the process supervisor's seccomp filter (``_sharedchild.c``,
    confine_supervisor: the calls of its loop, EPERM for any other); 0, or -errno
    (no_new_privs must be set first)."""
    return _linux.confine_supervisor()


def set_name(name: str) -> None:
    syscall("prctl", PR_SET_NAME, name.encode()[:15], 0, 0, 0)


_setproctitle: Callable[[str], None] | None = None    # once load_title found it


def load_title() -> None:
    """Import setproctitle for :func:`set_title`, in a long-lived fork (a live
    environment's init, the process supervisor) before it enters the environment's
    namespaces: an import there would read the environment's files. Never on the run
    path. Not installed (an embedder without it): set_title sets the name only.
    Its setup is done here too: in an embedded interpreter setproctitle sets itself up
    lazily, on the first call, reading ``/proc/PID/cmdline``; inside the environment
    that is its /proc, or a FIFO put there, which would hang the supervisor."""
    global _setproctitle
    try:
        from setproctitle import getproctitle, setproctitle
    except ImportError:
        return
    try:
        getproctitle()
    except Exception:
        return      # (set_title then sets the name only)
    _setproctitle = setproctitle


def set_title(title: str, name: str) -> None:
    """Show ``title`` as our command line (ps, /proc/PID/cmdline, pgrep -f), not the
    command line of the vbdecl we were forked from, where :func:`load_title` loaded
    setproctitle; and ``name`` as our name (comm, 15 bytes), which setproctitle would
    set to the title's first 15 bytes."""
    if _setproctitle is not None:
        try:
            _setproctitle(title)
        except Exception:
            pass    # (the name still says what we are)
    set_name(name)


def close_fds_except(keep: list[int] | set[int], first: int = 3) -> None:
    """Close every fd >= ``first`` except those in ``keep`` (close_range, else a loop)."""
    lo = first
    for fd in sorted(k for k in set(keep) if k >= first):
        if fd > lo:
            _close_range(lo, fd - 1)
        lo = fd + 1
    _close_range(lo, CLOSE_RANGE_MAX)


def _close_range(lo: int, hi: int) -> None:
    if syscall("close_range", lo, hi, 0) == 0:
        return
    # Kernels before 5.9: close what is open.
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if lo <= fd <= hi:
            try:
                os.close(fd)
            except OSError:
                pass


def pidfd_open(pid: int) -> int:
    return check(syscall("pidfd_open", pid, 0), f"pidfd_open({pid})")


def _stat_fields(pid: int, proc_dir: int | None = None) -> list[bytes] | None:
    """The fields of /proc/PID/stat (or of ``proc_dir``'s stat) after the command name
    (field 3 on); None when gone."""
    try:
        fd = os.open("stat" if proc_dir is not None else f"/proc/{pid}/stat",
                     os.O_RDONLY | os.O_CLOEXEC, dir_fd=proc_dir)
        try:
            data = os.read(fd, 4096)
        finally:
            os.close(fd)
    except OSError:
        return None
    return data.rsplit(b")", 1)[1].split()


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (clock ticks since boot); None when the process is gone."""
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[19])


def alive(pid: int, started: int | None, *, proc_dir: int | None = None) -> bool:
    """True when ``pid`` still names the process that started at ``started``, not a zombie
    (through ``proc_dir`` when given: see :func:`open_proc_dir`)."""
    fields = _stat_fields(pid, proc_dir)
    if fields is None or fields[0] == b"Z":
        return False
    return started is None or int(fields[19]) == started


def open_proc_dir(pid: int, started: int | None) -> int | None:
    """An fd on /proc/PID while it names that process, or None: ``alive(..., proc_dir=fd)``
    answers through it later, from any mount namespace and whoever gets the pid next."""
    try:
        fd = os.open(f"/proc/{pid}", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    if not alive(pid, started, proc_dir=fd):
        os.close(fd)
        return None
    return fd


def kill_verified(pid: int, started: int | None, sig: int = signals.SIGKILL) -> bool:
    """Signal ``pid`` only if it is still the process recorded (pid + start time)."""
    if not alive(pid, started):
        return False
    try:
        fd = pidfd_open(pid)
    except OSError:
        return False
    try:
        if start_time(pid) != started and started is not None:
            return False
        ret = syscall("pidfd_send_signal", fd, sig, None, 0)
        if ret == 0:
            return True
        return ret != -errno.ESRCH and alive(pid, started) and _kill(pid, sig)
    finally:
        os.close(fd)


def _kill(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def parent(pid: int) -> int | None:
    """``pid``'s parent (None: gone)."""
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else None


def is_pid1(pid: int) -> bool:
    """Whether ``pid`` is pid 1 of its pid namespace (False: not, or gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((line.split()[-1] for line in f if line.startswith("NSpid:")), "") == "1"
    except OSError:
        return False


def env_processes(init: int) -> list[int]:
    """``init`` and every live process of its environment: those in its pid namespace
    when it is pid 1 there (commands ``vbdecl exec`` started included), and all their
    descendants (a payload's own nested pid namespaces too); else ``init``'s
    descendants. Zombies are left out (no cgroup lists them). Empty when ``init`` is gone."""
    try:
        ns = os.stat(f"/proc/{init}/ns/pid").st_ino
    except OSError:
        return []
    members = [init]
    if is_pid1(init):
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    if os.stat(f"/proc/{name}/ns/pid").st_ino == ns:
                        members.append(int(name))
                except OSError:
                    pass    # gone meanwhile
    found: dict[int, None] = {}
    for pid in members:
        if pid not in found:
            found.update(dict.fromkeys(_descendants(pid)))
    return [pid for pid in found if alive(pid, None)]


def kill_mount_namespace(inode: int, spare: int) -> int:
    """SIGKILL every live process (but ``spare``) whose mount namespace has ``inode``;
    how many. Each is checked again once a pidfd names it: the signal goes to that
    process, whatever its pid is by then."""
    killed = 0
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == spare:
            continue
        try:
            if os.stat(f"/proc/{name}/ns/mnt").st_ino != inode or not alive(int(name), None):
                continue
            fd = pidfd_open(int(name))
        except OSError:
            continue    # gone meanwhile
        try:
            if os.stat(f"/proc/{name}/ns/mnt").st_ino == inode and \
                    syscall("pidfd_send_signal", fd, signals.SIGKILL, None, 0) == 0:
                killed += 1
        except OSError:
            pass
        finally:
            os.close(fd)
    return killed


def tree(pid: int, started: int | None) -> list[tuple[int, int]]:
    """The live descendants of ``pid``, while it is the process that started at
    ``started``, each as (pid, start time); [] when it is gone. Each one is checked:
    its stat, read with its start time, names the parent it was listed under, and that
    parent, checked again once its children were read, is still the process (pid and
    start time) it was listed as: a pid reused meanwhile, in any place of the tree, is
    never taken for it, nor are its children. Zombies are left out (their children,
    if any, were reparented already)."""
    if started is None or not alive(pid, started):
        return []
    out: list[tuple[int, int]] = []
    todo: list[tuple[int, int]] = [(pid, started)]
    while todo:
        cur, cur_started = todo.pop()
        found = []
        for child in _children(cur):
            fields = _stat_fields(child)
            if fields is None or int(fields[1]) != cur:
                continue    # gone, or not the one listed any more
            found.append((child, int(fields[19]), fields[0] != b"Z"))
        fields = _stat_fields(cur)
        if fields is None or int(fields[19]) != cur_started:
            continue        # died, and its pid is another's now: those were its children
        for child, child_started, live in found:
            todo.append((child, child_started))
            if live:
                out.append((child, child_started))
    # (the listing was of that very process: it was alive before and after)
    return out if alive(pid, started) else []


def _children(pid: int) -> list[int]:
    """``pid``'s children, those of every thread (/proc/PID/task/TID/children)."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def _descendants(pid: int) -> list[int]:
    """``pid`` and its descendants (/proc/PID/task/TID/children)."""
    out, todo = [], [pid]
    while todo:
        cur = todo.pop()
        out.append(cur)
        todo.extend(_children(cur))
    return out


def cgroup_paths(pid: int, *, include_root: bool = False) -> list[str]:
    """The cgroup directories ``pid`` is in, as host paths (v1 and v2); a hierarchy's
    root cgroup only with ``include_root``."""
    return [base + path if path != "/" else base for base, path in _hierarchies(pid)
            if path != "/" or include_root]


def cgroup_roots(pid: int) -> list[str]:
    """The root directories (mount points) of the cgroup hierarchies ``pid`` is in."""
    return [base for base, _ in _hierarchies(pid)]


def v1_hierarchy(subsys: str) -> str | None:
    """The mount point of the cgroup v1 hierarchy that carries the controller ``subsys``
    (``memory``, ``pids``, ...), or None."""
    return next((base for ctrls, base in _cgroup_mounts().items() if subsys in ctrls.split(",")), None)


def own_cgroup_dir(subsys: str) -> str | None:
    """The directory of our cgroup in the v1 hierarchy carrying ``subsys``, or None."""
    base = v1_hierarchy(subsys)
    if base is None:
        return None
    for mount, path in _hierarchies(os.getpid()):
        if mount == base:
            return base + path if path != "/" else base
    return None


def _hierarchies(pid: int) -> list[tuple[str, str]]:
    """(mount point, path of ``pid``'s cgroup in it) of each mounted hierarchy it is in."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    mounts = _cgroup_mounts()
    out = []
    for line in lines:
        _, ctrls, path = line.split(":", 2)
        base = mounts.get(ctrls)     # "" for cgroup2, "name=systemd" for a named one
        if base is not None:
            out.append((base, path))
    return out


def _cgroup_mounts() -> dict[str, str]:
    found: dict[str, str] = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            sep = parts.index("-")
            fstype, opts = parts[sep + 1], parts[sep + 3]
            if parts[3] != "/":
                continue
            if fstype == "cgroup2":
                found.setdefault("", parts[4])
            elif fstype == "cgroup":
                ctrls = [o for o in opts.split(",") if o not in ("rw", "ro") and not o.startswith("release_agent")]
                known = [o for o in ctrls if o not in ("nosuid", "nodev", "noexec", "relatime", "xattr", "clone_children")]
                found.setdefault(",".join(known), parts[4])
    return found


def join_cgroups(paths: list[str], pid: int = 0) -> None:
    """Move ``pid`` (0: the caller) into each cgroup directory of ``paths``."""
    for d in paths:
        try:
            with open(os.path.join(d, "cgroup.procs"), "w") as f:
                f.write(str(pid or os.getpid()))
        except OSError as exc:
            raise_errno(f"join cgroup {d}", exc.errno or errno.EIO)
