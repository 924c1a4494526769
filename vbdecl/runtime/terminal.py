"""``vbdecl exec -t``: a terminal of the environment's own for the command.

The caller's terminal is a host device the environment cannot name (its
``/dev/pts`` is its own devpts), so a command given it as it is finds no
``ttyname()``: ``tty`` says "not a tty", and programs that look their terminal up
fail. With ``-t`` the command's child opens the environment's ``/dev/ptmx``
(it is in the environment's mount namespace by then), takes the new terminal's
other end as its stdin, stdout, stderr and controlling terminal in a session of
its own, and hands the multiplexer end to vbdecl over a socket. vbdecl puts the
caller's terminal in raw mode and relays both ways, the window size with them,
until the command has exited, then sets the terminal back (as ``docker exec -t``).
A stop of vbdecl (``kill -TSTP``) sets the caller's terminal back first, and its
continuation (``fg``) makes it raw again, as ssh does. A caller whose stdin is
no terminal (a script, CI) gives it to the command as it is, as ``vbdecl exec``
without ``-t`` does: only its output and its controlling terminal are the new
terminal, so that its input ends where the caller's ends (a terminal has no
end-of-file a pipe's reader could be given for good).

Everything here is imported before the fork: once in the environment's mount
namespace, the child imports nothing more (its files are the environment's).
"""

from __future__ import annotations

import _struct as struct
import contextlib
import errno
import fcntl
import os
import select
import socket
import stat
import termios
import time
import tty

from vbdecl.runtime.child import SI_KERNEL
from vbdecl.runtime.spawn import SignalGuard, take_signal
from vbdecl.sys import mount as m
from vbdecl.sys import signals

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

TIOCSPTLCK = 0x40045431     # unlock the new terminal
TIOCGPTPEER = 0x5441        # open its other end from the multiplexer, not through a path
PTMX = (5, 2)               # the multiplexer's device number, devpts's own too
_TYPED: dict[int, int] = {signals.SIGINT: termios.VINTR, signals.SIGQUIT: termios.VQUIT}


