"""What runs in the forked children: the namespace holder, pid 1 and the process.

Process tree of a run (host pids)::

    vbdecl (parent)                      sync pipes, host actions, events, wait
     └─ holder  (unshare; new ns)       waits for "go", then forks pid 1
         └─ init  (pid 1 in a new pid ns) builds the root, spawns the process, reaps, forwards
             └─ process                   setsid, chdir, rlimits, fds, ids, security, exec

pid 1 works out the process's last steps (signals, session, cwd, environment,
rlimits, fds, ids, capabilities, Landlock, seccomp) and spawns it with vfork:
compiled code (vbdecl.sys.laststep) makes the calls and execs, and pid 1 waits
until it has, or has failed (pid 1 then reports why). Nothing of pid 1's
memory is copied and no Python runs in the process.

Without a new pid namespace the holder builds the root and execs the
process itself (the same steps, in place); with ``process.init: false`` pid 1
does.

A direct init (``ChildConfig.direct_init``: an ephemeral run as root that
creates a pid namespace but no user namespace and joins none) needs no
holder: the parent unshares the pid namespace for its children only for
the one fork, so its child is pid 1 at once and does the holder's part
(unshare, "U", "go", "P", "go") itself. One Python fork and exit less per run.

A shared first child (:class:`SharedSetup`, ``vb`` and ``vbdecl run`` where
the parent has nothing to do before the process starts, see
spawn.shares_memory) is made with clone(CLONE_VM): it runs in the parent's
memory while the parent waits, so none of it is copied. It takes the holder's
and pid 1's steps but returns instead of exiting, and compiled code
(vbdecl/sys/_sharedchild.c) then execs the process in place or, as pid 1,
runs the init loop, which every pid 1 runs (compiled, :func:`init_loop`).

Sync protocol (one-byte messages, checked; both pipes are close-on-exec):

* child -> parent: ``U`` namespaces exist (the parent writes id maps, runs
  host actions, then answers ``G``; with nothing to do there it sends no
  ``G``, and the child does not wait: ``ChildConfig.await_go``); ``P`` + 4 bytes: host pid of pid 1
  (0: the first child is pid 1, or there is no pid namespace), sent once
  every namespace exists; an ephemeral run's first child then waits for a
  second ``G``, which the parent sends once it has read the namespaces (a
  direct init builds the root meanwhile, and waits before its process may
  run or it may exit);
  ``E`` + 4-byte length + ``code NUL message NUL hint`` (UTF-8): setup
  failed; ``W`` + length + a message: a warning. End of file
  means every copy of the pipe is closed: the process was exec'd.
* parent -> child: ``G`` go on. Anything else (or end of file) aborts.

Where the parent sees what the child that starts the process sees, it works out
the process's last steps before the fork (``ChildConfig.steps``, see
spawn._steps_parent): the child inherits them, with nothing to send or decode.

Nothing here imports more than the standard library after fork.
"""

from __future__ import annotations

import _struct as struct
import errno

from vbdecl.sys import _linux, signals
from vbdecl.sys import caps as syscaps  # (an init confines itself where vbdecl's files may be gone)
from vbdecl.sys import ns as sysns
from vbdecl.sys import oslite as os
from vbdecl.sys import proc as sysproc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn


MSG_UNSHARED = b"U"
MSG_GO = b"G"
MSG_PID = b"P"
MSG_ERROR = b"E"
MSG_WARNING = b"W"
MSG_STARTED = b"S"      # a live environment's process and its supervisor (runtime.live)
SIZED_MESSAGES = (MSG_ERROR, MSG_WARNING, MSG_STARTED)     # followed by a length and a payload

FORWARDED = (
    signals.SIGTERM, signals.SIGINT, signals.SIGHUP, signals.SIGQUIT, signals.SIGUSR1,
    signals.SIGUSR2, signals.SIGWINCH, signals.SIGCONT, signals.SIGALRM, signals.SIGPWR,
    signals.SIGURG, signals.SIGTSTP, signals.SIGTTIN, signals.SIGTTOU, signals.SIGVTALRM,
    signals.SIGPROF, signals.SIGXCPU, signals.SIGXFSZ,
)
SI_KERNEL = 0x80
CAP_KILL = 5
INIT_SIGNALS = (*FORWARDED, signals.SIGCHLD)     # what pid 1's loop waits for
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ChildConfig:
    """Everything the children need, prepared by the parent before fork."""

    __slots__ = (
        "argv",
        "await_go",
        "c2p",
        "created",
        "die_with_parent",
        "direct_init",
        "fresh_signals",
        "instance",
        "joins",
        "keep_fds",
        "live",
        "lock_fd",
        "memory_leave",
        "mount_new",
        "needs_root",
        "net_new",
        "new_flags",
        "oom_adj_fd",
        "own_maps",
        "p2c",
        "pid_join",
        "pid_nested",
        "pid_new",
        "preloaded",
        "report_fd",
        "spec",
        "stdio",
        "steps",
        "title",
        "undo_host_changes",
        "user_new",
        "userns_disabled",
    )

    def __init__(self) -> None:
        self.c2p = -1
        self.p2c = -1
        self.spec: dict[str, Any] = {}
        self.argv: list[str] | None = None
        self.instance = ""
        self.new_flags = 0            # unshare flags except cgroup
        self.user_new = False
        self.mount_new = False
        self.pid_new = False
        self.net_new = False
        self.pid_join: str | None = None
        self.pid_nested = False       # pid_new inside pid_join (see _fork_nested_init)
        self.joins: list[tuple[str, str]] = []   # (spec key, path), in setns order
        self.die_with_parent = False
        self.direct_init = False      # we are pid 1 already: no holder (see the module doc)
        self.created = 0              # new_flags the fork (clone) made already: CLONE_NEWPID, CLONE_NEWUSER
        self.own_maps: dict[str, Any] | None = None   # the idmap the child writes itself (shared)
        self.needs_root = False       # a new mount namespace (or a root asked for): setup_root
        self.keep_fds: list[int] = []  # fds the process inherits (inherit_fds)
        self.live = False             # a live environment: init holds the namespaces, no process
        self.fresh_signals = False    # a live environment's process: no ignored signal of the apply's
        self.title = ""               # ... and its init's command line (ps), see _live_title
        self.lock_fd = -1             # status.lock_file, held by every process but the payload
        self.await_go = True          # the parent has work between "U" and "go" (else no "go")
        self.preloaded = False        # load_setup_code ran (in this process or before its fork)
        self.steps: Any = None        # the process's last steps, worked out before the fork
        self.undo_host_changes = False  # a run: report what the root's build changed of the host
        self.report_fd = -1           # ... straight to the janitor that undoes it (runtime/undo.py)
        self.userns_disabled = False  # _setup_root applied security.disable_userns
        # A run with a memory limit (v1): cgroup.procs of the memory cgroup vbdecl runs in,
        # which each of the run's own processes goes back to once the one it forks is in
        # the environment's (_leave_memory_cgroup)
        self.memory_leave = -1
        self.oom_adj_fd = -1          # pid 1's /proc/self/oom_score_adj, opened before its root
        # fds the first child puts on 0, 1 and 2 (-1: that one as it is): the caller's
        # terminal, /dev/null or directory, reopened behind a read-only mount
        # (spawn.guarded_stdio)
        self.stdio: list[int] = []


