"""The append-only journal of an environment (``envs/<name>/journal.jsonl``).

One JSON object per line, each fsync'ed before the step it announces runs:

``begin``   {txn, op: apply|destroy, base_serial, time, pid, instance, runtime_dir}
``intent``  {txn, seq, step: create|update|destroy, id, kind, params}
``done``    {txn, seq, id, record}                      (the step landed)
``undo``    {txn, seq, id}                              (about to undo step seq)
``undone``  {txn, seq, id, record}                      (undone; record of a re-create)
``commit``  {txn, serial}   ``abort`` {txn, error}
``abort``   {txn, abandoned: true}   (an apply whose rollback could not finish, given
            up by the next apply or destroy: what it left was committed as the state)

A transaction without ``commit`` or ``abort`` is *open*: the command died
(or could not finish its rollback) and the next command recovers it.

Test hook: ``VBDECL_TEST_CRASH_AFTER=N`` makes the process SIGKILL itself
right after its N-th journal entry is durable (inert unless set).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
from pathlib import Path
from typing import Any

from vbdecl.errors import StateError

Entry = dict[str, Any]

_written = 0


def _crash_point() -> int | None:
    value = os.environ.get("VBDECL_TEST_CRASH_AFTER")
    return int(value) if value else None


class JournalError(StateError):
    """The journal could not be written (a full disk, a read-only or failing state
    directory): said as such, not as a failure of the step it was to announce."""

    def __init__(self, path: Path, exc: OSError) -> None:
        name = errno.errorcode.get(exc.errno or 0, "")
        super().__init__(f"cannot write the journal {path}: {exc.strerror or exc}" + (f" ({name})" if name else ""),
                         hint="free space for vbdecl's state (or make it writable), then run vbdecl recover "
                              "if the command was cut short")


class Journal:
    """An open journal file; :meth:`append` is durable when it returns."""

    def __init__(self, path: str | os.PathLike[str], *, sync: bool = True) -> None:
        path = Path(path)
        self.path = path
        self.sync = sync
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._repair_tail()
        self._crash_after = _crash_point()

    def _repair_tail(self) -> None:
        """Cut a torn last line (a crash in the middle of a write)."""
        size = os.fstat(self.fd).st_size
        if size == 0:
            return
        last = os.pread(self.fd, 1, size - 1)
        if last == b"\n":
            return
        chunk = 4096
        end = size
        while end > 0:
            start = max(0, end - chunk)
            data = os.pread(self.fd, end - start, start)
            nl = data.rfind(b"\n")
            if nl >= 0:
                os.ftruncate(self.fd, start + nl + 1)
                break
            end = start
        else:
            os.ftruncate(self.fd, 0)
        os.fsync(self.fd)

    def append(self, entry: Entry, *, sync: bool = True) -> None:
        global _written
        data = (json.dumps(entry, separators=(",", ":"), sort_keys=True) + "\n").encode()
        view = memoryview(data)
        start = os.fstat(self.fd).st_size
        try:
            while view:
                n = os.write(self.fd, view)
                view = view[n:]
            if self.sync and sync:
                os.fdatasync(self.fd)
        except OSError as exc:
            # a part written (a disk that filled up under it) would take the next entry
            # into its line, and read() would drop both: cut it (the session's review)
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, start)
            raise JournalError(self.path, exc) from exc
        _written += 1
        if self._crash_after is not None and _written >= self._crash_after:
            os.kill(os.getpid(), signal.SIGKILL)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read(path: str | os.PathLike[str]) -> list[Entry]:
    """Every complete entry; a torn last line is ignored."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    out: list[Entry] = []
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # torn tail (only the last line can be)
        if isinstance(entry, dict):     # (anything else was written by another program)
            out.append(entry)
    return out


def open_transaction(entries: list[Entry]) -> list[Entry] | None:
    """The entries of the last transaction if it is still open, else None."""
    start = None
    for i in range(len(entries) - 1, -1, -1):
        if entries[i].get("t") == "begin":
            start = i
            break
    if start is None:
        return None
    txn = entries[start].get("txn")
    tail = [e for e in entries[start:] if e.get("txn") == txn]
    if any(e.get("t") in ("commit", "abort") for e in tail):
        return None
    return tail
