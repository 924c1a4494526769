"""The parent side of a sandbox run: fork, sync, host actions, events, wait, teardown.

:func:`run_plan` runs a compiled plan ephemerally (``vbdecl run``);
:func:`run_spec` runs a normalized spec with an explicit list of host
actions (``vb`` and the Python API use it). See :mod:`vbdecl.runtime.child`
for the process tree and the sync protocol.
"""

from __future__ import annotations

import _struct as struct
import errno
import fcntl
import sys

from vbdecl.errors import RuntimeSetupError, VbdeclError
from vbdecl.runtime import child as C
from vbdecl.runtime.events import EventSink
from vbdecl.sys import _linux, signals
from vbdecl.sys import ns as sysns
from vbdecl.sys import oslite as os
from vbdecl.sys import proc as sysproc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from vbdecl.runtime.events import Callback


# Signals the parent forwards; job control stays with the terminal.
PARENT_FORWARDED = tuple(s for s in C.FORWARDED
                         if s not in (signals.SIGTSTP, signals.SIGTTIN, signals.SIGTTOU))
# die_with_parent, vbdecl's own part: the kernel sends us this when our caller dies
# (PR_SET_PDEATHSIG); the sandbox is then killed and torn down as after any exit. A
# real-time signal: nothing else sends it, and it is never forwarded.
PARENT_DIED = signals.SIGRTMIN


class RunResult:
    """What a run ended with. ``error`` is set when vbdecl failed before the process ran;
    ``teardown_errors`` holds the failures of tearing the run down, which do not change
    ``code`` (the process's, once it ran)."""

    __slots__ = ("code", "error", "events", "instance", "pid", "teardown_errors")

    def __init__(self, instance: str) -> None:
        self.instance = instance
        self.code = 0
        self.error: VbdeclError | None = None
        self.teardown_errors: list[VbdeclError] = []
        self.events: list[dict[str, Any]] = []
        self.pid: int | None = None

    def __repr__(self) -> str:
        return f"RunResult(code={self.code}, instance={self.instance!r}, error={self.error!r})"


def new_instance() -> str:
    return "vb-" + os.urandom(4).hex()


def resolve_namespaces(spec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None, list[str]]:
    """Namespaces to use, the id map, and warnings. A user namespace is implied unprivileged."""
    nsd = dict(spec["namespaces"])
    warnings: list[str] = []
    if os.geteuid() != 0 and nsd.get("user") is False and any(
            v is True for k, v in nsd.items() if k != "user"):
        nsd["user"] = True
    idmap = spec.get("idmap")
    if nsd.get("user") is True:
        # the caller as 0, for each of uid and gid the manifest leaves out (the kernel
        # refuses an empty map: a user review's uid-only idmap failed with EINVAL)
        idmap = {"uid": (idmap or {}).get("uid") or [{"inside": 0, "outside": os.geteuid(), "count": 1}],
                 "gid": (idmap or {}).get("gid") or [{"inside": 0, "outside": os.getegid(), "count": 1}]}
    return nsd, idmap, warnings


def _config(spec: dict[str, Any], nsd: dict[str, Any], instance: str,
            argv: list[str] | None) -> C.ChildConfig:
    cfg = C.ChildConfig()
    cfg.spec = spec
    cfg.argv = argv
    cfg.instance = instance
    for key in sysns.JOIN_ORDER:
        value = nsd.get(key)
        if value is True and key != "cgroup":
            cfg.new_flags |= sysns.NAMESPACES[key][0]
        elif isinstance(value, dict) and value.get("join"):
            cfg.joins.append((key, str(value["join"])))
    cfg.user_new = nsd.get("user") is True
    cfg.mount_new = nsd.get("mount") is True
    cfg.net_new = nsd.get("net") is True
    cfg.pid_join = nsd["pid"]["join"] if isinstance(nsd.get("pid"), dict) else None
    # {join: PATH, nested: true}: a new pid namespace whose parent is the joined one
    cfg.pid_nested = cfg.pid_join is not None and bool(nsd["pid"].get("nested"))
    cfg.pid_new = nsd.get("pid") is True or cfg.pid_nested
    proc = spec["process"]
    cfg.die_with_parent = bool(proc.get("die_with_parent", True))
    # A new mount namespace gets the environment's own root: spec.rootfs, or a fresh empty
    # one built from spec.filesystem, however few its entries (none: an empty root, as
    # bubblewrap). Only a joined mount namespace, or none, keeps the root it has.
    cfg.needs_root = cfg.mount_new or bool(spec.get("rootfs") or spec.get("filesystem"))
    # a run leaves the host as it found it (runtime/undo.py); vb, as bubblewrap, does not
    cfg.undo_host_changes = cfg.needs_root and "vb" not in spec and C.changes_host(spec)
    cfg.keep_fds = sandbox_fds(spec)
    if cfg.needs_root and not (cfg.mount_new or isinstance(nsd.get("mount"), dict)):
        raise RuntimeSetupError("spec.rootfs and spec.filesystem need a new mount namespace",
                                hint="set namespaces.mount: true")
    return cfg


