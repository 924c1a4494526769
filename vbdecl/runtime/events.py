"""Lifecycle events: ``runtime_init_warnings``, ``spawned``, ``setup_finished``, ``exited``.

Each event is a dict ``{"event": kind, "ts": unix time, ...}`` delivered,
in the true order of the lifecycle, to every sink: the Python callback, the
``status.events`` file (JSON lines, appended) and any extra fds (JSON lines).
"""

from __future__ import annotations

import time

from vbdecl.sys import oslite as os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    Event = dict[str, Any]
    Callback = Callable[[Event], None]


class EventSink:
    def __init__(self, *, path: str | None = None, fds: list[int] | None = None,
                 callback: Callback | None = None, ns_ids: bool = True,
                 beside: list[str] | None = None) -> None:
        """``path``: the ``status.events`` file; ``beside``: the host directories the
        sandbox may write (sandbox_writable), where no symlink is followed to it."""
        self.callback = callback
        self.fds: list[int] = [_writable(fd) for fd in fds or []]
        self._names = {fd: f"events fd {fd}" for fd in self.fds}     # for a warning
        # Whether the sandbox's namespace ids are read for the events' "ns" (~0.25 ms):
        # always for JSON lines, which go out whole; the caller says if its callback
        # and the history need them.
        self.ns_ids = ns_ids or bool(fds or path)
        self._own: list[int] = []
        self.history: list[Event] = []
        if path:
            from vbdecl.runtime.rootfs import open_status_file

            try:     # (no symlink the sandbox may have made: see open_status_file)
                fd = open_status_file(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, beside or [])
            except OSError as exc:
                from vbdecl.errors import RuntimeSetupError

                raise RuntimeSetupError(f"cannot open the events file {path}: {exc.strerror}",
                                        hint=getattr(exc, "hint", None)
                                        or "status.events must be in a writable directory, "
                                           "and not a symlink") from None
            self._own.append(fd)
            self.fds.append(fd)
            self._names[fd] = f"the events file {path}"

    def emit(self, kind: str, **fields: Any) -> Event:
        event: Event = {"event": kind, "ts": time.time(), **fields}
        self.history.append(event)
        if self.fds:
            import json  # only for a sink that takes JSON lines: the hot path has none

            line = (json.dumps(event, separators=(",", ":")) + "\n").encode()
            for fd in list(self.fds):
                if not _write_all(fd, line, self._names[fd]):
                    self.fds.remove(fd)
        if self.callback is not None:
            self.callback(event)
        return event

    def close(self) -> None:
        for fd in self._own:
            try:
                os.close(fd)
            except OSError:
                pass
        self._own.clear()


def _writable(fd: int) -> int:
    """``fd``, if it is open for writing (a sandbox must not start and then lose
    its events to a bad fd), else RuntimeSetupError saying so."""
    import fcntl

    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    except OSError:
        flags = -1
    if flags < 0 or flags & os.O_PATH or flags & os.O_ACCMODE == os.O_RDONLY:
        from vbdecl.errors import RuntimeSetupError

        what = "not open" if flags < 0 or flags & os.O_PATH else "not open for writing"
        raise RuntimeSetupError(f"events fd {fd} is {what}",
                                hint=f"give vbdecl a writable fd {fd}, e.g. `vbdecl run --events-fd {fd} "
                                     f"FILE {fd}>events.jsonl`")
    return fd


def _write_all(fd: int, data: bytes, name: str) -> bool:
    """Write ``data`` to ``fd``; False when it takes no more (its reader went away, its
    disk is full): the sandbox goes on, that sink gets no further events."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BrokenPipeError:
            return False
        except BlockingIOError:     # a non-blocking pipe whose reader is behind: wait for it
            import select

            if select.select([], [fd], [], 5.0)[1]:
                continue
            return _gave_up(name, "its reader took no events for 5 seconds")
        except OSError as exc:
            return _gave_up(name, exc.strerror or str(exc))
        view = view[n:]
    return True


def _gave_up(name: str, why: str) -> bool:
    import sys

    print(f"vbdecl: warning: {name}: {why}; no further events go to it", file=sys.stderr)
    return False
