"""Marshal copies of committed state, for ``vbdecl exec`` (``<cache>/state/``).

``exec`` would pay ~4 ms to import json (and re, enum) on every start, so
:func:`vbdecl.runtime.live.load_state` keeps a marshal copy of an
environment's ``state.json`` in the cache directory, keyed by the file's path,
inode, size and mtime. A copy holds the whole state, ``process.env`` values
and the plan's file contents included, so it must not outlive its
environment: :func:`forget` removes it when the environment is destroyed,
and with it every copy whose ``state.json`` is gone (environments destroyed
before copies were removed, state directories deleted by hand).

Imports only what exec's start-up already has (this module is on its path).
"""

from __future__ import annotations

from vbdecl.engine import cachefile
from vbdecl.engine.paths import cache_dir
from vbdecl.sys import oslite as os

COPIES = 256   # copies kept (beyond that the oldest half goes)


def copies_dir() -> str:
    return os.path.join(cache_dir(), "state")


def copy_path(state_file: str) -> str:
    """Where the copy of ``state_file`` (an absolute path) is kept."""
    from vbdecl.hashing import sha256

    digest = sha256(state_file.encode("utf-8", "surrogateescape")).hexdigest()
    return os.path.join(copies_dir(), digest + ".marshal")


def forget(state_file: str) -> None:
    """Remove the copy of ``state_file`` and every copy whose state file is gone."""
    try:
        os.unlink(copy_path(state_file))
    except OSError:
        pass
    sweep()


def sweep() -> list[str]:
    """Remove the copies whose ``state.json`` no longer exists; the paths removed."""
    d = copies_dir()
    try:
        names = os.listdir(d)
    except OSError:
        return []
    gone = []
    for name in names:
        path = os.path.join(d, name)
        if not name.endswith(".marshal"):
            continue
        entry = cachefile.read_any(path)
        key = entry.get("key") if entry is not None else None
        source = key.split("\0", 1)[0] if isinstance(key, str) else ""
        if source and os.path.exists(source):
            continue
        try:
            os.unlink(path)     # its state is gone (or it is no copy we can read)
            gone.append(path)
        except OSError:
            pass
    return gone