def sandbox_fds(spec: dict[str, Any]) -> list[int]:
    """The caller's fds the sandbox needs: inherit_fds, fds of filesystem entries and of
    namespaces joined through /proc/self/fd/N, vb's userns2 and block fds. Every other fd of the
    caller is closed in the sandbox's processes right after fork."""
    fds = [int(fd) for fd in spec["process"].get("inherit_fds") or []]
    for entry in spec.get("filesystem") or []:
        if isinstance(entry.get("fd"), int):
            fds.append(entry["fd"])
    for value in (spec.get("namespaces") or {}).values():
        if isinstance(value, dict) and str(value.get("join", "")).startswith("/proc/self/fd/"):
            fds.append(int(str(value["join"]).rsplit("/", 1)[1]))
    vb = spec.get("vb") or {}
    for key in ("userns2_fd", "block_fd"):
        if isinstance(vb.get(key), int):
            fds.append(vb[key])
    return fds


def _read_msg(fd: int) -> tuple[bytes, bytes] | None:
    tag = C.read_exact(fd, 1)
    if tag is None:
        return None
    if tag == C.MSG_PID:
        return tag, C.read_exact(fd, 4) or b""
    if tag in C.SIZED_MESSAGES:
        head = C.read_exact(fd, 4)
        if head is None:
            return tag, b"{}"
        return tag, C.read_exact(fd, struct.unpack("=I", head)[0]) or b"{}"
    if tag in (C.MSG_UNSHARED,):
        return tag, b""
    raise RuntimeSetupError(f"sandbox sync protocol violation: unexpected byte {tag!r}")


def _child_error(payload: bytes) -> RuntimeSetupError:
    code, message, hint = C.decode_error(payload)
    err = RuntimeSetupError(message or "sandbox setup failed", hint=hint)
    err.exit_code = code or 125
    return err


def fork_holder(cfg: C.ChildConfig, floor: int, *, shared: bool = False) -> tuple[int, int, int, int]:
    """Start the holder (which creates the namespaces) with its two checked
    CLOEXEC pipes, kept above ``floor``; returns (pid, read end, write end, handle).
    ``shared`` (see shares_memory): the child runs in our memory, and this returns
    once it has left our Python (C.SharedSetup). ``handle``: nonzero when that
    child is pid 1 and runs its loop on a stack of ours, which release_child frees
    once it has been reaped."""
    c2p_r, c2p_w = os.pipe2(os.O_CLOEXEC)
    p2c_r, p2c_w = os.pipe2(os.O_CLOEXEC)
    c2p_r, c2p_w, p2c_r, p2c_w = (_above(fd, floor) for fd in (c2p_r, c2p_w, p2c_r, p2c_w))
    cfg.c2p, cfg.p2c = c2p_w, p2c_r
    parent = os.getpid()
    handle = 0
    if not shared and not cfg.live:
        cfg.memory_leave = _memory_leave_fd(cfg.spec, floor)
    if not cfg.live and "vb" not in cfg.spec:
        cfg.stdio = guarded_stdio(floor)
    try:
        own_pid_ns = _own_pid_ns() if direct_init(cfg) and not shared else -1
        cfg.direct_init = cfg.pid_new if shared else own_pid_ns >= 0
        cfg.created = ((sysns.CLONE_NEWUSER if shared and cfg.user_new else 0)
                       | (sysns.CLONE_NEWPID if cfg.direct_init else 0))
        try:
            parent_pid = _steps_parent(cfg)
            cfg.steps = None if parent_pid is None else C.steps_before_fork(cfg, parent_pid)
        except BaseException:
            if own_pid_ns >= 0:
                os.close(own_pid_ns)
            raise
        pid = -1
        if shared:
            setup = C.SharedSetup(cfg, parent)
            imports = sysproc.import_state()
            try:
                pid, handle = _linux.shared_child(cfg.created, setup, setup.failed)
            except OSError:
                if not cfg.created:
                    raise
                # No user or pid namespace to be had here (no right, a limit): the
                # holder tries again (the parent writing the maps), and says why.
                shared = False
                cfg.direct_init, cfg.steps, cfg.created = False, None, 0
                if cfg.own_maps is not None:
                    cfg.own_maps, cfg.await_go = None, True
            finally:
                sysproc.restore_imports(imports)    # (the child sealed them in its new root)
        if pid < 0:
            pid = _fork_in_new_pid_ns(own_pid_ns) if cfg.direct_init else os.fork()
    except BaseException as exc:
        if os.getpid() != parent:
            os._exit(125)      # a forked child never returns into its parent's code
        for fd in (c2p_r, c2p_w, p2c_r, p2c_w):
            os.close(fd)
        _close_inherited(cfg)
        if isinstance(exc, OSError) and not isinstance(exc, VbdeclError):
            raise RuntimeSetupError(f"cannot start the sandbox: {'clone' if shared else 'fork'}: {exc.strerror}",
                                    hint="the host is out of processes or memory: check "
                                         "`ulimit -u`, the pids limit of vbdecl's cgroup and free memory"
                                    ) from None
        raise
    if pid == 0:
        try:
            os.close(c2p_r)
            os.close(p2c_w)
            signals.pthread_sigmask(signals.SIG_BLOCK, C.FORWARDED)
        except BaseException:
            os._exit(125)
        C.holder_main(cfg, parent)
    os.close(c2p_w)
    os.close(p2c_r)
    _close_inherited(cfg)
    if shared:
        os.close(p2c_w)    # a shared child waits for no "go": it is past that already
        p2c_w = -1
    return pid, c2p_r, p2c_w, handle


