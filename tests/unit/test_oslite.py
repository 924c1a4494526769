"""vbdecl/sys/oslite.py answers as os and posixpath do."""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

import pytest

from vbdecl.sys import oslite

PATHS = ["", ".", "..", "/", "//", "///", "a", "a/", "a//", "/a", "//a", "/a/b", "/a/b/", "a/b/c",
         "/a/./b/../c", "a/../..", "/..", "/a//b///c/", "~", "é/ü", "a\udcffb/c", " /x", "./a"]


@pytest.mark.parametrize("p", PATHS)
def test_lexical_functions_match_posixpath(p: str) -> None:
    assert oslite.path.basename(p) == posixpath.basename(p)
    assert oslite.path.dirname(p) == posixpath.dirname(p)
    assert oslite.path.normpath(p) == posixpath.normpath(p)
    assert oslite.path.abspath(p) == posixpath.abspath(p)
    for q in PATHS:
        assert oslite.path.join(p, q) == posixpath.join(p, q), (p, q)
        assert oslite.path.join(p, q, p) == posixpath.join(p, q, p), (p, q)
    assert oslite.path.join(p) == posixpath.join(p)


def test_file_tests_and_realpath_match(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_text("")
    (tmp_path / "to-d").symlink_to("d")
    (tmp_path / "dangling").symlink_to("nowhere")
    (tmp_path / "loop").symlink_to("loop")
    (tmp_path / "d" / "up").symlink_to("..")
    monkeypatch.chdir(tmp_path)
    names = ["d", "f", "to-d", "dangling", "loop", "missing", "to-d/up/f", "to-d/../f", "d/up/to-d/",
             "missing/../f", "dangling/x", str(tmp_path / "to-d"), "", "f\0x", "/proc/self", "."]
    for name in names:
        assert oslite.path.exists(name) == posixpath.exists(name), name
        assert oslite.path.lexists(name) == posixpath.lexists(name), name
        assert oslite.path.isdir(name) == posixpath.isdir(name), name
        assert oslite.path.islink(name) == posixpath.islink(name), name
        if "\0" not in name:
            assert oslite.path.realpath(name) == posixpath.realpath(name), name


def test_os_own_names() -> None:
    for name in ("a", "é", "a\udcffb", b"raw\xff", Path("p")):
        assert oslite.fsencode(name) == os.fsencode(name)
        assert oslite.fsdecode(name) == os.fsdecode(name)
    assert oslite.environb is os.environb._data          # type: ignore[attr-defined]
    assert oslite.getenv("PATH") == os.getenv("PATH")
    assert oslite.getenv("VBDECL_SURELY_UNSET", "d") == "d"
    assert (oslite.devnull, oslite.sep) == (os.devnull, os.sep)
    assert (oslite.SEEK_SET, oslite.SEEK_CUR, oslite.SEEK_END) == (os.SEEK_SET, os.SEEK_CUR, os.SEEK_END)
    assert not hasattr(oslite, "environ")      # (posix's is bytes: os.environ's str view is not here)
    assert oslite.open is os.open and oslite._exit is os._exit and oslite.stat is os.stat
