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

Everything here is imported before the fork: once in the environment's mount
namespace, the child imports nothing more (its files are the environment's).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import socket
import stat
import struct
import termios
import time
import tty
from collections.abc import Iterator

from vbdecl.runtime.spawn import SignalGuard, take_signal
from vbdecl.sys import mount as m
from vbdecl.sys import signals

TIOCSPTLCK = 0x40045431     # unlock the new terminal
TIOCGPTPEER = 0x5441        # open its other end from the multiplexer, not through a path
PTMX = (5, 2)               # the multiplexer's device number, devpts's own too


def pair() -> tuple[socket.socket, socket.socket]:
    """(vbdecl's end, the child's end) of the socket the multiplexer goes over."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)   # (its end: the child gone)


def take_in_child(sock: socket.socket) -> None:
    """In the child, inside the environment: a new terminal of its devpts, the
    multiplexer sent to vbdecl, the other end (the caller's window size on it) made
    stdin, stdout, stderr and the controlling terminal of a new session. OSError
    when the environment has none."""
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
        socket.send_fds(sock, [b"m"], [master])
    finally:
        os.close(master)
        sock.close()
    os.setsid()
    fcntl.ioctl(peer, termios.TIOCSCTTY, 0)
    for std in (0, 1, 2):
        os.dup2(peer, std)
    if peer > 2:
        os.close(peer)


def receive(sock: socket.socket) -> int:
    """vbdecl's side: the multiplexer the child sent, -1 when it failed first (its
    error comes through the child's error pipe)."""
    try:
        _msg, fds, _flags, _addr = socket.recv_fds(sock, 16, 1, socket.MSG_CMSG_CLOEXEC)
    except OSError:
        fds = []
    finally:
        sock.close()
    for extra in fds[1:]:
        os.close(extra)
    return fds[0] if fds else -1


def copy_size(end: int) -> None:
    """The caller's window size onto the environment's terminal, through either of its
    ends (which signals its foreground processes, as a terminal's own resize does)."""
    with contextlib.suppress(OSError):
        size = fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(end, termios.TIOCSWINSZ, size)


@contextlib.contextmanager
def raw() -> Iterator[None]:
    """The caller's terminal in raw mode for the time of the block: what it types goes
    to the environment's terminal as it is (^C too, whose line discipline there makes
    it the command's SIGINT). Set back at the end, if it is still there to set."""
    saved = termios.tcgetattr(0)
    try:
        tty.setraw(0, termios.TCSANOW)
        yield
    finally:
        with contextlib.suppress(termios.error, OSError):    # (hung up: nothing to set back)
            termios.tcsetattr(0, termios.TCSADRAIN, saved)


def pump(pid: int, guard: SignalGuard, master: int) -> int:
    """Relay between the caller's terminal and ``master`` until ``pid`` (the command)
    has exited, taking the guarded signals meanwhile (SIGWINCH: the size; the others
    forwarded to it); its wait status. In this thread: a process that has joined a pid
    namespace may start no thread (clone refuses CLONE_THREAD then)."""
    copy_size(master)
    os.set_blocking(master, False)
    poller = select.poll()
    for fd in (0, master):
        poller.register(fd, select.POLLIN)
    output = [1]    # (emptied once the caller's stdout is gone: the command's output is dropped)
    hung_up = False
    while True:
        wpid, status = os.waitpid(pid, os.WNOHANG)
        if wpid == pid:
            # what the command wrote last (a process it left may hold the terminal open:
            # a short while, never its whole life)
            deadline = time.monotonic() + 0.2
            while time.monotonic() < deadline and select.select([master], [], [], 0.05)[0]:
                if not _pass(master, output):
                    break
            return status
        for fd, _events in poller.poll(100):
            if not (_pass(master, output) if fd == master else _pass(0, [master])):
                poller.unregister(fd)   # (every end of ours closed, or the caller's terminal hung up)
            elif fd == master and not output and not hung_up:
                # (its output has nowhere to go, `vbdecl exec -t web -- yes | head -1`: a
                # hangup, as the terminal's own end closing would send it)
                hung_up = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signals.SIGHUP)
        while guard.forward and (info := signals.sigtimedwait(guard.waitset, 0)) is not None:
            take_signal(info, pid, pid, True, on_winch=lambda: copy_size(master))


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