def shares_memory(cfg: C.ChildConfig, ns_ids: bool, idmap: dict[str, Any] | None,
                  actions: list[dict[str, Any]]) -> bool:
    """Whether the first child can run in our memory (_sharedchild.c): no page of
    ours is copied for it, which saves the ~400 copy-on-write faults a forked one
    takes (about a tenth of a `vb` run). The child must not need us before the
    process starts, since we wait: no host actions, no second "go" (nobody reads
    the namespaces), and id maps only of our own ids, which it writes itself
    from inside its new user namespace, as bubblewrap does (as root the maps are
    ours to write, with setgroups allowed). clone makes the user and pid
    namespaces, and the child is pid 1 (a direct init); it joins nothing (setns
    into a user namespace refuses shared memory, and joins keep the holder's
    order). No other thread may run (one could take the GIL while the child
    has it). A shared pid 1 keeps our memory for the whole run, and only
    CAP_SYS_PTRACE in our user namespace would let the sandbox into it (our
    memory is not dumpable meanwhile): a run without a user namespace whose
    process could use that to get more than it has forks its pid 1 (see
    sec.could_trace_into_pid1). Nor when the process waits for vb's caller
    (--block-fd), which may take long: we would not take our signals meanwhile."""
    vb = cfg.spec.get("vb") or {}
    # Python 3.14 checks the C stack's bounds, which a clone's own stack is outside of;
    # a free-threaded build has no GIL to hold for the child.
    return bool(_linux.SHARED_CHILD and sys.version_info < (3, 14)
                and (sys.version_info < (3, 13) or sys._is_gil_enabled())
                and not actions and not ns_ids and not cfg.live
                and not cfg.joins and not cfg.pid_join
                and not isinstance(vb.get("userns2_fd"), int) and not isinstance(vb.get("block_fd"), int)
                and (not cfg.user_new or (os.geteuid() != 0 and idmap is not None
                                          and sysns.maps_own_ids(idmap["uid"], idmap["gid"])))
                and (not cfg.pid_new or cfg.user_new or os.geteuid() == 0)
                and not (cfg.pid_new and not cfg.user_new and cfg.spec["process"].get("init", True)
                         and C._security().could_trace_into_pid1(cfg.spec))
                and len(os.listdir("/proc/self/task")) == 1)


def direct_init(cfg: C.ChildConfig) -> bool:
    """Whether the first child can be pid 1 itself (no holder; see vbdecl.runtime.child).

    Only as root without a user namespace (the parent must be able to unshare
    the pid namespace, and no id maps stand between fork and pid 1) and
    without joins (the holder's join order stays as it is).
    """
    return (cfg.pid_new and not cfg.pid_nested and not cfg.live and not cfg.user_new
            and not cfg.joins and os.geteuid() == 0)


def _steps_parent(cfg: C.ChildConfig) -> int | None:
    """The pid of the process's parent as the process will see it, when this process can
    work out the process's last steps (child.steps_before_fork) because it sees what
    the child that starts the process sees: the same ids and capabilities (no user
    namespace, nothing joined). None when it cannot."""
    if cfg.user_new:
        return None         # (a shared child is in its new user namespace at once)
    if cfg.direct_init:
        # pid 1 of a new pid namespace spawns it, or is it (its parent is outside: 0);
        # the same test as child.init_main's
        return 1 if cfg.spec["process"].get("init", True) else 0
    if not (cfg.pid_new or cfg.pid_join or cfg.live or cfg.joins):
        return os.getpid()      # the holder becomes the process
    return None


def _own_pid_ns() -> int:
    """An fd of our own pid namespace that this thread may setns() back to, else -1
    (then a holder is used). Outside the initial user namespace euid 0 need not
    own its pid namespace (``unshare -r``, a rootless container): the setns back
    would fail, so it is tried first. That changes nothing: it is only tried when
    this thread's namespace for children is our own already (a caller that set
    another one keeps it, through the holder)."""
    try:
        fd = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return -1
    try:
        if os.stat("/proc/thread-self/ns/pid_for_children").st_ino != os.fstat(fd).st_ino:
            os.close(fd)
            return -1
        sysns.setns(fd, sysns.CLONE_NEWPID, what="own pid namespace")
    except BaseException as exc:
        os.close(fd)
        if isinstance(exc, OSError):
            return -1
        raise
    return fd


