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
import tty
from collections.abc import Iterator

TYPE_CHECKING = False
if TYPE_CHECKING:
    from vbdecl.runtime.spawn import SignalGuard

TIOCSPTLCK = 0x40045431     # unlock the new terminal
TIOCGPTPEER = 0x5441        # open its other end from the multiplexer, not through a path
PTMX = (5, 2)               # the multiplexer's device number, devpts's own too


def pair() -> tuple[socket.socket, socket.socket]:
    """(vbdecl's end, the child's end) of the socket the multiplexer goes over."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)   # (its end: the child gone)


def take_in_child(sock: socket.socket) -> None:
    """In the child, inside the environment: a new terminal of its devpts, the
    multiplexer sent to vbdecl, the other end made stdin, stdout, stderr and the
    controlling terminal of a new session. OSError when the environment has none."""
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        st = os.fstat(master)
        # (opened with the host's privileges: only the environment's multiplexer, never
        # another file root inside put at /dev/ptmx)
        if not stat.S_ISCHR(st.st_mode) or (os.major(st.st_rdev), os.minor(st.st_rdev)) != PTMX:
            raise OSError(errno.ENODEV, "/dev/ptmx is not a terminal multiplexer")
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
        peer = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY)
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
        _msg, fds, _flags, _addr = socket.recv_fds(sock, 16, 1)
    except OSError:
        fds = []
    finally:
        sock.close()
    for extra in fds[1:]:
        os.close(extra)
    return fds[0] if fds else -1


def copy_size(master: int) -> None:
    """The caller's window size onto the environment's terminal (which signals its
    foreground processes, as a terminal's own resize does)."""
    with contextlib.suppress(OSError):
        size = fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(master, termios.TIOCSWINSZ, size)


@contextlib.contextmanager
def raw() -> Iterator[None]:
    """The caller's terminal in raw mode for the time of the block: what it types goes
    to the environment's terminal as it is (^C too, whose line discipline there makes
    it the command's SIGINT)."""
    saved = termios.tcgetattr(0)
    try:
        tty.setraw(0, termios.TCSANOW)
        yield
    finally:
        termios.tcsetattr(0, termios.TCSADRAIN, saved)


def pump(pid: int, guard: SignalGuard, master: int) -> int:
    """Relay between the caller's terminal and ``master`` until ``pid`` (the command)
    has exited, taking the guarded signals meanwhile (SIGWINCH: the size; the others
    forwarded to it); its wait status. In this thread: a process that has joined a pid
    namespace may start no thread (clone refuses CLONE_THREAD then)."""
    from vbdecl.runtime.spawn import take_signal
    from vbdecl.sys import signals

    copy_size(master)
    poller = select.poll()
    for fd in (0, master):
        poller.register(fd, select.POLLIN)
    while True:
        wpid, status = os.waitpid(pid, os.WNOHANG)
        if wpid == pid:
            # (what the command wrote last, still in the terminal: until its end, EIO)
            while poller.poll(50) and _pass(master, 1):
                pass
            return status
        for fd, _events in poller.poll(100):
            if not _pass(fd, master if fd == 0 else 1):
                poller.unregister(fd)   # (the caller's terminal hung up, or every end of ours closed)
        while guard.forward and (info := signals.sigtimedwait(guard.waitset, 0)) is not None:
            take_signal(info, pid, pid, True, on_winch=lambda: copy_size(master))


def _pass(src: int, dst: int) -> bool:
    """Copy what ``src`` has to ``dst``; False at its end (EIO: a terminal whose other
    end is closed)."""
    try:
        data = os.read(src, 65536)
    except OSError:
        return False
    if not data:
        return False
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(dst, view):]
        except InterruptedError:
            continue
        except OSError:
            return False
    return True
