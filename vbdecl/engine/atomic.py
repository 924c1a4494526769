"""Durable file writes: temp file, fsync, rename, fsync of the directory."""

from __future__ import annotations

import json
import os
from typing import Any


def fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(path: str | os.PathLike[str], data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    directory, name = os.path.split(os.fspath(path))
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    os.close(fd)
    os.rename(tmp, path)
    fsync_dir(directory or ".")


def write_json(path: str | os.PathLike[str], obj: Any, mode: int = 0o600) -> None:
    # compact: the C encoder (indent would force the slow pure-Python one)
    write_bytes(path, (json.dumps(obj, sort_keys=True, separators=(",", ":")) + "\n").encode(), mode)


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read JSON, raising StateError that names the file when it is corrupt."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise
    except OSError as exc:
        from vbdecl.errors import StateError

        raise StateError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        return json.loads(text)
    except ValueError as exc:
        from vbdecl.errors import StateError

        raise StateError(f"{path} is not valid JSON ({exc})",
                         hint="restore it from a backup, or move it away to forget that state") from exc