def _fork_in_new_pid_ns(own: int) -> int:
    """Fork a child that is pid 1 of a new pid namespace. This process stays where it
    is, and so do its later children (host actions' helpers): the namespace for its
    children is set back to ``own`` right after the fork (closed here). Only the
    parent's os.register_at_fork hooks run inside that window (vbdecl has none)."""
    pid = -1
    try:
        sysns.unshare(sysns.CLONE_NEWPID)
        pid = os.fork()
    finally:
        if pid == 0:
            os.close(own)   # before close_fds_except: it could take a number inherit_fds keeps
        else:
            # Also after a failed unshare or an interrupt: a no-op _own_pid_ns tried.
            try:
                sysns.setns(own, sysns.CLONE_NEWPID, what="back to vbdecl's own pid namespace")
            except BaseException:
                if pid > 0:
                    C.kill_and_reap(pid)
                raise
            finally:
                os.close(own)
    return pid


def _memory_leave_fd(spec: dict[str, Any], floor: int) -> int:
    """For a run with a memory limit where a v1 memory hierarchy is mounted: an fd on the
    cgroup.procs of vbdecl's own memory cgroup, which the run's processes go back to
    (child._leave_memory_cgroup); else, or where it cannot be opened, -1."""
    limits = spec.get("limits") or {}
    if limits.get("memory") is None and limits.get("memory_swap") is None:
        return -1
    path = sysproc.own_cgroup_dir("memory")
    if path is None:
        return -1
    try:
        fd = os.open(os.path.join(path, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return -1
    return _above(fd, floor)


def _close_inherited(cfg: C.ChildConfig) -> None:
    """Close our copies of the fds the first child inherited to use (it has its own)."""
    if cfg.memory_leave >= 0:
        os.close(cfg.memory_leave)
        cfg.memory_leave = -1
    close_stdio(cfg.stdio)
    cfg.stdio = []


# /dev/null, zero, full, random and urandom (major 1)
_STATELESS_DEVICES = frozenset(os.makedev(1, minor) for minor in (3, 5, 7, 8, 9))


def guarded_stdio(floor: int = 2, which: tuple[int, ...] = (0, 1, 2)) -> list[int]:
    """The caller's stdin, stdout and stderr (``which`` of them) as the sandbox gets
    them, where they are a host object it could change for good and need no offset
    of the caller's: a terminal, /dev/null and its like, or a directory, each reopened
    behind a read-only mount of its own (sys.mount.reopen_read_only; -1: as it is,
    and [] for none). As root, without a user namespace, the process is the host's
    root and owns them: a security review made the caller's terminal world-readable
    (chmod 666 through /proc/self/fd/0, as it stayed after the run). A file is left
    as it is: opened again it would start at its beginning, not where the caller's
    script had read to (a review's `while read` loop read its lines twice), and the
    process shares that position with the caller, as through a pipe (docs/security.md
    says what that leaves); so are pipes and sockets, no file of the host's, and an
    fd open O_PATH, which reads nothing. Only root may clone the mounts; vb keeps
    bubblewrap's way (the caller's fds as they are)."""
    if os.geteuid() != 0:
        return []
    import _stat as stat

    out = [-1, -1, -1]
    for std in which:
        try:
            if fcntl.fcntl(std, fcntl.F_GETFD) & fcntl.FD_CLOEXEC:
                continue    # no process gets it (entry._reserve_closed_stdio holds a closed one's number)
            if fcntl.fcntl(std, fcntl.F_GETFL) & os.O_PATH:
                continue
            st = os.fstat(std)
        except OSError:
            continue        # closed
        # (only devices that are the same whichever open reaches them, with no position: a
        # terminal, /dev/null, zero, full, random, urandom; a tun device is a new one each
        # time, and /dev/kmsg keeps a position per open, which a review's reader lost)
        if (stat.S_ISCHR(st.st_mode) and (st.st_rdev in _STATELESS_DEVICES or os.isatty(std))) \
                or stat.S_ISDIR(st.st_mode):
            reopened = reopened_read_only(std)
            if reopened < 0:
                continue    # a mount that may not be cloned: as it is
            try:
                out[std] = _above(reopened, floor)
            except OSError:
                os.close(reopened)
    return out if any(fd >= 0 for fd in out) else []


def reopened_read_only(fd: int) -> int:
    """``fd``'s object opened again behind a read-only mount of its own
    (sys.mount.reopen_read_only), or -1 where that cannot be: not root, or a mount
    that may not be cloned."""
    if os.geteuid() != 0:
        return -1
    from vbdecl.sys import mount as m

    try:
        return m.reopen_read_only(fd)
    except OSError:
        return -1


def close_stdio(fds: list[int]) -> None:
    for fd in fds:
        if fd >= 0:
            os.close(fd)


def _above(fd: int, floor: int) -> int:
    """``fd`` moved above ``floor``, where none of the caller's fds is; where it keeps
    its number when there is no room up to ``ulimit -n`` (an fd the caller holds near
    the limit, or one an option names beyond it): close_fds_except keeps it by number
    anyway, and bubblewrap runs there too."""
    if fd > floor:
        return fd
    try:
        new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor + 1)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EMFILE):
            raise
        return fd
    os.close(fd)
    return new


