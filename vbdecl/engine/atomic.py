"""Durable file writes: temp file, fsync, rename, fsync of the directory."""

from __future__ import annotations

import json
import os
import time
from typing import Any


def fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(path: str | os.PathLike[str], data: bytes, mode: int = 0o600, *,
                durable: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically (readers see the old or the new
    file, whole) and, with ``durable``, so that it survives a crash."""
    directory, name = os.path.split(os.fspath(path))
    # a fresh name each time (every sandbox's pid 1 is pid 1), never followed if planted
    tmp = os.path.join(directory, f".{name}.{os.getpid()}-{os.urandom(4).hex()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as err:
        raise _naming(err, path) from None
    try:
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(err, OSError):
            raise _naming(err, path) from None
        raise
    if durable:
        fsync_dir(directory or ".")
    _sweep(directory or ".", name)


def _naming(err: OSError, path: str | os.PathLike[str]) -> OSError:
    """``err`` about ``path``, the file the caller asked for: the temp file it names
    is gone, and a person never asked for it."""
    err.filename, err.filename2 = os.fspath(path), None
    return err


# A temp file older than this is no write in progress (those take milliseconds)
STALE_SECONDS = 60


def _sweep(directory: str, name: str) -> None:
    """Remove the temp files of ``name`` that a writer killed between creating and
    renaming them left (a crash review's SIGKILLs left .nat.json.PID-X.tmp in
    /run/vbdecl): old ones whose writer is gone. The pid in a name may be one of
    another pid namespace's, so age decides too."""
    prefix = f".{name}."
    try:
        names = [n for n in os.listdir(directory) if n.startswith(prefix) and n.endswith(".tmp")]
    except OSError:
        return
    if not names:
        return
    from vbdecl.sys.proc import alive

    for tmp in names:
        pid = tmp[len(prefix):].split("-", 1)[0]
        path = os.path.join(directory, tmp)
        try:
            if time.time() - os.lstat(path).st_mtime < STALE_SECONDS or (pid.isdigit() and alive(int(pid), None)):
                continue
            os.unlink(path)
        except OSError:
            pass


def write_json(path: str | os.PathLike[str], obj: Any, mode: int = 0o600, *,
               durable: bool = True) -> None:
    # compact: the C encoder (indent would force the slow pure-Python one)
    write_bytes(path, (json.dumps(obj, sort_keys=True, separators=(",", ":")) + "\n").encode(), mode,
                durable=durable)


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read JSON, raising StateError that names the file when it is corrupt."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise
    except OSError as exc:
        from vbdecl.errors import StateError

        hint = None
        if isinstance(exc, PermissionError):
            from vbdecl.engine.paths import permission_hint

            hint = permission_hint(path)
        raise StateError(f"cannot read {path}: {exc.strerror}", hint=hint) from exc
    try:
        return json.loads(data)
    except ValueError as exc:   # (UnicodeDecodeError too: a crash review's random bytes)
        from vbdecl.errors import StateError

        raise StateError(f"{path} is not valid JSON ({exc})",
                         hint="restore it from a backup, or move it away to forget that state") from exc
