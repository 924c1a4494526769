"""The process's last steps before execve, run by compiled code (``_laststep.c``).

vbdecl.runtime.child and vbdecl.ops.sec work out every step in Python (a
:class:`LastStep`: ids, capability masks, fds, paths, programs); the C code
only makes the system calls, in this order:

signals (every caught one and ``reset_signals`` to their defaults, an empty
mask) -> setsid -> death signal -> ``block`` (vb's --block-fd) -> chdir (the first of ``cwds`` that works;
PWD set to it) -> rlimits -> inherited fds -> every other fd closed ->
``userns2`` -> security (see vbdecl.ops.sec) -> execve of each of ``paths``.

:func:`spawn` runs them in a child made with vfork (the caller waits until
it has exec'd or failed), :func:`exec_in_place` in the caller. A failure is a
:class:`Failure`: the step, an index (fd, limit, capability, program or path
number) and errno; the caller says what it means.
"""

from __future__ import annotations

from vbdecl.sys import _linux

# The steps, as _laststep.c numbers them (its LAST_STEPS; a test holds them equal).
(SETSID, DEATH_SIGNAL, CHDIR, RLIMIT, INHERIT, USERNS2, ASSERT_USERNS, HOLD, KEEPCAPS, SETGROUPS,
 SETRESGID, SETRESUID, CAPGET, CAPSET, BOUNDING, NO_NEW_PRIVS, AMBIENT, LANDLOCK, SECCOMP,
 EXEC_DENIED, EXEC_NO_INTERPRETER, EXEC_NOT_FOUND) = range(1, 23)


class Failure:
    """Which step failed, on what (``index``), and errno; ``cwd``: the index in
    ``cwds`` of the directory the process changed to (-1: none yet)."""

    __slots__ = ("cwd", "errno", "index", "step")

    def __init__(self, step: int, index: int, errno: int, cwd: int = -1) -> None:
        self.step = step
        self.index = index
        self.errno = errno
        self.cwd = cwd

    def __repr__(self) -> str:
        return f"Failure(step={self.step}, index={self.index}, errno={self.errno}, cwd={self.cwd})"


class LastStep:
    """Everything the last steps need, worked out before any of them runs.

    None for ``reset_signals`` or ``keep`` skips that step; ``security``
    false skips the security steps; no ``paths`` stops before execve.
    """

    __slots__ = ("ambient", "argv", "assert_userns_disabled", "block", "close_std", "cwds", "death_parent",
                 "death_watch", "drop", "envp", "gid", "hold", "inherit", "inheritable", "keep", "kept",
                 "landlock", "new_session", "no_new_privs", "paths", "pwd_slot", "reset_signals", "rlimits",
                 "seccomp", "security", "shell_fallback", "uid", "userns2")

    def __init__(self) -> None:
        self.reset_signals: list[int] | None = None
        self.new_session = False
        self.death_parent = -1          # expected parent for PR_SET_PDEATHSIG(SIGKILL); -1: none
        # A pipe's write end whose only reader is vbdecl (-1: none): POLLERR there says
        # vbdecl is gone where getppid() cannot (pid 1 of a new pid namespace sees 0).
        self.death_watch = -1
        self.cwds: list[bytes] = []
        self.envp: list[bytes] = []
        self.pwd_slot = -1              # envp[pwd_slot] becomes PWD=<the cwd>; -1: none
        self.rlimits: list[tuple[int, int, int]] = []     # (resource, soft, hard)
        self.inherit: list[int] = []    # fds the payload inherits (close-on-exec cleared)
        self.keep: list[int] | None = None   # sorted fds left open; the others >= 3 are closed
        self.close_std: list[int] = []  # stdio fds closed too (vb: named by --info-fd and the like)
        self.userns2 = -1               # a user namespace fd to switch to, closed after
        self.block = -1                 # vb --block-fd: a byte read from it (then closed) first
        self.shell_fallback = False     # vb: a file execve calls ENOEXEC runs through /bin/sh
        self.security = False
        self.assert_userns_disabled = False
        self.hold = 0                   # capability masks (bit N = capability N)
        self.kept = 0
        self.inheritable = 0
        self.ambient = 0
        self.uid = 0
        self.gid = 0
        self.drop: list[int] = []       # bounding-set drops (of the capabilities it has)
        self.no_new_privs = True
        self.landlock = -1              # a ruleset fd (close-on-exec; the caller closes it)
        self.seccomp: list[bytes] = []  # programs, installed in order
        self.argv: list[bytes] = []
        self.paths: list[bytes] = []    # execve each in turn (a PATH search)


def spawn(plan: LastStep) -> tuple[int, Failure | None]:
    """(pid of the child, None once it exec'd; or its Failure: it has exited, reap it)."""
    pid, step, index, err, cwd = _linux.last_step(True, plan)
    return pid, (Failure(step, index, err, cwd) if step else None)


def exec_in_place(plan: LastStep) -> Failure | None:
    """Run the steps here. Returns only when one failed (its Failure), or with None
    after the last when ``paths`` is empty. The caller must be single-threaded (a
    forked child): ids and capabilities change for the calling thread only."""
    _, step, index, err, cwd = _linux.last_step(False, plan)
    return Failure(step, index, err, cwd) if step else None