# Run by the runtime itself, not through the op registry (see vbdecl.runtime.hostactions).
SKIP_KINDS = ("env.namespaces", "proc.main", "net.loopback")


def host_actions(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """The plan's host-scope actions an ephemeral run executes in the parent."""
    return [a for a in plan.get("actions") or []
            if a.get("scope") == "host" and a.get("kind") not in SKIP_KINDS]


def run_plan(plan: dict[str, Any], **kwargs: Any) -> RunResult:
    """Run a compiled plan (docs/plan-format.md) ephemerally."""
    actions = host_actions(plan)
    if os.getenv("VBDECL_FAULT"):
        kwargs["warnings"] = [*kwargs.get("warnings", ()), *fault_warnings(plan, actions)]
    return run_spec(plan["spec"], name=plan.get("name") or "sandbox", actions=actions, **kwargs)


def fault_warnings(plan: dict[str, Any], actions: list[dict[str, Any]]) -> list[str]:
    """What of ``VBDECL_FAULT`` (a test hook) makes nothing fail in a run of ``plan``:
    an id not in it, and the revert of an action a run does not revert on its own (the
    root and the namespaces go with the sandbox). Its host ``actions`` honour both."""
    from vbdecl.engine.faults import unknown, unknown_warning

    out = []
    ids = {str(a["id"]) for a in plan.get("actions") or []}
    missing = unknown(ids)
    if missing:
        out.append(unknown_warning(missing, f"{plan.get('name')}'s plan"))
    whole = [i for i in unknown({str(a["id"]) for a in actions}) if i.endswith(":revert")
             and i not in missing]
    if whole:
        out.append(f"VBDECL_FAULT names {', '.join(whole)}: a run does not revert "
                   f"{'that action' if len(whole) == 1 else 'those actions'} on its own (its root "
                   "and namespaces go with the sandbox), so it makes nothing fail")
    return out


def run_spec(spec: dict[str, Any], *, name: str = "sandbox", actions: list[dict[str, Any]] | None = None,
             argv: list[str] | None = None, on_event: Callback | None = None,
             event_fds: list[int] | None = None, forward_signals: bool = False,
             state_dir: str | None = None, instance: str | None = None,
             caller: int | None = None,
             speaker: tuple[str, str] | None = None, ns_ids: bool = True,
             share_memory: bool = False, warnings: list[str] | None = None) -> RunResult:
    """Run ``spec`` in a sandbox until its process exits; tear everything down.

    ``argv`` replaces ``process.command``. ``forward_signals``: the signals this
    thread receives go to the sandbox's process (console commands). ``caller``
    (console commands, with ``forward_signals``): the pid of the program that
    started vbdecl; with ``process.die_with_parent`` its death ends the sandbox,
    which is then torn down as after any exit. ``speaker``: who tells of OOM kills
    and the name of the memory limit (vb: its program name and ``--limit-memory``).
    ``ns_ids`` false: the events' ``ns`` stays empty unless they go out as JSON lines.
    ``share_memory`` (console commands, single-threaded): the first child may run
    in this process's memory (see shares_memory); a child killed there while it
    runs Python makes this process exit 125 (_sharedchild.c says why). ``warnings``
    go out with the setup's own (the ``runtime_init_warnings`` event).
    Never raises for a failure of the sandbox setup: the result carries the error
    and the exit code (125, 126, 127); errors of the caller's arguments raise.
    """
    instance = instance or new_instance()
    result = RunResult(instance)
    nsd, idmap, found = resolve_namespaces(spec)
    warnings = [*(warnings or ()), *found]
    status = spec.get("status") or {}
    lock_fd = -1
    sink: EventSink | None = None
    txs: list[Any] = []
    try:
        # (the caller's event fds are checked before vbdecl opens anything: a closed one's
        # number would be the next file's, the lock file's, say)
        beside = None   # the host directories the sandbox may write: no link there is followed
        if status.get("events") or status.get("lock_file"):
            from vbdecl.runtime.rootfs import sandbox_writable

            beside = sandbox_writable(spec)
        sink = EventSink(path=status.get("events"), fds=event_fds, callback=on_event, ns_ids=ns_ids,
                         beside=beside)
        result.events = sink.history
        if status.get("lock_file"):
            from vbdecl.runtime.lock import acquire

            lock_fd = acquire(status["lock_file"], beside)
        spec = C._security().load_host_files(spec)
        cfg = _config(spec, nsd, instance, argv)
        cfg.lock_fd = lock_fd
        # Held until the host actions are reverted too: a ^C must not cut a revert short.
        with SignalGuard(forward_signals, caller if cfg.die_with_parent else None) as guard:
            try:
                _spawn_and_wait(cfg, nsd, idmap, spec, name, actions or [], sink, result,
                                guard, state_dir, txs.append, warnings, share_memory)
            finally:
                _revert(txs, result, name, spec, speaker)
    except VbdeclError as err:
        result.error = err
        result.code = err.exit_code if err.exit_code >= 125 else 125
    finally:
        if sink is not None:
            sink.close()
        if lock_fd >= 0:
            os.close(lock_fd)
    return result


def _revert(txs: list[Any], result: RunResult, name: str, spec: dict[str, Any],
            speaker: tuple[str, str] | None) -> None:
    """Revert the run's host actions; their failures go to ``result.teardown_errors``,
    each with a hint telling what is left of it (the code stays the process's)."""
    for tx in txs:
        errors: list[Any] = []
        try:
            errors = tx.revert()
        finally:
            left = tx.close()   # (interrupted, the janitor reverts what is left)
        oom = tx.ctx.extra.get("cgroup_oom_kills")
        if oom:
            # the run's own cgroup: every kill in it happened during this run
            from vbdecl.runtime.oom import report

            report(name, oom, (spec.get("limits") or {}).get("memory"), speaker=speaker)
        for err in errors:
            err.hint = teardown_hint(err.where, tx.failed_records.get(err.where), left)
        result.teardown_errors.extend(errors)
    txs.clear()


def teardown_hint(action: str | None, record: Any, left: bool) -> str:
    """What a failed revert of a run left, and what becomes of it. A run keeps no
    state (``vbdecl recover`` has nothing of it); its janitor (runtime/hostactions.py)
    tries each failed revert again once the sandbox is gone, before vbdecl exits."""
    if not left:
        return ("vbdecl's janitor reverted it again once the sandbox was gone: nothing of "
                "the run is left on the host")
    import json

    what = json.dumps(record, sort_keys=True, separators=(",", ":")) if record else "?"
    return (f"vbdecl's janitor tried again once the sandbox was gone and failed too, so what "
            f"{action} made is left on the host ({what}); a run keeps no state, so vbdecl "
            "recover cannot find it: remove it by hand")


def _spawn_and_wait(cfg: C.ChildConfig, nsd: dict[str, Any], idmap: dict[str, Any] | None,
                    spec: dict[str, Any], name: str, actions: list[dict[str, Any]],
                    sink: EventSink, result: RunResult, guard: SignalGuard,
                    state_dir: str | None, set_tx: Any, warnings: list[str], share_memory: bool) -> None:
    # (undoing what the root changed on the host needs its namespaces, read before the "go")
    shared = share_memory and not cfg.undo_host_changes and shares_memory(cfg, sink.ns_ids, idmap, actions)
    if shared and cfg.user_new:
        cfg.own_maps = idmap     # the child writes them
    if not actions and not (cfg.user_new and idmap and cfg.own_maps is None) and not cfg.undo_host_changes:
        cfg.await_go = False     # nothing to do between "U" and "go": no first "go"
        C.load_setup_code(cfg)   # and nothing to do while the child would (see there)
    floor = max([2, cfg.lock_fd, *cfg.keep_fds])
    reports = -1
    if cfg.undo_host_changes:
        # pid 1 tells the janitor (started before the "go") what its build changes of the
        # host as it goes, straight: vbdecl may be killed meanwhile (runtime/undo.py)
        r, w = os.pipe2(os.O_CLOEXEC)
        reports, cfg.report_fd = _above(r, floor), _above(w, floor)
    try:
        pid, c2p_r, p2c_w, handle = fork_holder(cfg, floor, shared=shared)
    except BaseException:
        if reports >= 0:
            os.close(reports)
        raise
    finally:
        if cfg.report_fd >= 0:
            os.close(cfg.report_fd)
            cfg.report_fd = -1
    vb = spec.get("vb") or {}
    block = vb.get("block_fd")
    if isinstance(block, int) and block not in [vb.get(key) for key in (
            "info_fd", "json_status_fd", "sync_fd", "userns_fd", "userns2_fd", "pidns_fd")]:
        # the sandbox's process reads it; our copy would keep the caller's later writes
        # from failing (EPIPE), as they do with bubblewrap (unless we need it as another).
        # A stdio fd gets /dev/null in its place: no file we open may take its number.
        if block <= 2:
            null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            os.dup2(null, block, inheritable=False)
            os.close(null)
        else:
            try:
                os.close(block)
            except OSError:     # (a closed fd: bubblewrap ignores it, and so does the wait)
                pass
    try:
        _run_holder(cfg, pid, c2p_r, p2c_w, reports, nsd, idmap, spec, name, actions, sink, result,
                    guard, state_dir, set_tx, warnings)
    finally:
        if handle:
            _release(pid, handle)


def _release(pid: int, handle: int) -> None:
    """Free a shared pid 1's stack once it has been reaped (if it has not, keep it:
    a leak, where freeing would crash it)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        done = pid
    if done == pid:
        _linux.release_child(handle)


def _run_holder(cfg: C.ChildConfig, pid: int, c2p_r: int, p2c_w: int, reports: int, nsd: dict[str, Any],
                idmap: dict[str, Any] | None, spec: dict[str, Any], name: str,
                actions: list[dict[str, Any]], sink: EventSink, result: RunResult,
                guard: SignalGuard, state_dir: str | None, set_tx: Any,
                warnings: list[str]) -> None:
    holder_status: int | None = None
    undoer: tuple[int, int] | None = None     # the janitor of the root's host changes
    try:
        error: VbdeclError | None = None
        msg = _read_msg(c2p_r)
        if msg is None or msg[0] != C.MSG_UNSHARED:
            error = _child_error(msg[1]) if msg else RuntimeSetupError("the sandbox exited during setup")
        else:
            try:
                if reports >= 0:
                    from vbdecl.runtime import undo

                    undoer = undo.follow(pid, reports)     # before the build: the "go"
                    if undoer is None:
                        raise RuntimeSetupError(
                            "cannot keep the sandbox's namespaces to undo what its root changes "
                            "in bound host directories", hint="the sandbox exited during setup")
                if cfg.user_new and idmap and cfg.own_maps is None:
                    # vb: bubblewrap denies setgroups in the namespace it makes, as root too
                    sysns.write_id_maps(pid, idmap["uid"], idmap["gid"], deny_setgroups="vb" in cfg.spec)
                if actions:
                    from vbdecl.engine.paths import runtime_root
                    from vbdecl.ops.base import Context
                    from vbdecl.runtime.hostactions import HostTransaction

                    ctx = Context(name=name, instance=cfg.instance, state_dir=state_dir or "",
                                  runtime_dir=os.path.join(runtime_root(state_dir), cfg.instance),
                                  spec=spec, env_pid=pid)
                    tx = HostTransaction(ctx, sandbox_pid=pid)
                    set_tx(tx)
                    tx.apply(actions)
                    for record in ctx.records.values():
                        warnings.extend(record.get("warnings") or [] if isinstance(record, dict) else [])
                if cfg.await_go:
                    os.write(p2c_w, C.MSG_GO)
            except VbdeclError as err:
                error = err
            except OSError as err:
                # (the child is gone, EPIPE on the "go" or ESRCH on its maps: what it said
                # before it went is the error, not ours on the pipe)
                said = _read_msg(c2p_r) if err.errno in (errno.EPIPE, errno.ESRCH) else None
                error = _child_error(said[1]) if said is not None and said[0] == C.MSG_ERROR \
                    else RuntimeSetupError(f"sandbox setup failed: {os.strerror(err.errno or 0) if err.errno else err}")
        if reports >= 0:
            os.close(reports)      # the janitor has it
            reports = -1
        target = pid
        if error is None:
            msg = _read_msg(c2p_r)
            if msg is not None and msg[0] == C.MSG_PID and len(msg[1]) == 4:
                # 0: the child we forked is pid 1 (direct init), or there is no pid namespace
                target = struct.unpack("=i", msg[1])[0] or pid
            elif msg is not None and msg[0] == C.MSG_ERROR:
                error = _child_error(msg[1])
            else:
                error = RuntimeSetupError("the sandbox exited during setup")
        inodes: dict[str, int] = {}
        if error is None and sink.ns_ids:
            # From the first child, which waits for the second go: the sandbox's own
            # namespaces (as bubblewrap reports them), before anything there can exit.
            inodes = sysns.own_ns_inodes(pid)
            if cfg.pid_nested and target != pid:
                # the first child's namespace for children is the joined one; pid 1
                # (waiting for the same "go", see child._fork_nested_init) is in the new one
                nested = sysns.ns_inode(target, "pid")
                if nested is not None:
                    inodes["pid"] = nested
        if error is None and p2c_w >= 0:
            try:
                os.write(p2c_w, C.MSG_GO)
            except OSError:
                pass          # it is gone: the loop below reports how
        if p2c_w >= 0:
            os.close(p2c_w)
            p2c_w = -1
        sink.emit("runtime_init_warnings", warning_count=len(warnings), warnings=warnings)
        stopped = 0      # the signal that ended the sandbox before its process started
        if error is None:
            result.pid = target
            sink.emit("spawned", pid=target, ns=inodes)
            # vb --block-fd: the process waits for its caller right before its exec
            block_wait = guard.forward and isinstance((spec.get("vb") or {}).get("block_fd"), int)
            while True:
                if block_wait and not stopped:
                    stopped = _wait_for_setup(c2p_r, guard, (target, pid))
                msg = _read_msg(c2p_r)
                if msg is None:
                    break
                if msg[0] == C.MSG_ERROR:
                    error = _child_error(msg[1])
                    break
        if error is None and not stopped:
            sink.emit("setup_finished", pid=target, ns=inodes)
        holder_status = _wait(pid, target, guard, C.own_session(spec["process"]))
        code = 128 + stopped if stopped else C.status_code(holder_status)
        if error is not None:
            result.error = error
            # vbdecl failed before the process started: 125, or the child's 126/127
            result.code = code if code in (126, 127) and error.exit_code == code else (
                error.exit_code if error.exit_code in (126, 127) else 125)
            if result.pid and "vb" not in spec:
                # spawned was said: a reader waits for its exited (a review's never came
                # for a command not found); bubblewrap's status fd gets none, as from it
                sink.emit("exited", pid=target, exit_code=result.code, ns=inodes)
        else:
            result.code = code
            sink.emit("exited", pid=target, exit_code=code, ns=inodes)
    finally:
        os.close(c2p_r)
        if p2c_w >= 0:
            os.close(p2c_w)
        if reports >= 0:
            os.close(reports)
        if holder_status is None:
            C.kill_and_reap(pid)
        if undoer is not None:
            from vbdecl.runtime import undo

            undo.finish(undoer)


class SignalGuard:
    """The signals :func:`_wait` takes with sigwaitinfo, blocked from before the fork until
    the run is over, so that none arriving in between is lost or acts on its own. With
    ``caller`` the caller's death is one of them (PARENT_DIED, set up with
    PR_SET_PDEATHSIG; the death signal this process had before comes back after).
    A no-op without ``forward``: the embedder's signals stay its own."""

    def __init__(self, forward: bool, caller: int | None = None) -> None:
        self.forward = forward
        self.watching = forward and caller is not None
        self.caller = caller or 0
        self.waitset: set[Any] = {*PARENT_FORWARDED, signals.SIGCHLD}
        if self.watching:
            self.waitset.add(PARENT_DIED)
        self._old_mask: set[Any] | None = None
        self._old_death = 0

    def __enter__(self) -> SignalGuard:
        if self.forward:
            self._old_mask = signals.pthread_sigmask(signals.SIG_BLOCK, self.waitset)
        if self.watching:
            try:
                self._old_death = sysproc.watch_parent(PARENT_DIED, self.caller)
            except BaseException:
                self.__exit__()
                raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.watching:
            sysproc.set_death_signal(self._old_death)
        if self._old_mask is not None:
            _drain_pending(self.waitset)   # e.g. a SIGCHLD of a child killed on the way
            signals.pthread_sigmask(signals.SIG_SETMASK, self._old_mask)
            self._old_mask = None


