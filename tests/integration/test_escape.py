"""Escape attempts: no target, however it is spelled or swapped, reaches outside the root.

Each case builds a root whose entries try to reach ``outside`` (a host
directory that must stay empty) through ``..``, symlinks in a host rootfs,
symlinks created by earlier entries, or a symlink swapped in while setup runs.
An entry may fail (that is fine); it may never create, mount or write outside.
Every case also runs with the openat2-less fallback walk.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_fs_harness import SandboxError, base_spec, in_sandbox

from vbdecl.sys import mount as m


@pytest.fixture(params=["openat2", "walk"])
def resolver(request: pytest.FixtureRequest):
    def before() -> None:
        if request.param == "walk":
            m._openat2_ok = False
    return before


def attempts(outside: Path, src: Path) -> list[dict]:
    o = str(outside)
    return [
        {"type": "file", "target": "/x/pwn-file", "content": "pwned", "source": None, "mode": None},
        {"type": "dir", "target": "/x/pwn-dir", "mode": None},
        {"type": "bind", "source": str(src), "target": "/x/pwn-bind", "optional": False},
        {"type": "tmpfs", "target": "/x/pwn-tmpfs", "size": None, "mode": None},
        {"type": "symlink", "target": "/x/pwn-link", "points_to": "/etc/passwd"},
        {"type": "bind-data", "target": "/x/pwn-data", "content": "pwned", "readonly": False,
         "mode": None},
        {"type": "chmod", "target": "/x", "mode": 0o777},
        {"type": "file", "target": f"/../../../..{o}/dotdot", "content": "pwned", "source": None,
         "mode": None},
        {"type": "dir", "target": f"/..{o}/../{outside.name}/dotdot-dir", "mode": None},
    ]


def run_each(entries: list[dict], rootfs: str | None, before) -> list[str | None]:
    """Run each entry in its own sandbox; return the error (or None) of each."""
    results: list[str | None] = []
    for e in entries:
        try:
            in_sandbox(base_spec([e], rootfs=rootfs), lambda: None, before=before)
            results.append(None)
        except SandboxError as exc:
            results.append(exc.message)
    return results


def assert_untouched(outside: Path) -> None:
    assert os.listdir(outside) == []
    assert oct(outside.stat().st_mode & 0o7777) == "0o700"


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o700)
    os.chmod(outside, 0o700)
    src = tmp_path / "src"
    src.mkdir()
    return outside, src


def test_rootfs_symlinks_pointing_outside(tmp_path: Path, dirs, resolver) -> None:
    outside, src = dirs
    root = tmp_path / "rootfs"
    root.mkdir()
    (root / "x").symlink_to(outside)                 # absolute, to the host dir
    (root / "up").symlink_to("../../../../../..")    # relative, climbing
    entries = attempts(outside, src)
    entries += [{**e, "target": e["target"].replace("/x/", "/up/", 1)} for e in entries[:6]]
    run_each(entries, str(root), resolver)
    assert_untouched(outside)


def test_symlink_entries_pointing_outside(dirs, resolver) -> None:
    outside, src = dirs
    link = {"type": "symlink", "target": "/x", "points_to": str(outside)}
    inside = {"type": "dir", "target": str(outside), "mode": None}  # make the link resolve
    for e in attempts(outside, src):
        for prefix in ([link], [inside, link]):
            try:
                in_sandbox(base_spec([*prefix, e]), lambda: None, before=resolver)
            except SandboxError:
                pass
    assert_untouched(outside)


def test_dotdot_targets_stay_inside(dirs, resolver) -> None:
    outside, _ = dirs
    o = str(outside)
    spec = base_spec([{"type": "file", "target": f"/../../..{o}/f", "content": "in", "source": None,
                       "mode": None}])
    r = in_sandbox(spec, lambda: Path(f"{o}/f").read_text(), before=resolver)
    assert r == "in"  # it landed inside the new root, at the clamped path
    assert_untouched(outside)


def test_symlink_swapped_in_during_setup(tmp_path: Path, dirs, resolver) -> None:
    """An attacker replaces each directory vbdecl creates with a symlink to outside."""
    outside, src = dirs

    def before() -> None:
        resolver()
        real_mkdir = os.mkdir

        def evil_mkdir(path, mode=0o777, *, dir_fd=None):
            real_mkdir(path, mode, dir_fd=dir_fd)
            if str(path).startswith("victim"):
                os.rename(path, f"{path}.moved", src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                os.symlink(str(outside), path, dir_fd=dir_fd)

        os.mkdir = evil_mkdir  # type: ignore[assignment]

    entries = [
        {"type": "file", "target": "/victim/f", "content": "pwned", "source": None, "mode": None},
        {"type": "dir", "target": "/victim/d", "mode": None},
        {"type": "bind", "source": str(src), "target": "/victim/b", "optional": False},
        {"type": "tmpfs", "target": "/victim/t", "size": None, "mode": None},
        {"type": "symlink", "target": "/victim/l", "points_to": "x"},
        {"type": "file", "target": "/a/victim2/f", "content": "pwned", "source": None, "mode": None},
    ]
    root = tmp_path / "rootfs"
    root.mkdir()
    for rootfs in (None, str(root)):
        run_each(entries, rootfs, before)
    assert_untouched(outside)


def test_a_link_swapped_in_while_the_owner_is_checked_is_not_followed(tmp_path: Path, resolver,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A review: the walk checked a root-owned link's owner on one handle, then read the
    link again by name, so a process swapping its own link in under that name
    (renameat2 RENAME_EXCHANGE) got root to follow it. The link is now read through
    the handle that was checked."""
    import ctypes
    import time

    from vbdecl.runtime import rootfs

    monkeypatch.setattr(m, "_openat2_ok", m._openat2_ok)    # resolver() sets it for this process
    resolver()
    root = tmp_path / "root"
    data, sub, other = root / "data", root / "data" / "sub", root / "other"
    sub.mkdir(parents=True)
    other.mkdir()
    (sub / "f").write_text("sub")
    (other / "f").write_text("other")
    os.symlink("sub", data / "lnk")                       # root's: followed
    os.symlink("/other", data / "evil")
    os.chown(data / "evil", 65534, 65534, follow_symlinks=False)
    os.chown(data, 65534, 65534)
    pid = os.fork()
    if pid == 0:        # the sandbox's process: swaps its link in under the trusted name
        try:
            os.chdir(data)      # (tmp_path's parents are root's 0700)
            os.setgid(65534)
            os.setuid(65534)
            libc = ctypes.CDLL(None, use_errno=True)
            a, b = b"lnk", b"evil"
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                libc.renameat2(-100, a, -100, b, 2)       # AT_FDCWD, RENAME_EXCHANGE
        finally:
            os._exit(0)
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    rootfs.set_link_policy(True)
    seen: dict[str, int] = {}
    try:
        deadline = time.monotonic() + 1.2
        while time.monotonic() < deadline:
            try:
                fd = rootfs.resolve(root_fd, "/data/lnk/f", os.O_RDONLY)
            except OSError:
                seen["refused"] = seen.get("refused", 0) + 1
                continue
            try:
                what = os.read(fd, 16).decode()
            finally:
                os.close(fd)
            seen[what] = seen.get(what, 0) + 1
    finally:
        rootfs.set_link_policy(False)
        os.close(root_fd)
        os.waitpid(pid, 0)
    assert "other" not in seen, seen
    assert seen.get("sub") and seen.get("refused"), seen    # the swapper did swap
