"""The plan cache: the fast path of ``vbdecl run FILE``.

A manifest's compiled plans are stored keyed by a hash of the file's bytes,
its absolute path (relative bind sources are resolved against the
manifest's directory), the tool version and the plan format; the key also
covers the modification times of the model and plan modules, so a changed
compiler never serves a stale plan. Only on a miss is the model imported
(pydantic, ruamel), the file validated and compiled.

Entries are marshal files (:mod:`vbdecl.engine.cachefile`); the key includes
the interpreter's cache tag, since marshal's format is the interpreter's own.

Location: ``$VBDECL_CACHE_DIR``, else ``/var/cache/vbdecl`` for root, else
``$XDG_CACHE_HOME/vbdecl`` (``~/.cache/vbdecl``). Writes are atomic
(temporary file, then rename); an unreadable or corrupt entry is a miss;
an unwritable cache directory is not an error.

This module must stay cheap to import: stdlib only, nothing heavy.
"""

from __future__ import annotations

import sys

from vbdecl import __version__
from vbdecl.engine import cachefile
from vbdecl.engine.paths import cache_dir
from vbdecl.hashing import sha256
from vbdecl.sys import oslite as os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


FORMAT = 2
MAX_ENTRIES = 512
_fingerprint: str | None = None


def _code_fingerprint() -> str:
    """The modules that shape a plan."""
    global _fingerprint
    if _fingerprint is None:
        _fingerprint = cachefile.code_fingerprint("model", "plan")
    return _fingerprint


def cache_key(path: str, data: bytes) -> str:
    h = sha256()
    absolute = os.path.abspath(path)
    for part in ("vbdecl-plan-cache", str(FORMAT), __version__, str(sys.implementation.cache_tag),
                 _code_fingerprint(), absolute, os.path.realpath(absolute)):
        h.update(part.encode("utf-8", "surrogateescape"))
        h.update(b"\0")
    h.update(data)
    digest: str = h.hexdigest()
    return digest


def _entry_path(key: str) -> str:
    return os.path.join(cache_dir(), "plans", key[:2], key + ".marshal")


def lookup(key: str) -> list[dict[str, Any]] | None:
    """The plans cached under ``key``; None for a miss, or an entry that is not plans
    (written by something else: a crash review's made run and plan fail as a bug)."""
    entry = cachefile.read(_entry_path(key), key)
    plans = entry.get("plans") if entry else None
    if not isinstance(plans, list) or not all(
            isinstance(p, dict) and isinstance(p.get("spec"), dict) and isinstance(p.get("actions"), list)
            and isinstance(p.get("name"), str) for p in plans):
        return None
    return plans


def store(key: str, plans: list[dict[str, Any]]) -> None:
    target = _entry_path(key)
    if cachefile.write(target, {"key": key, "plans": plans}):
        cachefile.prune(os.path.dirname(os.path.dirname(target)), MAX_ENTRIES)


def plans_for_file(path: str, *, use_cache: bool = True, data: bytes | None = None) -> list[dict[str, Any]]:
    """The compiled plans of a manifest file, from the cache when possible.
    ``data``: a manifest read already (stdin; ``path`` names it in messages), never
    cached: its relative paths are to the current directory."""
    if data is not None:
        from vbdecl.plan.compile import compile_file

        return compile_file(path, data=data)
    key = None
    if use_cache:
        try:
            with open(path, "rb") as f:
                key = cache_key(path, f.read())
        except OSError:
            pass        # compile_file says what is wrong with the path, for people
    if key is not None:
        hit = lookup(key)
        if hit is not None:
            return hit
    from vbdecl.plan.compile import compile_file

    plans = compile_file(path)
    if key is not None:
        store(key, plans)
    return plans
