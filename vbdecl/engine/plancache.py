"""The plan cache: the fast path of ``vbdecl run FILE``.

A manifest's compiled plans are stored as JSON keyed by a hash of the
file's bytes, its absolute path (relative bind sources are resolved against
the manifest's directory), the tool version and the plan format; the key
also covers the modification times of the model and plan modules, so a
changed compiler never serves a stale plan. Only on a miss is the model
imported (pydantic, ruamel), the file validated and compiled.

Location: ``$VBDECL_CACHE_DIR``, else ``/var/cache/vbdecl`` for root, else
``$XDG_CACHE_HOME/vbdecl`` (``~/.cache/vbdecl``). Writes are atomic
(temporary file, then rename); an unreadable or corrupt entry is a miss;
an unwritable cache directory is not an error.

This module must stay cheap to import: stdlib only, nothing heavy.
"""

from __future__ import annotations

import json
import os
from typing import Any

from vbdecl import __version__

FORMAT = 1
MAX_ENTRIES = 512
_PKG = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_fingerprint: str | None = None


def cache_dir() -> str:
    env = os.environ.get("VBDECL_CACHE_DIR")
    if env:
        return env
    if os.geteuid() == 0:
        return "/var/cache/vbdecl"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(xdg, "vbdecl")


def _code_fingerprint() -> str:
    """Modification times of the modules that shape a plan."""
    global _fingerprint
    if _fingerprint is None:
        parts = []
        for sub in ("model", "plan"):
            base = os.path.join(_PKG, sub)
            try:
                with os.scandir(base) as it:
                    for entry in it:
                        if entry.name.endswith(".py"):
                            parts.append(f"{sub}/{entry.name}:{entry.stat().st_mtime_ns}")
            except OSError:
                continue
        _fingerprint = ";".join(sorted(parts))
    return _fingerprint


def _sha256() -> Any:
    """SHA-256 from CPython's built-in module when it has one: ``hashlib`` loads
    OpenSSL, which costs the run path ~4 MiB of memory and a few ms."""
    try:
        from _sha2 import sha256  # Python >= 3.12
    except ImportError:
        try:
            from _sha256 import sha256  # Python 3.11
        except ImportError:
            from hashlib import sha256
    return sha256()


def cache_key(path: str, data: bytes) -> str:
    h = _sha256()
    absolute = os.path.abspath(path)
    for part in ("vbdecl-plan-cache", str(FORMAT), __version__, _code_fingerprint(),
                 absolute, os.path.realpath(absolute)):
        h.update(part.encode("utf-8", "surrogateescape"))
        h.update(b"\0")
    h.update(data)
    digest: str = h.hexdigest()
    return digest


def _entry_path(key: str) -> str:
    return os.path.join(cache_dir(), "plans", key[:2], key + ".json")


def lookup(key: str) -> list[dict[str, Any]] | None:
    try:
        with open(_entry_path(key), "rb") as f:
            entry = json.loads(f.read())
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("key") != key:
        return None
    plans = entry.get("plans")
    return plans if isinstance(plans, list) else None


def store(key: str, plans: list[dict[str, Any]]) -> None:
    import tempfile  # only on a miss: a hit should not pay for it

    target = _entry_path(key)
    directory = os.path.dirname(target)
    try:
        os.makedirs(directory, mode=0o755, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"key": key, "plans": plans}, f, separators=(",", ":"), ensure_ascii=False)
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except (OSError, ValueError):   # unwritable, or a path JSON cannot carry: just no cache
        return
    _prune(os.path.dirname(directory))


def _prune(root: str) -> None:
    """Keep at most MAX_ENTRIES entries: drop the oldest half beyond that."""
    try:
        files = []
        for sub in os.scandir(root):
            if sub.is_dir():
                files += [(e.stat().st_mtime_ns, e.path) for e in os.scandir(sub.path)
                          if e.name.endswith(".json")]
        if len(files) <= MAX_ENTRIES:
            return
        files.sort()
        for _, p in files[: len(files) - MAX_ENTRIES // 2]:
            os.unlink(p)
    except OSError:
        return


def plans_for_file(path: str, *, use_cache: bool = True) -> list[dict[str, Any]]:
    """The compiled plans of a manifest file, from the cache when possible."""
    with open(path, "rb") as f:
        data = f.read()
    key = cache_key(path, data) if use_cache else ""
    if use_cache:
        hit = lookup(key)
        if hit is not None:
            return hit
    from vbdecl.plan.compile import compile_file

    plans = compile_file(path)
    if use_cache:
        store(key, plans)
    return plans
