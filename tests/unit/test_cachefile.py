"""Cache entries: written atomically, read back only with their key, pruned oldest first."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from vbdecl.engine import cachefile


def test_an_entry_is_read_back_only_with_its_key(tmp_path: Path) -> None:
    path = str(tmp_path / "a" / "b" / "k1.marshal")
    assert cachefile.write(path, {"key": "k1", "data": [1, "x", None, b"\x00"]})
    assert cachefile.read(path, "k1") == {"key": "k1", "data": [1, "x", None, b"\x00"]}
    assert cachefile.read(path, "k2") is None                  # another key: a miss
    assert os.listdir(tmp_path / "a" / "b") == ["k1.marshal"]   # no temporary left
    for broken in (b"", b"garbage", b"\xe9\x01"):
        Path(path).write_bytes(broken)
        assert cachefile.read(path, "k1") is None
    assert cachefile.read(str(tmp_path / "missing"), "k1") is None


def test_an_unwritable_cache_is_not_an_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    assert cachefile.write(str(tmp_path / "file" / "k.marshal"), {"key": "k"}) is False
    assert cachefile.write(str(tmp_path / "k.marshal"), {"key": "k", "v": object()}) is False
    assert not (tmp_path / "k.marshal").exists()


def test_prune_keeps_the_newest_half_once_over_the_limit(tmp_path: Path) -> None:
    for i in range(10):
        sub = tmp_path / f"{i % 3:02d}"
        sub.mkdir(exist_ok=True)
        entry = sub / f"{i}.marshal"
        entry.write_bytes(b"")
        os.utime(entry, ns=(i * 10**9, i * 10**9))
    (tmp_path / "notes.txt").write_text("not an entry")
    left = tmp_path / ".k.123-abcd.tmp"              # a killed writer's temporary, oldest of all
    left.write_bytes(b"")
    os.utime(left, ns=(0, 0))
    cachefile.prune(str(tmp_path), 11)
    assert len(list(tmp_path.rglob("*.marshal"))) == 10 and left.exists()   # at the limit
    cachefile.prune(str(tmp_path), 8)
    assert not left.exists()
    assert sorted(int(p.stem) for p in tmp_path.rglob("*.marshal")) == [6, 7, 8, 9]
    assert (tmp_path / "notes.txt").exists()


def test_code_fingerprint_follows_the_modules() -> None:
    one = cachefile.code_fingerprint("ops/sec.py", "plan")
    assert "ops/sec.py:" in one
    assert "plan/compile.py:" in one
    assert cachefile.code_fingerprint("no/such.py") == "no/such.py:?"
    assert cachefile.code_fingerprint("ops/sec.py", "plan") == one


def test_a_cached_plan_entry_of_another_shape_is_a_miss(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash review rewrote plan cache entries keeping their key: run and plan failed
    as bugs (`plan["spec"]`); such an entry is a miss, compiled again."""
    from vbdecl.engine import plancache

    monkeypatch.setenv("VBDECL_CACHE_DIR", str(tmp_path))
    good: dict[str, Any] = {"name": "web", "spec": {}, "actions": []}
    shapes: list[Any] = [["x"], [{}], [{**good, "spec": None}], None, [good]]
    for plans in shapes:
        plancache.store("k" * 64, plans)
        assert plancache.lookup("k" * 64) == ([good] if plans == [good] else None), plans


def test_the_network_state_lock_of_an_unwritable_state_directory_is_said(tmp_path: Path) -> None:
    """A crash review's `vbdecl run` on a read-only state directory said `OSError: [Errno
    30] ...global.lock`; it names the lock and says what to do, as apply does."""
    from vbdecl.errors import StateError
    from vbdecl.net import shared

    root = tmp_path / "file"
    root.write_text("")      # (ENOTDIR, as EROFS: not a permission)
    with pytest.raises(StateError, match=r"cannot lock .*global.lock: Not a directory") as caught, \
            shared._global_lock(root):
        pass
    assert "--state-dir" in (caught.value.hint or "")