# the guarded signals whose default action is not to end a process: they end no wait
_NOT_ENDING = frozenset((signals.SIGCHLD, signals.SIGWINCH, signals.SIGCONT, signals.SIGURG,
                         signals.SIGTSTP, signals.SIGTTIN, signals.SIGTTOU))


def _wait_for_setup(fd: int, guard: SignalGuard, victims: tuple[int, int]) -> int:
    """Wait until the child has more to say (or is gone), taking the guarded signals
    meanwhile: with vb's --block-fd the process waits for its caller right before its
    exec, as long as the caller likes, and vb is not deaf to its own signals (or its
    caller's death) then. Such a signal ends the sandbox, whose process has not
    started: returns it (SIGKILL for the caller's death), else 0."""
    import select

    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while not poller.poll(100):
        info = signals.sigtimedwait(guard.waitset, 0)
        if info is None or info.si_signo in _NOT_ENDING:
            continue
        # (also one the terminal sent our process group: a process that is pid 1 of its
        # namespace, --as-pid-1, ignores it, and the sandbox's setup has it blocked)
        for victim in dict.fromkeys(victims):
            try:
                os.kill(victim, signals.SIGKILL)
            except ProcessLookupError:
                pass
        return signals.SIGKILL if info.si_signo == PARENT_DIED else int(info.si_signo)
    return 0