def pair() -> tuple[socket.socket, socket.socket]:
    """(vbdecl's end, the child's end) of the socket the multiplexer goes over."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)   # (its end: the child gone)


def with_term(proc: dict[str, Any]) -> dict[str, str]:
    """The command's ``env`` with TERM for its new terminal where it would have none
    (``clear_env``, or a caller without one): the caller's, else ``xterm``, as ``docker
    exec -t`` sets it. One the manifest unsets stays unset."""
    env = dict(proc.get("env") or {})
    if "TERM" in env or "TERM" in (proc.get("unset_env") or ()):
        return env
    if proc.get("clear_env") or "TERM" not in os.environ:
        env["TERM"] = os.environ.get("TERM") or "xterm"
    return env


def take_in_child(sock: socket.socket, stdin: bool) -> None:
    """In the child, inside the environment: a new terminal of its devpts, both ends
    sent to vbdecl (which gives the terminal to the command's user, :func:`receive`,
    before the child goes on), the other end (the caller's window size on it) made
    stdout, stderr, stdin with ``stdin``, and the controlling terminal of a new
    session. OSError when the environment has none."""
    # (opened with the host's privileges: no link is followed, magic or not, and the
    # node must be the multiplexer on the filesystem of /dev/pts itself; a review had
    # /dev/ptmx point at /proc/self/fd/0, the caller's own terminal then)
    pts = m.openat2(m.AT_FDCWD, "/dev/pts", os.O_PATH | os.O_DIRECTORY,
                    resolve=m.RESOLVE_NO_SYMLINKS | m.RESOLVE_NO_MAGICLINKS)
    try:
        master = m.openat2(pts, "ptmx", os.O_RDWR | os.O_NOCTTY,
                           resolve=m.RESOLVE_NO_SYMLINKS | m.RESOLVE_NO_MAGICLINKS | m.RESOLVE_NO_XDEV)
        same_fs = os.fstat(pts).st_dev
    finally:
        os.close(pts)
    try:
        st = os.fstat(master)
        if not stat.S_ISCHR(st.st_mode) or (os.major(st.st_rdev), os.minor(st.st_rdev)) != PTMX \
                or st.st_dev != same_fs:
            raise OSError(errno.ENODEV, "/dev/pts/ptmx is not a terminal multiplexer")
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
        peer = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY)
        copy_size(peer)     # (before the command starts: it may read it at once)
        socket.send_fds(sock, [b"m"], [master, peer])
        sock.recv(1)        # (vbdecl's word that the terminal is the user's; or its end)
    finally:
        os.close(master)
        sock.close()
    os.setsid()
    fcntl.ioctl(peer, termios.TIOCSCTTY, 0)
    for std in (0, 1, 2) if stdin else (1, 2):
        os.dup2(peer, std)
    if peer > 2:
        os.close(peer)


def receive(sock: socket.socket, owner: tuple[int, int] | None) -> int:
    """vbdecl's side: the multiplexer the child sent (-1 when it failed first: its error
    comes through the child's error pipe), its terminal given to ``owner`` (the
    command's uid and gid as the host knows them: inside a user namespace the host's
    root, who made it, is no one the command could be), so that the command may open
    it again by its name, as a login's terminal is its user's."""
    try:
        _msg, fds, _flags, _addr = socket.recv_fds(sock, 16, 2, socket.MSG_CMSG_CLOEXEC)
        if len(fds) == 2 and owner is not None:
            with contextlib.suppress(OSError):  # (the fd is enough to use it)
                os.fchown(fds[1], *owner)
        sock.send(b"k")
    except OSError:
        fds = []
    finally:
        sock.close()
    for extra in fds[1:]:
        os.close(extra)
    return fds[0] if fds else -1


def outside_ids(proc_dir: int, uid: int, gid: int) -> tuple[int, int] | None:
    """``uid`` and ``gid`` of the user namespace of the process whose /proc directory is
    ``proc_dir``, as the host's; None when either is not mapped (or both are root's)."""
    out = []
    for name, inside in (("uid_map", uid), ("gid_map", gid)):
        try:
            fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=proc_dir)
            try:
                lines = os.read(fd, 65536).decode().splitlines()
            finally:
                os.close(fd)
        except OSError:
            return None
        for line in lines:
            first, lower, count = (int(f) for f in line.split())
            if first <= inside < first + count:
                out.append(lower + inside - first)
                break
        else:
            return None
    return None if out == [0, 0] else (out[0], out[1])


def copy_size(end: int) -> None:
    """The caller's window size onto the environment's terminal, through either of its
    ends (which signals its foreground processes, as a terminal's own resize does)."""
    with contextlib.suppress(OSError):
        size = fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(end, termios.TIOCSWINSZ, size)


class Caller:
    """The caller's side of the relay: its stdin, in raw mode while it is a terminal
    that vbdecl has in the foreground."""

    def __init__(self) -> None:
        self.is_terminal = os.isatty(0)
        self.saved: list[Any] | None = None     # (the modes it had before vbdecl made it raw)
        self.raw = False    # (made raw by vbdecl, to be set back; only then is it read)

    def follow(self) -> None:
        """Raw while vbdecl is in the foreground: what the caller types goes to the
        environment's terminal as it is (^C too, whose line discipline there makes it
        the command's SIGINT). From the background the terminal is the foreground job's,
        neither changed nor read (a read there stops vbdecl, SIGTTIN, and goes on
        blocking, cooked, after `fg`: a review); `fg` sends a running job no SIGCONT,
        so this is asked again while it runs."""
        if self.is_terminal and not self.raw and _in_foreground():
            with contextlib.suppress(termios.error, OSError):
                self.saved = termios.tcgetattr(0)
                tty.setraw(0, termios.TCSANOW)
                self.raw = True

    def continued(self) -> None:
        """After a stop: whoever had the terminal meanwhile set it as they like."""
        self.raw = False
        self.follow()

    def set_back(self) -> None:
        """The terminal as it was, where vbdecl made it raw, is in its foreground (else
        its shell set it as it likes when vbdecl stopped) and it is still there to set
        (hung up: nothing to do); never a stop for it (SIGTTOU)."""
        was_raw, self.raw = self.raw, False
        if not was_raw or self.saved is None or not _in_foreground():
            return
        old = signals.pthread_sigmask(signals.SIG_BLOCK, {signals.SIGTTOU})
        try:
            with contextlib.suppress(termios.error, OSError):
                termios.tcsetattr(0, termios.TCSADRAIN, self.saved)
        finally:
            signals.pthread_sigmask(signals.SIG_SETMASK, old)


def _in_foreground() -> bool:
    try:
        return os.tcgetpgrp(0) == os.getpgrp()
    except OSError:
        return False


@contextlib.contextmanager
def raw() -> Iterator[Caller]:
    """The caller's terminal in raw mode for the time of the block, set back at its end."""
    caller = Caller()
    try:
        caller.follow()
        yield caller
    finally:
        caller.set_back()


def pump(pid: int, guard: SignalGuard, master: int, caller: Caller) -> int:
    """Relay between the caller's stdin and stdout and ``master`` until ``pid`` (the
    command) has exited, taking the guarded signals meanwhile (SIGWINCH: the size;
    SIGTSTP: stop, the terminal set back; SIGCONT: raw again; SIGINT and SIGQUIT the
    caller's terminal sent: typed into the command's; the rest forwarded to it); its
    wait status. In this thread: a process that has joined a pid namespace may start
    no thread (clone refuses CLONE_THREAD then)."""
    copy_size(master)
    os.set_blocking(master, False)
    poller = select.poll()
    poller.register(master, select.POLLIN)
    reading = False     # (the caller's stdin: only while vbdecl has it raw)
    stdin_open = caller.is_terminal
    output = [1]    # (emptied once the caller's stdout is gone: the command's output is dropped)
    hung_up = False
    # SIGTSTP, which vbdecl otherwise leaves to its default (the terminal's job control),
    # is taken here: the caller's terminal must be set back before vbdecl stops
    waitset = guard.waitset | {signals.SIGTSTP} if guard.forward else set()
    blocked = signals.pthread_sigmask(signals.SIG_BLOCK, {signals.SIGTSTP}) if guard.forward else None
    try:
        while True:
            wpid, status = os.waitpid(pid, os.WNOHANG)
            if wpid == pid:
                # what the command wrote last (a process it left may hold the terminal
                # open: a short while, never its whole life)
                deadline = time.monotonic() + 0.2
                while time.monotonic() < deadline and select.select([master], [], [], 0.05)[0]:
                    if not _pass(master, output):
                        break
                return status
            caller.follow()
            if reading != (stdin_open and caller.raw):
                reading = not reading
                if reading:
                    poller.register(0, select.POLLIN)
                else:
                    poller.unregister(0)
            for fd, _events in poller.poll(100):
                if fd == 0:
                    if not _pass(0, [master]):
                        stdin_open = reading = False     # (the caller's terminal hung up)
                        poller.unregister(0)
                elif not _pass(master, output):
                    poller.unregister(master)   # (every end of ours closed)
                elif not output and not hung_up:
                    # (its output has nowhere to go, `vbdecl exec -t web -- yes | head -1`:
                    # a hangup, as the terminal's own end closing would send it)
                    hung_up = True
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signals.SIGHUP)
            while waitset and (info := signals.sigtimedwait(waitset, 0)) is not None:
                if info.si_signo == signals.SIGTSTP:
                    caller.set_back()
                    os.kill(os.getpid(), signals.SIGSTOP)   # (until SIGCONT, taken next)
                    continue
                if info.si_signo == signals.SIGCONT:
                    caller.continued()
                    copy_size(master)
                if info.si_code == SI_KERNEL and info.si_signo in _TYPED:
                    # the caller's terminal, not raw (stdin is no terminal), signalled its
                    # foreground job, vbdecl: typed into the command's terminal, it signals
                    # the job in that terminal's foreground (a review's ^C, forwarded,
                    # reached the shell only, which waited for its sleep)
                    _type(master, _TYPED[info.si_signo])
                    continue
                take_signal(info, pid, pid, True, on_winch=lambda: copy_size(master))
    finally:
        if blocked is not None:
            signals.sigtimedwait({signals.SIGTSTP}, 0)     # (one that came too late: not a stop now)
            signals.pthread_sigmask(signals.SIG_SETMASK, blocked)


def _type(master: int, key: int) -> None:
    """The character the terminal's settings give ``key`` (termios.VINTR, VQUIT), typed."""
    with contextlib.suppress(termios.error, OSError):
        char = termios.tcgetattr(master)[6][key]
        os.write(master, char if isinstance(char, bytes) else bytes([char]))


def _pass(src: int, dst: list[int]) -> bool:
    """Copy what ``src`` has to the fd in ``dst``, if any (emptied when writing there
    fails: a closed pipe must not stop the reading, or the command would block on a
    full terminal for good); False at ``src``'s end (EIO: a terminal whose other end is
    closed)."""
    try:
        data = os.read(src, 65536)
    except BlockingIOError:
        return True
    except OSError:
        return False
    if not data:
        return False
    view = memoryview(data)
    while view and dst:
        try:
            view = view[os.write(dst[0], view):]
        except InterruptedError:
            continue
        except BlockingIOError:
            select.select([], [dst[0]], [], 1)
        except OSError:
            dst.clear()
    return True