class SetupFailure(Exception):
    def __init__(self, code: int, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint


# --- messages -----------------------------------------------------------------

def send(fd: int, tag: bytes, payload: bytes = b"") -> None:
    data = tag + (struct.pack("=I", len(payload)) + payload if tag in SIZED_MESSAGES else payload)
    os.write(fd, data)


def tell(fd: int, code: int, message: str, hint: str | None = None) -> int:
    """Report a failure to the parent; the status to exit with."""
    try:
        send(fd, MSG_ERROR, encode_error(code, message, hint))
    except OSError:
        pass
    return code


def fail(fd: int, code: int, message: str, hint: str | None = None) -> NoReturn:
    """Report a failure and exit (a forked child)."""
    try:
        tell(fd, code, message, hint)
    finally:    # whatever happens, a forked child never returns into its parent's code
        os._exit(code)


# The most bytes of a report's message, and of its hint: a shared child writes its
# report while its parent waits, so the report must fit the pipe's smallest size
# (2 pages, for a user over fs.pipe-user-pages-soft); a longer text is cut.
REPORT_MAX = 3500


def encode_error(code: int, message: str, hint: str | None) -> bytes:
    """``code NUL message NUL hint``: no JSON, which a child could not import after
    pivot_root. Never raises (a lone surrogate in a path is escaped)."""
    return f"{code}".encode() + b"\0" + _cut(message) + b"\0" + _cut(hint or "")


def _cut(text: str) -> bytes:
    try:    # the bytes of a path as given (decode_error gives them back)
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:      # (a surrogate no byte stands for)
        data = text.encode("utf-8", "backslashreplace")
    if len(data) <= REPORT_MAX:
        return data
    # the middle goes: the end says why (a review's long path kept only the action's
    # id, and lost the ENAMETOOLONG)
    head = data[:REPORT_MAX // 4].decode("utf-8", "ignore").encode()
    tail = data[-(REPORT_MAX // 2):].decode("utf-8", "ignore").encode()
    return head + f" ... ({len(data) - len(head) - len(tail)} bytes cut) ... ".encode() + tail


def decode_error(payload: bytes) -> tuple[int, str, str | None]:
    code, _, rest = payload.decode("utf-8", "surrogateescape").partition("\0")
    message, _, hint = rest.partition("\0")
    return (int(code) if code.isdigit() else 125), message, hint or None


def _report(cfg: ChildConfig, exc: BaseException) -> NoReturn:
    fail(cfg.c2p, *_words(exc))


def _words(exc: BaseException) -> tuple[int, str, str | None]:
    """(exit status, message, hint) that report ``exc`` to the parent."""
    if isinstance(exc, SetupFailure):
        return exc.code, exc.message, exc.hint
    if isinstance(exc, BlockingIOError):
        return 125, *no_more_processes()
    hint = getattr(exc, "hint", None)
    message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
    where = getattr(exc, "where", None)
    return 125, f"{where}: {message}" if where else message, hint


def no_more_processes() -> tuple[str, str]:
    """The words for a fork that failed with EAGAIN (BlockingIOError) in the sandbox."""
    return ("cannot start a process in the environment: fork failed (EAGAIN): its pids limit "
            "(limits.pids), or the user's process limit, is reached",
            "limits.pids counts every process of the environment, and vbdecl's own while they "
            "are in it: pid 1 and the process of a run (2), and a live environment's process "
            "starts with 3 helpers: raise it")


def read_exact(fd: int, n: int) -> bytes | None:
    """``n`` bytes from ``fd``; None at end of file before them."""
    data = b""
    while len(data) < n:
        chunk = os.read(fd, n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def kill_and_reap(pid: int) -> None:
    """SIGKILL our child ``pid`` and wait for it (gone already: nothing to do)."""
    try:
        os.kill(pid, signals.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _wait_go(fd: int) -> None:
    """Wait for a "go". Anything else: the parent gave up (and says why), so we leave."""
    try:
        byte = os.read(fd, 1)
    except OSError:
        byte = b""
    if byte != MSG_GO:
        os._exit(125)   # nothing to add


def status_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


# --- holder: first child, unshares ----------------------------------------------

def holder_main(cfg: ChildConfig, parent: int) -> NoReturn:
    """Body of the first child. Never returns."""
    try:
        take_stdio(cfg.stdio)
        # Nothing of the caller's stays open in the sandbox's processes but what it needs.
        sysproc.close_fds_except([cfg.c2p, cfg.p2c, cfg.lock_fd, cfg.report_fd, cfg.memory_leave,
                                  *cfg.keep_fds])
        if cfg.live:
            _detach(cfg)
        elif cfg.die_with_parent:
            sysproc.set_pdeathsig(signals.SIGKILL, parent)
        if any(key == "mount" for key, _ in cfg.joins):
            load_setup_code(cfg)    # (a joined mount namespace's files are not ours: sealed once in)
        _enter_namespaces(cfg)
        send(cfg.c2p, MSG_UNSHARED)
        if cfg.await_go:
            load_setup_code(cfg)   # while the parent writes id maps and runs host actions
            _wait_go(cfg.p2c)
        _after_go(cfg, parent)
        if cfg.live:
            _live_holder(cfg)
        # Every namespace exists now. Tell the parent, and stay until it has read
        # them from us (the second "go"): a sandbox that exits at once takes its
        # namespaces with it, and the parent reports them in its events.
        pid = 0               # 0: pid 1 is us (direct init), or there is no pid 1
        child = 0             # our child that pid 1's status comes from (pid 1 itself, or
        nested = None         # the intermediate process of a nested pid namespace)
        if (cfg.pid_new or cfg.pid_join) and not cfg.direct_init:
            if cfg.pid_nested:
                child, pid, nested = _fork_nested_init(cfg, os.getpid())
            else:
                me = os.getpid()
                child = pid = os.fork()
                if pid == 0:
                    init_main(cfg, me)
            _leave_memory_cgroup(cfg)
        if child and cfg.report_fd >= 0:
            os.close(cfg.report_fd)     # pid 1 reports the build: ours would keep the pipe open
            cfg.report_fd = -1
        send(cfg.c2p, MSG_PID, struct.pack("=i", pid))
        if cfg.direct_init:
            init_main(cfg, None)        # waits for the second go itself (_second_go)
        if not child:
            # We become the process: the root is built while the parent reads the
            # namespaces.
            try:
                _setup_root(cfg)
            except BaseException:
                _wait_go(cfg.p2c)  # the parent reads our namespaces before we may exit
                raise
        _wait_go(cfg.p2c)
        os.close(cfg.p2c)
        if nested is not None:
            _relay_go(nested)           # the parent has read the namespaces: pid 1 goes on
        if child:
            os.close(cfg.c2p)
            _exit_with(child)
        exec_process(cfg)
    except BaseException as exc:
        _report(cfg, exc)


class SharedSetup:
    """The first child's part when it shares the parent's memory (spawn.shares_memory,
    _sharedchild.c): holder_main's and init_main's steps for a run in which the
    parent has nothing to do before the process starts (no "go" to wait for), in
    the same order. It returns where they exit, exec or loop: the C code does
    that once no frame of ours is left. Calling it returns an exit status (a
    failure, reported), (pid, forward_tty, signals) when it is pid 1 and spawned
    the process (then it runs init_loop), or the LastStep to exec in place;
    ``failed`` is called when a step of that fails, for the status to exit with.
    Nothing of the parent's may change here but through the kernel: ``cfg`` and
    every other object are the parent's own, not copies."""

    def __init__(self, cfg: ChildConfig, parent: int) -> None:
        self.cfg = cfg
        self.parent = parent
        self.proc: _Process | None = None

    def __call__(self) -> int | tuple[int, bool, tuple[int, ...]] | Any:
        cfg = self.cfg
        try:
            take_stdio(cfg.stdio)
            sysproc.close_fds_except([cfg.c2p, cfg.p2c, cfg.lock_fd, *cfg.keep_fds])
            if cfg.die_with_parent:
                sysproc.set_pdeathsig(signals.SIGKILL, self.parent)
            _enter_namespaces(cfg)
            send(cfg.c2p, MSG_UNSHARED)
            _after_go(cfg, self.parent)
            send(cfg.c2p, MSG_PID, struct.pack("=i", 0))
            _setup_root(cfg)
            if cfg.direct_init and cfg.spec["process"].get("init", True):
                # We keep sharing vbdecl's memory while the sandbox runs: not dumpable
                # from here on (_sharedchild.c; our own /proc files are done with).
                sysproc.set_dumpable(False)
                pid = spawn_process(cfg)
                _become_init(cfg, shares_memory=True)
                return pid, own_session(cfg.spec["process"]), INIT_SIGNALS
            self.proc = cfg.steps or _prepare(cfg, None)
            _ready(cfg, self.proc, in_place=True)
            return self.proc.plan
        except BaseException as exc:
            return tell(cfg.c2p, *_words(exc))

    def failed(self, step: int, index: int, err: int, cwd: int) -> int:
        try:
            from vbdecl.sys.laststep import Failure

            assert self.proc is not None
            exc = _failure(self.cfg, self.proc, Failure(step, index, err, cwd))
        except BaseException as bug:
            exc = bug
        return tell(self.cfg.c2p, *_words(exc))


def _exit_with(child: int) -> NoReturn:
    """Wait for ``child`` and exit with its status (128+N when killed by signal N)."""
    while True:
        try:
            _, status = os.waitpid(child, 0)
        except ChildProcessError:
            os._exit(125)
        except InterruptedError:
            continue
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            os._exit(status_code(status))


def _fork_nested_init(cfg: ChildConfig, holder: int) -> tuple[int, int, Any]:
    """Fork pid 1 of a new pid namespace nested in the joined one (``pid_join``).

    setns() into a pid namespace only changes where our children go, and the
    kernel refuses unshare(CLONE_NEWPID) until the caller lives in the
    namespace its children go to. So, as bubblewrap does, an intermediate
    process (forked into the joined namespace) unshares and forks pid 1.
    pid 1 sends its credentials over a socket: the kernel translates its pid
    into ours, which the parent needs (signals, events). pid 1 then waits on
    that socket until this holder relays the parent's second "go" (so the
    namespaces can be read before anything there can exit), or, for a live
    environment, until the holder has sent pid 1's pid to the parent; end of
    file there means the holder failed or is gone, and pid 1 leaves.

    Returns (the intermediate's pid, pid 1's pid here, our end of the socket).
    """
    import socket

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    mid = os.fork()
    if mid == 0:
        pid = -1
        try:
            ours.close()
            if cfg.die_with_parent and not cfg.live:
                sysproc.set_pdeathsig(signals.SIGKILL, holder)
            sysns.unshare(sysns.CLONE_NEWPID)
            pid = os.fork()
            if pid == 0:
                _nested_init(cfg, theirs)
            _leave_memory_cgroup(cfg)
            theirs.close()
            if cfg.p2c >= 0:
                os.close(cfg.p2c)
            os.close(cfg.c2p)
        except BaseException as exc:
            if pid == 0:
                os._exit(125)
            _report(cfg, exc)
        if cfg.live:
            os._exit(0)   # pid 1 outlives us, as it outlives the holder
        _exit_with(pid)
    theirs.close()
    try:
        _, ancdata, _, _ = ours.recvmsg(1, socket.CMSG_SPACE(12))
        creds = [data for level, kind, data in ancdata
                 if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS]
    except OSError:
        creds = []
    if not creds or len(creds[0]) < 12:
        # The intermediate failed (it said why on the sync pipe) or pid 1 died.
        os._exit(125)
    pid1 = struct.unpack("=iII", creds[0][:12])[0]
    return mid, pid1, ours


def _relay_go(sock: Any) -> None:
    """Tell a nested pid 1 to go on. If it died already, its status says why
    (the holder passes it on), so a closed socket is no error here."""
    try:
        sock.sendall(MSG_GO)
    except OSError:
        pass
    finally:
        sock.close()


def _nested_init(cfg: ChildConfig, sock: Any) -> NoReturn:
    """pid 1 of a nested pid namespace: report our pid (see _fork_nested_init), wait."""
    import socket

    try:
        if cfg.die_with_parent and not cfg.live:
            # Our parent lives outside our pid namespace; the holder's end of the
            # socket tells whether the run still goes on (end of file: it is gone).
            sysproc.set_pdeathsig(signals.SIGKILL, 0)
        creds = struct.pack("=iII", os.getpid(), os.getuid(), os.getgid())
        sock.sendmsg([MSG_PID], [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, creds)])
        if sock.recv(1) != MSG_GO:
            os._exit(125)     # the run (or the live apply) failed before the parent had our pid
        sock.close()
    except BaseException as exc:
        _report(cfg, exc)
    init_main(cfg, None)


def _live_holder(cfg: ChildConfig) -> NoReturn:
    """A live environment's first child: fork its init (a new or joined pid
    namespace) and leave, or be its init. The parent learns the init's pid; the
    init waits for the parent's last "go" (_live_init_go)."""
    if cfg.pid_nested:
        _, pid, nested = _fork_nested_init(cfg, os.getpid())
        send(cfg.c2p, MSG_PID, struct.pack("=i", pid))
        _relay_go(nested)   # only now: had anything failed first, pid 1 would have left
        os._exit(0)
    if cfg.pid_new or cfg.pid_join:
        me = os.getpid()
        pid = os.fork()
        if pid == 0:
            init_main(cfg, me)
        send(cfg.c2p, MSG_PID, struct.pack("=i", pid))
        os._exit(0)
    _live_title(cfg)
    _open_oom_adj(cfg)
    _confine_init(cfg, 0)   # as init_main's: it only reaps
    send(cfg.c2p, MSG_PID, struct.pack("=i", os.getpid()))
    _live_init_go(cfg)
    init_loop(None, forward_tty_signals=False)


def _live_title(cfg: ChildConfig) -> None:
    """A live init outlives the apply it was forked from: its command line says what
    it is (``vbdecl-init: NAME (instance vb-...)``), not that apply's, which ``ps``
    would show as a hung apply and ``pkill -f 'vbdecl apply'`` would match. Set
    before init_loop, whose seccomp filter allows none of setproctitle's calls. A
    run's pid 1 keeps the command line of the run it belongs to (and one that shares
    vbdecl's memory must not rewrite it)."""
    if cfg.title:
        sysproc.set_title(cfg.title, "vbdecl-init")
    else:
        sysproc.set_name("vbdecl-init")


def _live_init_go(cfg: ChildConfig) -> None:
    """A live init stays only once the parent has put its pid on record (the
    runtime dir's init.json, which recovery reads): a parent killed before that
    leaves end of file here, and the init leaves, taking its namespaces along."""
    os.close(cfg.c2p)     # (the parent reads to its end after the "go")
    cfg.c2p = -1
    _wait_go(cfg.p2c)
    os.close(cfg.p2c)
    cfg.p2c = -1


def _detach(cfg: ChildConfig) -> None:
    """A live environment outlives vbdecl: own session, stdio on /dev/null, no other fds."""
    os.setsid()
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)
    sysproc.close_fds_except([cfg.c2p, cfg.p2c, cfg.lock_fd, *cfg.keep_fds])
    if cfg.title:
        sysproc.load_title()    # before entering namespaces (a joined one has other files)


def _enter_namespaces(cfg: ChildConfig) -> None:
    joins = list(cfg.joins)
    # A user namespace we join comes first; a new one after the other joins
    # (joining a host-owned namespace needs the host privileges we still have).
    vb = "vb" in cfg.spec
    if joins and joins[0][0] == "user":
        _join(*joins.pop(0), vb=vb)
    for key, path in joins:
        _join(key, path, vb=vb)
    if cfg.own_maps is not None:     # (a shared child, made in its new user namespace)
        sysns.write_own_maps(cfg.own_maps["uid"], cfg.own_maps["gid"])
    # A direct init is in its new pid namespace already (the parent unshared it, or
    # cloned it there), and a shared child in its new user namespace.
    sysns.unshare(cfg.new_flags & ~cfg.created)
    if cfg.mount_new:
        sysns.contain_mounts(follow_host=vb)   # bubblewrap's slave mounts for vb


# bubblewrap's words when joining its --userns or --pidns fails (vb)
_BWRAP_JOIN = {"user": "Joining specified user namespace failed", "pid": "Setting pidns failed"}


def _join(key: str, path: str, *, vb: bool = False) -> None:
    flag = sysns.NAMESPACES[key][0]
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise SetupFailure(125, f"cannot open namespace {key} to join: {path}: {exc.strerror}",
                           "namespaces.<ns>.join must name /proc/PID/ns/<ns> or a pinned namespace file"
                           ) from None
    try:
        sysns.setns(fd, flag, what=f"{key} namespace {path}")
        if key == "mount":
            sysproc.seal_imports()      # (another root: see rootfs._enter)
    except OSError as exc:
        if not vb or key not in _BWRAP_JOIN:
            raise
        if key == "user" and exc.errno == errno.EINVAL:
            raise SetupFailure(125, "Joining the specified user namespace failed, it might not be "
                                    "a descendant of the current user namespace.") from None
        raise SetupFailure(125, f"{_BWRAP_JOIN[key]}: {os.strerror(exc.errno or errno.EIO)}") from None
    finally:
        os.close(fd)


def _after_go(cfg: ChildConfig, parent: int) -> None:
    spec = cfg.spec
    if cfg.user_new:
        # Maps are written: become root of the new user namespace if 0 is mapped.
        try:
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
        except OSError:
            pass
    if (cfg.user_new or any(key == "user" for key, _ in cfg.joins)) and cfg.die_with_parent \
            and not cfg.live:
        # The kernel clears the death signal when our ids change (host root becomes the
        # map's outside id) and when we join a user namespace of another owner: ask again.
        sysproc.set_pdeathsig(signals.SIGKILL, parent)
    if spec["namespaces"].get("cgroup") is True:
        sysns.unshare(sysns.CLONE_NEWCGROUP)
    hostname = spec.get("hostname")
    if hostname is not None:     # (vb: --hostname "" sets an empty one)
        sysns.sethostname(hostname)
    if cfg.net_new:
        sysns.loopback_up()


def changes_host(spec: dict[str, Any]) -> bool:
    """Whether building ``spec``'s root may change the host: a host directory is the
    root, or an entry after a bind or a rw overlay has its target in one (or goes
    through a declared symlink, which may lead into one). A remount-ro changes no
    path or mode. Conservative: the build reports what it did change."""
    if spec.get("rootfs") is not None:
        return True
    places: list[str] = []      # targets of the binds and rw overlays so far
    links: list[str] = []       # of the symlinks so far
    for e in spec.get("filesystem") or []:
        target = str(e.get("target") or "/")
        if places and e.get("type") != "remount-ro" and any(
                target == p or target.startswith(p.rstrip("/") + "/") for p in [*places, *links]):
            return True
        if e.get("type") in ("bind", "dev-bind", "overlay"):
            places.append(target)
        elif e.get("type") == "symlink":
            links.append(target)
    return False


def load_setup_code(cfg: ChildConfig) -> None:
    """Import (and read) the root builder and what the process needs after
    pivot_root, before the root is built: pid 1 and the process inherit it.

    The holder does it between "U" and "go", while the parent writes id maps and
    runs host actions. A parent with nothing to do there does it itself before
    the fork (spawn._spawn_and_wait), which is cheaper than in the child: a forked
    child takes a copy-on-write fault on every page it touches, and an import
    touches many. Importing changes nothing outside this process; the second
    call does nothing (nor does it in the children of a process that did it)."""
    # (a joined mount namespace need not show vbdecl's files either)
    joins_mount = any(key == "mount" for key, _ in cfg.joins)
    if (cfg.needs_root or joins_mount) and not cfg.live and not cfg.preloaded:
        preload(cfg.spec, _security())
        if cfg.needs_root:
            import vbdecl.runtime.rootfs  # noqa: F401
        cfg.preloaded = True


def injected_faults() -> frozenset[str]:
    """The action ids ``VBDECL_FAULT`` makes fail (vbdecl/engine/faults.py, a test hook;
    parsed here alike: the sandbox imports nothing for it). Empty unless set."""
    spec = os.getenv("VBDECL_FAULT")
    if not spec:
        return frozenset()
    return frozenset(item for item in (s.strip() for s in spec.split(","))
                     if item and not item.endswith(":revert"))


def injected_fault(action: str) -> SetupFailure:
    return SetupFailure(125, f"{action}: injected fault (VBDECL_FAULT)",
                        "unset VBDECL_FAULT; it is a test hook")


def _setup_root(cfg: ChildConfig) -> None:
    """Build the root, if the spec has one. ``VBDECL_FAULT`` makes a run fail at the
    step of an action it names: ``env`` and ``net.loopback`` first (the namespaces are
    up), the root's in setup_root, ``process`` last (before it starts)."""
    faults = injected_faults()
    for action in ("env", "net.loopback"):
        if action in faults:
            raise injected_fault(action)
    sec = _security()
    sec.prepare_in_child(cfg.spec)    # disable_userns: needs the host /proc, before pivot
    cfg.userns_disabled = True
    if cfg.needs_root:
        _build_root(cfg, sec, faults)
    if "process" in faults:
        raise injected_fault("process")


def _build_root(cfg: ChildConfig, sec: Any, faults: frozenset[str]) -> None:
    if not cfg.preloaded:
        preload(cfg.spec, sec)
        cfg.preloaded = True
    from vbdecl.runtime.rootfs import setup_root

    report = None
    if cfg.report_fd >= 0:
        import json  # now: the host's files are out of reach once the root is being built

        def report(changes: dict[str, Any]) -> None:
            """Straight to the janitor (JSON lines): vbdecl may be killed meanwhile."""
            data = json.dumps(changes).encode() + b"\n"
            try:
                while data:
                    data = data[os.write(cfg.report_fd, data):]
            except OSError:
                pass    # no janitor (it could not start): the run failed already

    try:
        setup_root(cfg.spec, contained=cfg.mount_new, report=report,   # (_enter_namespaces)
                   faults=faults)     # (sealed: rootfs._enter)
    finally:
        if cfg.report_fd >= 0:
            os.close(cfg.report_fd)     # the janitor's end of the build's reports
            cfg.report_fd = -1


def preload(spec: dict[str, Any], sec: Any) -> None:
    """Import (and read) now everything the process setup needs after pivot_root.

    After pivot_root vbdecl's own files are usually not in the new root, so
    a lazy import or a data file read there would fail.
    """
    if (spec.get("limits") or {}).get("rlimits"):
        from vbdecl.sys import rlimit as _rlimit  # noqa: F401
    sec.preload(spec)
    from vbdecl.sys import laststep as _laststep  # noqa: F401


# --- pid 1 --------------------------------------------------------------------------

def _second_go(cfg: ChildConfig) -> None:
    """A direct init builds the root while the parent reads the namespaces; it waits
    for the parent's second "go" only before the process may run (and exit), or before
    it reports a failure (and exits). Others have nothing to wait for here."""
    if cfg.direct_init and cfg.p2c >= 0:
        fd, cfg.p2c = cfg.p2c, -1
        _wait_go(fd)
        os.close(fd)


def init_main(cfg: ChildConfig, holder: int | None) -> NoReturn:
    """pid 1 of the new pid namespace (or first process of a joined one), forked by
    ``holder`` (None: a direct init or a nested pid namespace's pid 1, whose death
    signal is set already). Never returns."""
    try:
        if cfg.die_with_parent and holder is not None:
            sysproc.set_pdeathsig(signals.SIGKILL, holder)
        _open_oom_adj(cfg)
        if cfg.live:
            _live_title(cfg)
            _confine_init(cfg, 0)   # it only reaps: processes enter from the host
            _live_init_go(cfg)
            init_loop(None, forward_tty_signals=False)
        _setup_root(cfg)
        _second_go(cfg)
        if not cfg.pid_new or not cfg.spec["process"].get("init", True):
            exec_process(cfg)
        # Blocked before the spawn: the process may exit (SIGCHLD) or be signalled
        # (forwarded) at once; init_loop takes them all.
        signals.pthread_sigmask(signals.SIG_BLOCK, INIT_SIGNALS)
        pid = spawn_process(cfg)
        _leave_memory_cgroup(cfg)
        _become_init(cfg)
    except BaseException as exc:
        _second_go(cfg)     # the parent reads our namespaces before we may exit
        _report(cfg, exc)
    init_loop(pid, forward_tty_signals=own_session(cfg.spec["process"]))


def _become_init(cfg: ChildConfig, *, shares_memory: bool = False) -> None:
    """What pid 1 keeps once the process runs: stdio and the lock, and of its
    capabilities only CAP_KILL, to forward signals to a process of another uid
    (see _confine_init). bubblewrap's pid 1 drops every capability (it forwards
    no signals)."""
    sysproc.close_fds_except([cfg.lock_fd, cfg.oom_adj_fd])     # our pipe to the parent too
    sysproc.set_name("vbdecl-init")
    _confine_init(cfg, 1 << CAP_KILL, shares_memory=shares_memory)


def _confine_init(cfg: ChildConfig, mask: int, *, shares_memory: bool = False) -> None:
    """Keep only the capabilities in ``mask``, and make sure no one gains more
    through us: a process of the sandbox that got into an init (ptrace, as the
    same uid with no more capabilities than the init's) could make it execve,
    which as root would give back the bounding set. So: no_new_privs (an execve
    gains nothing, root's included), the bounding set down to ``mask``, only
    ``mask`` permitted and effective, and, outside a user namespace of the
    sandbox's, not dumpable (ptrace and our /proc files then need CAP_SYS_PTRACE;
    in one, the caller's own tools, bubblewrap's --pidns among them, read our
    /proc/PID/ns). What a process that gets in could make us call, the seccomp
    filter init_loop installs refuses (_sharedchild.c, confine_init_calls)."""
    if not (cfg.user_new or any(key == "user" for key, _ in cfg.joins)):
        sysproc.set_dumpable(False)
    if not shares_memory:   # (the kernel would give vbdecl, which shares our memory, the same)
        _spare_from_oom_killer(cfg)
    syscaps.set_no_new_privs()
    effective, permitted, _ = syscaps.capget()
    if effective >> syscaps.CAP_SETPCAP & 1:
        syscaps.drop_bounding(mask)
    syscaps.capset(permitted & mask, permitted & mask, 0)


def take_stdio(fds: list[int]) -> None:
    """Put ``fds[i]`` on fd ``i`` (0, 1, 2; -1: leave that one), in a child whose fd
    table is its own."""
    for std, fd in enumerate(fds):
        if fd >= 0:
            os.dup2(fd, std)
            os.close(fd)


def _leave_memory_cgroup(cfg: ChildConfig) -> None:
    """Go back to vbdecl's own v1 memory cgroup (``cfg.memory_leave``), once the process
    we forked is in the environment's. Our memory is a Python process's, the largest
    there, so a run's OOM took pid 1, and the sandbox with it, for its workload's
    excess (a limits review: 137 and no output, where `init: false` finished); the
    OOM killer picks only among a memory cgroup's own processes. Our pages stay
    charged where they were made, as a live environment's init's
    (cgroupfs.init_stays_out). Without the right to move, we stay in, as before."""
    fd, cfg.memory_leave = cfg.memory_leave, -1
    if fd < 0:
        return
    try:
        os.write(fd, b"0")
    except OSError:
        pass
    finally:
        os.close(fd)


def _open_oom_adj(cfg: ChildConfig) -> None:
    """Open pid 1's /proc/self/oom_score_adj while /proc is the host's, before the
    sandbox's root is built: in that root, /proc is the sandbox's to make, and a
    review had pid 1, still root, write "-1000" over a file a link there named."""
    if cfg.oom_adj_fd < 0:
        try:
            cfg.oom_adj_fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY | os.O_CLOEXEC)
        except OSError:
            pass


def _spare_from_oom_killer(cfg: ChildConfig) -> None:
    """An init is the biggest process of a small memory cgroup (a Python process's
    memory, though not charged there), so the OOM killer took it, and the
    environment with it, for its workload's excess. Only once the process is
    spawned (it would inherit the setting); not where /proc or CAP_SYS_RESOURCE
    is missing (then it stays as it was). Through the fd :func:`_open_oom_adj`
    opened, never a path in the sandbox's root."""
    fd, cfg.oom_adj_fd = cfg.oom_adj_fd, -1
    if fd < 0:
        return
    try:
        os.write(fd, b"-1000")
    except OSError:
        pass
    finally:
        os.close(fd)


def init_loop(main_pid: int | None, *, forward_tty_signals: bool) -> NoReturn:
    """Reap every child, forward signals to the main process, exit with its status.

    Without a main process (a live environment's init) it reaps until
    SIGTERM, SIGINT or SIGHUP, then exits (the kernel ends the pid namespace).

    Signals are blocked and taken with sigwaitinfo, so nothing is lost
    between a reap and the wait. A signal the terminal sent (SI_KERNEL) also
    reached the main process directly when it shares our process group; it
    is forwarded only when the main process has its own session.
    Never hangs on ECHILD: no children left means we are done.
    The loop is compiled (_sharedchild.c): a pid 1 that shares vbdecl's
    memory runs it too, where no Python may run.
    """
    signals.pthread_sigmask(signals.SIG_BLOCK, INIT_SIGNALS)   # before the first reap: no lost SIGCHLD
    _linux.init_loop(main_pid or 0, forward_tty_signals, INIT_SIGNALS)


# --- the process ----------------------------------------------------------------------
#
# Python works out every step (LastStep); vbdecl.sys.laststep makes the calls, in
# compiled code, in the order its docstring gives: pid 1 spawns the process with
# vfork (no copy of our memory, none of our code runs there), others exec in place.

class _Process:
    """A LastStep and the words a failure of it needs."""

    __slots__ = ("cwds", "default_shell", "file", "from_cli", "limits", "path", "paths", "plan")

    def __init__(self, plan: Any) -> None:
        self.plan = plan
        self.cwds: list[str] = []
        self.limits: list[tuple[str, int, int]] = []   # (name, soft, hard)
        self.file = ""              # the command, as given
        self.path = ""              # the PATH searched ("" for a path)
        self.paths: list[str] = []  # what execve is tried on
        self.default_shell = False
        self.from_cli = False       # the command came after -- (not process.command)


def spawn_process(cfg: ChildConfig) -> int:
    """Start the process (pid 1's child); its pid once it exec'd. Raises its failure."""
    from vbdecl.sys import laststep

    proc = cfg.steps or _prepare(cfg, os.getpid())
    if "vb" in cfg.spec and proc.plan.new_session:
        # bubblewrap's pid 1 calls setsid before it forks the command (--new-session), which
        # is then in pid 1's session and process group, free to call setsid itself
        os.setsid()
        proc.plan.new_session = False
    _ready(cfg, proc, in_place=False)
    try:
        pid, failed = laststep.spawn(proc.plan)
    finally:
        if proc.plan.landlock >= 0:
            os.close(proc.plan.landlock)    # the child's copy is its own
    if failed is not None:
        os.waitpid(pid, 0)
        raise _failure(cfg, proc, failed)
    return pid


def exec_process(cfg: ChildConfig) -> NoReturn:
    """Become the declared process. Never returns; failures report and exit."""
    from vbdecl.sys import laststep

    try:
        proc = cfg.steps or _prepare(cfg, None)
        _ready(cfg, proc, in_place=True)
        failed = laststep.exec_in_place(proc.plan)
        assert failed is not None       # a LastStep with paths returns only when one failed
        raise _failure(cfg, proc, failed)
    except BaseException as exc:
        _report(cfg, exc)


def steps_before_fork(cfg: ChildConfig, parent: int) -> _Process | None:
    """The process's last steps, worked out by the parent before the fork (see the
    module doc); ``parent``: the process's parent as the process will see it. None
    when they fail: the child works them out again, and says why after its root."""
    try:
        return _prepare(cfg, parent)
    except Exception:
        return None


def _reset_signals(fresh: bool) -> list[int]:
    """The signals the process starts with at their defaults: those Python ignores
    itself, and those the sandbox forwards; not those its caller ignored (nohup, a
    shell's background job), as an exec keeps them ignored and bubblewrap's command
    does (a review's `nohup vbdecl run` lost its process to the hangup it forwarded),
    unless ``fresh`` (a live environment's process, which outlives the apply that
    starts it: not `nohup vbdecl apply`'s to keep)."""
    forwarded = [signals.SIGINT, *FORWARDED]
    if not fresh:
        forwarded = [s for s in forwarded if signals.getsignal(s) != signals.SIG_IGN]
    return [signals.SIGPIPE, signals.SIGXFSZ, *forwarded]


def _prepare(cfg: ChildConfig, parent: int | None) -> _Process:
    """The process's last steps but those that need the new root (see _ready).
    ``parent``: the pid of pid 1, which spawns it; None: it is us."""
    from vbdecl.sys import laststep

    spec = cfg.spec
    proc = spec["process"]
    tty = proc.get("tty", "auto")
    if tty is True and not os.isatty(0):
        raise SetupFailure(125, "process.tty is true but vbdecl's stdin is not a terminal",
                           "run it from a terminal, or set process.tty: auto")
    out = _Process(laststep.LastStep())
    plan = out.plan
    plan.reset_signals = _reset_signals(cfg.fresh_signals)
    plan.new_session = own_session(proc)
    if cfg.die_with_parent:
        plan.death_parent = parent if parent is not None else os.getppid()
    env = build_env(proc)
    vb = spec.get("vb")
    cwd = proc.get("cwd")
    if cwd is None and vb is not None:
        # bubblewrap: the caller's cwd if it exists in the sandbox, else $HOME, else /
        home = os.fsdecode(env.get(b"HOME", b""))
        out.cwds = [c for c in (vb.get("cwd_fallback"), home) if c] + ["/"]
    else:
        out.cwds = ["/" if cwd is None else cwd]     # (vb: --chdir "" fails, as chdir("") does)
    if vb is not None or not ("PWD" in (proc.get("env") or {}) or "PWD" in (proc.get("unset_env") or [])):
        # The process's cwd, not the caller's inherited one (unless the manifest sets
        # or unsets it); bubblewrap sets it the same way (vb: always).
        env[b"PWD"] = b""
        plan.pwd_slot = list(env).index(b"PWD")
    plan.cwds = [_c_string(c, "process.cwd") for c in out.cwds]
    plan.envp = [k + b"=" + v for k, v in env.items()]
    _command(cfg, os.fsdecode(env.get(b"PATH", DEFAULT_PATH.encode())), out)
    rlimits = (spec.get("limits") or {}).get("rlimits") or {}
    if rlimits:
        from vbdecl.sys.rlimit import resolve

        for name, resource, soft, hard in resolve(rlimits):
            out.limits.append((name, soft, hard))
            plan.rlimits.append((resource, soft, hard))
    plan.inherit = [fd for fd in proc.get("inherit_fds") or [] if fd > 2]
    userns2 = (vb or {}).get("userns2_fd")
    if isinstance(userns2, int):      # vb --userns2: switch user namespace after setup
        plan.userns2 = userns2
    if vb is not None:
        # bubblewrap waits for --block-fd once the sandbox is built (and --info-fd
        # written), and runs a file without #! line through /bin/sh (execvp)
        plan.block = vb["block_fd"] if isinstance(vb.get("block_fd"), int) else -1
        plan.shell_fallback = True
        # and closes the stdio fds its fd options name in the command (vb writes or
        # holds them itself)
        plan.close_std = sorted({fd for fd in (vb.get("info_fd"), vb.get("json_status_fd"),
                                               vb.get("sync_fd")) if isinstance(fd, int) and 0 <= fd <= 2})
    # ids, capabilities, no_new_privs, seccomp (last)
    _security().fill_last_step(plan, spec, userns_switch=isinstance(userns2, int))
    return out


def _ready(cfg: ChildConfig, proc: _Process, *, in_place: bool) -> None:
    """The steps that need the new root (disable_userns if not done, the Landlock
    ruleset), and the fds the process keeps."""
    plan = proc.plan
    _security().fill_child_steps(plan, cfg.spec, userns_done=cfg.userns_disabled)
    # the lock too: only vbdecl's processes hold it; our pipe for a failure to report
    keep = {*plan.inherit, plan.landlock, plan.userns2, plan.block, cfg.c2p if in_place else -1}
    plan.keep = sorted(fd for fd in keep if fd >= 0)
    if in_place and plan.death_parent == 0:
        # pid 1 of a new pid namespace: getppid() is 0, so only our pipe, which vbdecl
        # alone reads, tells the last steps whether vbdecl died while ids changed
        plan.death_watch = cfg.c2p


def _command(cfg: ChildConfig, path: str, out: _Process) -> None:
    """argv and the paths execve tries (a search of ``path``, the process's PATH,
    in the environment's root)."""
    proc = cfg.spec["process"]
    out.from_cli = bool(cfg.argv)
    argv = list(cfg.argv or proc.get("command") or [])
    if not argv:
        argv = ["/bin/sh"]
        out.default_shell = True
    out.file = argv[0]
    if "/" in out.file or not out.file:     # (execvp of "" fails with ENOENT, no search)
        out.paths = [out.file]
    else:
        out.path = path
        out.paths = [os.path.join(d or ".", out.file) for d in out.path.split(":")]
    if proc.get("argv0") is not None:
        argv[0] = proc["argv0"]
    out.plan.argv = [_c_string(a, "process.command") for a in argv]
    out.plan.paths = [_c_string(p, "process.command") for p in out.paths]


def _c_string(text: str, where: str) -> bytes:
    data = os.fsencode(text)
    if b"\0" in data:
        raise SetupFailure(125, f"{where}: {text!r} contains a NUL character",
                           "the kernel takes paths, arguments and variables as C strings")
    return data


def _is_dir(path: str, cwd: str) -> bool:
    import _stat as stat

    try:
        return stat.S_ISDIR(os.stat(os.path.join(cwd, path)).st_mode)
    except OSError:
        return False


def _failure(cfg: ChildConfig, proc: _Process, failed: Any) -> BaseException:
    """What the failed step means, in the words the user reads."""
    from vbdecl.sys import laststep as ls
    from vbdecl.sys.raw import sys_error

    spec, step, index, err = cfg.spec, failed.step, failed.index, failed.errno
    if step == ls.CHDIR:
        cwd = proc.cwds[index]
        if "vb" in spec:    # bubblewrap's words
            return SetupFailure(125, f"Can't chdir to {cwd}: {os.strerror(err)}")
        if spec["process"].get("cwd_option"):
            return SetupFailure(125, f"cannot change to {cwd} (--cwd): {os.strerror(err)}",
                                "give --cwd a directory that exists in the environment")
        return SetupFailure(125, f"cannot change to process.cwd {cwd}: {os.strerror(err)}",
                            "create it with a dir entry in filesystem, or fix process.cwd")
    if step == ls.RLIMIT:
        from vbdecl.sys import rlimit

        name, soft, hard = proc.limits[index]
        return rlimit.failed(name, soft, hard, err)
    if step == ls.INHERIT:
        return SetupFailure(125, f"process.inherit_fds: fd {index} is not open: {os.strerror(err)}",
                            "pass only fds that vbdecl inherits from its caller")
    if step == ls.EXEC_DENIED:
        hint = "check the file's mode (x bit), its interpreter line, and noexec mounts"
        if err == errno.EACCES and _is_dir(proc.paths[index], proc.cwds[failed.cwd] if failed.cwd >= 0 else "/"):
            hint = f"{proc.paths[index]} is a directory: name the program to run"
        if (spec.get("security") or {}).get("landlock"):
            hint += ("; with security.landlock, also that landlock.execute covers the file, its "
                     "interpreter and the dynamic loader (/usr/lib, /usr/lib64), and that "
                     "landlock.read covers the libraries")
        return SetupFailure(126, f"cannot execute {proc.paths[index]}: {os.strerror(err)}", hint)
    if step == ls.EXEC_NO_INTERPRETER:
        # (the message keeps execve's words: vb turns it into bubblewrap's)
        path = proc.paths[index]
        # (a relative path is the process's, from its cwd; pid 1 reads it from its own)
        where = os.path.join(proc.cwds[failed.cwd], path) if failed.cwd >= 0 else path
        return SetupFailure(126, f"cannot execute {path}: {os.strerror(errno.ENOENT)}",
                            f"{_missing_interpreter(where)}: bind it into the root "
                            "(ro-bind /usr with the /bin, /lib, /lib64 symlinks, say), or fix the #! line")
    if step == ls.EXEC_NOT_FOUND:
        if proc.default_shell:
            return SetupFailure(127, "no process.command given and /bin/sh does not exist in the "
                                     "environment's root",
                                "set process.command, pass a command after --, or bind /bin/sh into the root")
        where = f" in PATH={proc.path}" if proc.path else ""
        fix = "the command after --" if proc.from_cli else "process.command"
        return SetupFailure(127, f"command not found: {proc.file}{where} (inside the environment's root)",
                            f"bind the program into the root (for example ro-bind /usr) or fix {fix}")
    if step == ls.USERNS2:     # only vb has it: bubblewrap's words
        return SetupFailure(125, f"Setting userns2 failed: {os.strerror(err)}")
    if step == ls.SETSID:
        return sys_error("setsid", err)
    if step == ls.DEATH_SIGNAL:
        return sys_error("prctl(PR_SET_PDEATHSIG, SIGKILL)", err)
    return _security().failure(spec, proc.plan, failed) or SetupFailure(
        125, f"the process's setup failed at step {step} ({os.strerror(err)})")


def own_session(proc: dict[str, Any]) -> bool:
    """The process gets a session of its own (and so no controlling terminal)."""
    return bool(proc.get("new_session")) or proc.get("tty") is False


def build_env(proc: dict[str, Any]) -> dict[bytes, bytes]:
    """The process's environment, as the kernel takes it (no round trip through str)."""
    env: dict[bytes, bytes] = {} if proc.get("clear_env") else dict(os.environb)
    for key in proc.get("unset_env") or []:
        env.pop(os.fsencode(key), None)
    for key, value in (proc.get("env") or {}).items():
        env[_c_string(key, "process.env")] = _c_string(value, f"process.env.{key}")
    return env


def _security() -> Any:
    """vbdecl.ops.sec, imported at the point of use. It is part of vbdecl: a sandbox
    never runs without its security layer (an import error is a setup failure)."""
    from vbdecl.ops import sec

    return sec


def _missing_interpreter(path: str) -> str:
    """Why execve said ENOENT for a file that exists: what its #! line names, or the
    dynamic loader an ELF file asks for, is not in the environment's root."""
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        head = b""
    if head.startswith(b"#!"):
        words = head[2:].split(b"\n", 1)[0].split()
        if words:
            name = words[0].decode("utf-8", "backslashreplace")
            return f"it exists, but its interpreter {name} (the #! line) is not in the environment's root"
    if head.startswith(b"\x7fELF"):
        return ("it exists, but its dynamic loader (such as /lib64/ld-linux-x86-64.so.2) is not in "
                "the environment's root")
    return "it exists, but what runs it (a #! line or dynamic loader) is not in the environment's root"
