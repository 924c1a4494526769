"""Network state shared by every environment of one state root.

``<state_root>/net.json`` holds what no single environment owns:

- ``bridges``: name -> ``{"created": bool, "users": [instance...],
  "subnet": str|None, "subnet6": str|None, "added": [cidr...]}``; a bridge
  vbdecl created is removed when its last user goes, a bridge it found is
  only given back the gateway addresses vbdecl added to it;
- ``leases``: subnet -> ``{address: instance}``;
- ``forward``: ``{"4"|"6": {"saved": "0"|"1", "users": [instance...]}}``:
  who needs ip forwarding and what the sysctl was before vbdecl set it;
- ``nft``: ``{"users": [instance...]}``: environments with rules in the
  ``inet vbdecl`` table (the table goes with its last user).

Users are lists of instance ids, not counters, so that every change is
idempotent (a revert that runs twice releases once). Every read-modify-write
happens under the short global lock (``<state_root>/global.lock``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FILE = "net.json"


def state_root_of(state_dir: str) -> Path:
    """``<state>/envs/<name>`` -> ``<state>``."""
    return Path(state_dir).absolute().parent.parent


@contextlib.contextmanager
def _global_lock(root: Path) -> Iterator[None]:
    try:
        from vbdecl.engine.lock import global_lock
    except ImportError:  # the engine's lock not there: the same flock, inline
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(root / "global.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
        return
    with global_lock(root):
        yield


def _empty() -> dict[str, Any]:
    return {"format": 1, "bridges": {}, "leases": {}, "forward": {}, "nft": {"users": []}}


def _read(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return _empty()
    except (OSError, ValueError) as err:
        from vbdecl.errors import StateError

        raise StateError(f"cannot read the shared network state {path}: {err}",
                         hint="move the file aside; `vbdecl recover` rebuilds leases from live environments") from err
    base = _empty()
    base.update(data)
    return base


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    payload = (json.dumps(data, sort_keys=True, indent=1) + "\n").encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, payload)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)


@contextlib.contextmanager
def locked(state_dir: str) -> Iterator[dict[str, Any]]:
    """The shared state, under the global lock; written back if changed."""
    root = state_root_of(state_dir)
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = root / FILE
    with _global_lock(root):
        data = _read(path)
        before = json.dumps(data, sort_keys=True)
        yield data
        if json.dumps(data, sort_keys=True) != before:
            _write(path, data)


def read(state_dir: str) -> dict[str, Any]:
    """A snapshot of the shared state (no lock: for status and tests)."""
    return _read(state_root_of(state_dir) / FILE)


def add_user(users: list[str], instance: str) -> None:
    if instance not in users:
        users.append(instance)


def remove_user(users: list[str], instance: str) -> None:
    while instance in users:
        users.remove(instance)
