"""Cache entries: one marshal file per key (compiled plans, seccomp programs).

marshal is built into the interpreter, so reading an entry imports nothing
(json would cost a start-up ~3 ms); its format is the interpreter's own, so
keys must cover the interpreter where that matters. An entry is a dict that
carries its own key: a corrupt, foreign or truncated file is a miss, never
an error, and so is a cache directory that cannot be written. Whoever can
write the cache can change what runs, so it is trusted as the plans are.
"""

from __future__ import annotations

import marshal

from vbdecl.sys import oslite as os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


_PKG = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def code_fingerprint(*parts: str) -> str:
    """Modification times of vbdecl's modules ``parts`` (package-relative files, or
    directories for every module in them): keys include it, so changed code never
    serves an entry that older code made."""
    found = []
    for part in parts:
        path = os.path.join(_PKG, part)
        try:
            if part.endswith(".py"):
                found.append(f"{part}:{os.stat(path).st_mtime_ns}")
                continue
            with os.scandir(path) as it:
                found += [f"{part}/{e.name}:{e.stat().st_mtime_ns}" for e in it if e.name.endswith(".py")]
        except OSError:
            found.append(f"{part}:?")
    return ";".join(sorted(found))


def read(path: str, key: str) -> dict[str, Any] | None:
    """The entry at ``path`` if it is one and carries ``key``, else None."""
    entry = read_any(path)
    if entry is None or entry.get("key") != key:
        return None
    return entry


def read_any(path: str) -> dict[str, Any] | None:
    """The entry at ``path`` whatever its key, or None if it is not one."""
    try:
        with open(path, "rb") as f:
            entry = marshal.loads(f.read())
    except Exception:    # unreadable or corrupt (marshal may raise more than ValueError): a miss
        return None
    return entry if isinstance(entry, dict) else None


def write(path: str, entry: dict[str, Any]) -> bool:
    """Store ``entry`` (with its ``key``) at ``path`` atomically; False if it could not be."""
    from vbdecl.engine import atomic  # only on a miss: a hit should not pay for it

    try:
        from os import makedirs

        makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        atomic.write_bytes(path, marshal.dumps(entry), durable=False)   # a lost entry is a miss
    except (OSError, ValueError):   # unwritable, or a value marshal cannot carry
        return False
    return True


def prune(root: str, keep: int) -> None:
    """Keep at most ``keep`` entries under ``root``: beyond that, drop the oldest half
    (temporaries a killed writer left count as entries, so they go too)."""
    try:
        from os import walk

        files = []
        for directory, _, names in walk(root):
            for name in names:
                if name.endswith((".marshal", ".json", ".tmp")):   # .json: the plans' first format
                    path = os.path.join(directory, name)
                    files.append((os.stat(path).st_mtime_ns, path))
        if len(files) <= keep:
            return
        files.sort()
        for _, path in files[: len(files) - keep // 2]:
            os.unlink(path)
    except OSError:
        return
