"""vbdecl.hashing: the same digest as hashlib, found once."""

from __future__ import annotations

import hashlib
import sys
from typing import Any

from vbdecl.hashing import sha256


class _Recorder:
    """A meta path finder that only records what the import system looks for."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        self.names.append(name)


def test_digest_matches_hashlib() -> None:
    for data in (b"", b"vbdecl", bytes(range(256)) * 40):
        assert sha256(data).hexdigest() == hashlib.sha256(data).hexdigest()
    h = sha256()
    h.update(b"vb")
    h.update(b"decl")
    assert h.hexdigest() == hashlib.sha256(b"vbdecl").hexdigest()


def test_calls_look_nothing_up() -> None:
    # A module that failed to import is not cached: looking for it again on every
    # call rescanned sys.path each time (six times in one `vbdecl run`).
    recorder = _Recorder()
    sys.meta_path.insert(0, recorder)
    try:
        for _ in range(3):
            sha256(b"x").hexdigest()
    finally:
        sys.meta_path.remove(recorder)
    assert recorder.names == []