def _wait(pid: int, target: int, guard: SignalGuard, new_session: bool) -> int:
    if not guard.forward:
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                return status
            except InterruptedError:
                continue
    while True:
        wpid, status = os.waitpid(pid, os.WNOHANG)
        if wpid == pid:
            return status
        take_signal(signals.sigwaitinfo(guard.waitset), pid, target, new_session)


def take_signal(info: Any, pid: int, target: int, new_session: bool,
                on_winch: Callable[[], object] | None = None) -> None:
    """Act on one guarded signal while waiting for ``pid``: forward it to ``target``;
    SIGWINCH to ``on_winch`` instead, when given (exec -t: the terminal's size)."""
    if info.si_signo == signals.SIGCHLD:
        return
    if info.si_signo == signals.SIGWINCH and on_winch is not None:
        on_winch()
        return
    if info.si_signo == PARENT_DIED:
        # Our caller is gone (die_with_parent): the sandbox dies with it; pid 1 first,
        # so that nothing in the pid namespace outlives it.
        for victim in dict.fromkeys((target, pid)):
            try:
                os.kill(victim, signals.SIGKILL)
            except ProcessLookupError:
                pass
        return
    if info.si_code == C.SI_KERNEL and not new_session:
        return   # the terminal signalled our whole process group, the sandbox included
    try:
        os.kill(target, info.si_signo)
    except ProcessLookupError:
        pass


def _drain_pending(waitset: set[Any]) -> None:
    """Take every signal of ``waitset`` still pending (sigtimedwait returns one at a time)."""
    while True:
        pending = signals.sigpending() & waitset
        if not pending:
            return
        signals.sigtimedwait(pending, 0)

