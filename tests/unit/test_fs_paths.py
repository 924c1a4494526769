"""Path resolution inside a root, without root privileges: openat2 and the fallback walk.

resolve/ensure_dir/ensure_mountpoint are what keeps every filesystem entry
inside the environment's root; here they run against a plain directory.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from vbdecl.ops.fs import _describe, _unescape
from vbdecl.plan.ids import fs_action_ids
from vbdecl.runtime import rootfs
from vbdecl.sys import mount as m


@pytest.fixture(params=["openat2", "walk"])
def walk_mode(request: pytest.FixtureRequest) -> Iterator[str]:
    old = m._openat2_ok
    if request.param == "walk":
        m._openat2_ok = False
    elif not m.openat2_supported():
        pytest.skip("kernel without openat2")
    try:
        yield request.param
    finally:
        m._openat2_ok = old


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[tuple[Path, Path, int]]:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret").write_text("host")
    (root / "etc").mkdir()
    (root / "etc" / "os-release").write_text("inside")
    (root / "abs").symlink_to(str(outside))          # absolute: means <root>/<outside> inside
    (root / "rel").symlink_to("../../../../..")      # climbs: clamped at the root
    (root / "loop").symlink_to("loop")
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        yield root, outside, fd
    finally:
        os.close(fd)


def read(fd: int) -> str:
    return rootfs._read_fd(fd).decode()


def test_resolve_stays_inside(tree, walk_mode) -> None:
    _root, _outside, fd = tree
    assert read(rootfs.resolve(fd, "/etc/os-release", os.O_RDONLY)) == "inside"
    assert read(rootfs.resolve(fd, "/../../etc/os-release", os.O_RDONLY)) == "inside"
    assert read(rootfs.resolve(fd, "/rel/etc/os-release", os.O_RDONLY)) == "inside"
    with pytest.raises(OSError):   # <root>/<outside>/secret does not exist inside
        rootfs.resolve(fd, "/abs/secret", os.O_RDONLY)
    with pytest.raises(OSError):
        rootfs.resolve(fd, "/loop/x")


def test_resolve_nofollow_opens_the_link(tree, walk_mode) -> None:
    _, _, fd = tree
    link = rootfs.resolve(fd, "/abs", os.O_PATH, follow=False)
    try:
        assert stat.S_ISLNK(os.fstat(link).st_mode)
    finally:
        os.close(link)


def test_create_through_symlinks_lands_inside(tree, walk_mode) -> None:
    root, outside, fd = tree
    inner = root / str(outside).lstrip("/")
    inner.mkdir(parents=True)
    w = rootfs.resolve(fd, "/abs/new", os.O_WRONLY | os.O_CREAT, mode=0o600)
    os.write(w, b"x")
    os.close(w)
    assert (inner / "new").read_text() == "x"
    assert sorted(os.listdir(outside)) == ["secret"]


def test_ensure_dir_modes_and_created(tree, walk_mode) -> None:
    root, _, fd = tree
    old = os.umask(0)
    try:
        created: list[str] = []
        d = rootfs.ensure_dir(fd, "/a/b/c", 0o700, created)
        os.close(d)
    finally:
        os.umask(old)
    assert created == ["/a", "/a/b", "/a/b/c"]
    modes = [oct((root / p).stat().st_mode & 0o7777) for p in ("a", "a/b", "a/b/c")]
    assert modes == ["0o755", "0o755", "0o700"]


def test_ensure_dir_refuses_a_dangling_symlink_component(tree, walk_mode) -> None:
    _root, outside, fd = tree
    with pytest.raises(OSError):
        rootfs.ensure_dir(fd, "/abs/sub")
    assert sorted(os.listdir(outside)) == ["secret"]


def test_ensure_dir_with_a_symlink_swapped_in(tree, walk_mode, monkeypatch) -> None:
    _root, outside, fd = tree
    real_mkdir = os.mkdir

    def evil(path, mode=0o777, *, dir_fd=None):
        real_mkdir(path, mode, dir_fd=dir_fd)
        os.rename(path, f"{path}.moved", src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        os.symlink(str(outside), path, dir_fd=dir_fd)

    monkeypatch.setattr(rootfs.os, "mkdir", evil)
    with pytest.raises(OSError):
        rootfs.ensure_dir(fd, "/victim/sub")
    monkeypatch.undo()
    assert sorted(os.listdir(outside)) == ["secret"]


def test_ensure_mountpoint_file_or_dir(tree, walk_mode) -> None:
    root, _, fd = tree
    created: list[str] = []
    for path, is_dir in (("/m/d", True), ("/m/f", False), ("/etc/os-release", False)):
        os.close(rootfs.ensure_mountpoint(fd, path, is_dir, created))
    assert (root / "m" / "d").is_dir() and (root / "m" / "f").is_file()
    assert created == ["/m", "/m/d", "/m/f"]
    assert (root / "etc" / "os-release").read_text() == "inside"


def test_action_ids_and_describe() -> None:
    ids = fs_action_ids([{"type": "tmpfs", "target": "/t"}, {"type": "symlink", "target": "/t"},
                             {"type": "tmpfs", "target": "/t"}])
    assert ids == ["mount[/t]", "symlink[/t]", "mount[/t]#2"]
    assert _describe("ro-bind", {"source": "/usr", "target": "/usr"}) == \
        "ro-bind /usr -> /usr (read-only)"
    assert _describe("tmpfs", {"target": "/tmp", "size": 1024, "mode": 0o1777}) == \
        "tmpfs /tmp (size=1024, mode=1777)"
    assert _unescape("/with\\040space") == "/with space"


def test_defaults_follow_bubblewrap() -> None:
    assert rootfs.DEFAULT_MODES == {"tmpfs": 0o755, "dir": 0o755, "file": 0o644,
                                    "bind-data": 0o600}


def test_host_dirs_are_removed_only_while_they_are_the_ones_made(tmp_path):
    """An overlay's upper and work (and their parents), removed on its revert: only the
    directories made (by identity: a review), only when empty but for a work's own
    directories, never through a link, and never a file."""
    import os

    from vbdecl.runtime.rootfs import remove_host_dirs

    base, upper, work = tmp_path / "ov", tmp_path / "ov" / "upper", tmp_path / "ov" / "work"
    for d in (base, upper, work, work / "work"):
        d.mkdir()
    made = [str(base), str(upper), str(work)]
    ids = {p: (os.lstat(p).st_dev, os.lstat(p).st_ino) for p in made}
    upper.rename(tmp_path / "elsewhere")
    upper.mkdir()                       # another directory at the upper's path now
    host = os.open("/", os.O_PATH | os.O_DIRECTORY)
    try:
        kept = remove_host_dirs(host, made, ids=ids, trees=frozenset([str(work)]))
    finally:
        os.close(host)
    assert upper.is_dir() and not work.exists() and kept == [str(base)]
