"""A process that cleans up after a run even when vbdecl is killed.

A run's host objects (runtime/hostactions.py) and what its root changed in
bound host directories (runtime/undo.py) must not outlive the run. Each is
followed by a janitor forked before the first of them lands: it learns what
landed over a pipe and, when the pipe ends (the run is over, or vbdecl
died), cleans up what is still there once the sandbox is gone.
"""

from __future__ import annotations

import os

from vbdecl.sys import signals

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


def fork_janitor(name: str, keep: list[int], body: Callable[[int], int | None]) -> tuple[int, int]:
    """Start ``body(read_fd)`` in a process of its own session that ignores the
    terminal's signals and has only ``keep``, the read end of its pipe and stderr
    open. Returns the write end of the pipe and the janitor's pid once the janitor is
    in its session: a signal to vbdecl's process group (a SIGKILL of the whole run)
    no longer reaches it; OSError if it died before. What ``body`` returns is the
    janitor's exit status (:func:`dismiss` returns it); 1 if it raised."""
    from vbdecl.sys import proc as sysproc

    r, w = os.pipe2(os.O_CLOEXEC)
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(w)
            os.close(ready_r)
            os.setsid()
            for sig in (signals.SIGINT, signals.SIGTERM, signals.SIGHUP, signals.SIGQUIT):
                signals.signal(sig, signals.SIG_IGN)
            signals.pthread_sigmask(signals.SIG_SETMASK, ())
            try:
                os.write(ready_w, b"r")
            except OSError:
                pass        # (vbdecl stopped waiting, interrupted: the body sees its pipe end)
            os.close(ready_w)
            null = os.open("/dev/null", os.O_RDWR)
            os.dup2(null, 0)
            os.dup2(null, 1)
            sysproc.close_fds_except([r, *keep])
            sysproc.set_name(name)
            status = body(r) or 0
        finally:
            os._exit(status)
    os.close(r)
    os.close(ready_w)
    try:
        # (a build that kills the run's group at once, as a test does, beat it to it)
        ready = os.read(ready_r, 1)
    except BaseException:
        # an interrupt: the janitor goes on as after vbdecl's death (nothing has landed
        # yet for it to undo); nobody waits for it but init, once vbdecl is gone
        os.close(w)
        raise
    finally:
        os.close(ready_r)
    if ready != b"r":
        os.close(w)
        os.waitpid(pid, 0)
        raise OSError(f"the {name} process died as it started")
    return w, pid


def read_lines(fd: int) -> list[bytes]:
    """Every whole line written to ``fd`` until its write end is closed (vbdecl may
    have been killed half-way through the last)."""
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks).split(b"\n")[:-1]


def wait_gone(pid: int | None, started: int | None) -> None:
    """Return once the sandbox's first process is gone: after vbdecl's death it may
    live on (``die_with_parent: false``)."""
    import time

    from vbdecl.sys import proc as sysproc

    while pid and sysproc.alive(pid, started):
        time.sleep(0.1)


def dismiss(fd: int, pid: int) -> int | None:
    """End the janitor's pipe and wait for it to finish its work; its exit status
    (None if it is not ours to wait for)."""
    os.close(fd)
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return None
    return os.waitstatus_to_exitcode(status)
