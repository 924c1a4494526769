"""Tests of the leak guard itself (tests/conftest.py): each leaks one kind of
object on purpose, checks that the guard's snapshots see it in a readable
diff, then removes it and checks the snapshots agree again.

They hold the guard's machine-wide lock while the object exists, so no
guarded test running at the same time can see it.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import conftest
import pytest

pytestmark = [pytest.mark.root, pytest.mark.no_leak_guard]


@pytest.fixture
def guard_lock() -> Iterator[None]:
    fd = os.open(conftest.LOCK_PATH, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.environ[conftest._TOKEN_VAR] = secrets.token_hex(8)
    try:
        yield
    finally:
        os.environ.pop(conftest._TOKEN_VAR, None)
        os.close(fd)


def _caught(leak: Callable[[], object], cleanup: Callable[[object], None], key: str,
            needle: str) -> str:
    """Leak, see it in the diff under ``key`` (with ``needle``), clean up, see no diff."""
    before = conftest.snapshot()
    obj = leak()
    try:
        problems = conftest.diff_snapshots(before, conftest.snapshot())
        text = "\n".join(problems)
        assert any(p.startswith(key) for p in problems), text
        assert needle in text, text
    finally:
        cleanup(obj)
    deadline = time.monotonic() + 2
    while (left := conftest.diff_snapshots(before, conftest.snapshot())) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, left
    return text


def test_catches_a_mount(guard_lock: None, tmp_path: Path) -> None:
    target = tmp_path / "mnt"
    target.mkdir()

    def leak() -> object:
        subprocess.run(["mount", "-t", "tmpfs", "vbleak", str(target)], check=True)
        return None

    text = _caught(leak, lambda _: subprocess.run(["umount", str(target)], check=True), "mounts",
                   f"+ {target} tmpfs vbleak")
    assert "(+ left behind, - gone)" in text


def test_catches_a_stacked_mount(guard_lock: None, tmp_path: Path) -> None:
    target = tmp_path / "mnt"
    target.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "vbleak", str(target)], check=True)
    try:
        def leak() -> object:
            subprocess.run(["mount", "-t", "tmpfs", "vbleak", str(target)], check=True)
            return None

        _caught(leak, lambda _: subprocess.run(["umount", str(target)], check=True), "mounts",
                f"+ {target} tmpfs vbleak (x2)")
    finally:
        subprocess.run(["umount", str(target)], check=True)


@pytest.mark.skipif(not shutil.which("ip"), reason="needs iproute2")
def test_catches_a_link_and_its_address(guard_lock: None) -> None:
    name = f"vbl{secrets.token_hex(4)}"

    def leak() -> object:
        subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True)
        subprocess.run(["ip", "addr", "add", "198.18.254.1/32", "dev", name], check=True)
        return None

    text = _caught(leak, lambda _: subprocess.run(["ip", "link", "del", name], check=True), "links",
                   f"+ {name}")
    assert "addresses changed" in text and "198.18.254.1/32" in text


@pytest.mark.skipif(not shutil.which("nft"), reason="needs nftables")
def test_catches_nftables_content_not_just_tables(guard_lock: None) -> None:
    table = f"vbl{secrets.token_hex(4)}"
    subprocess.run(["nft", "add", "table", "inet", table], check=True)
    subprocess.run(["nft", "add", "chain", "inet", table, "c"], check=True)
    try:
        def leak() -> object:
            subprocess.run(["nft", "add", "rule", "inet", table, "c", "ip", "saddr", "198.18.254.9",
                            "counter", "accept"], check=True)
            return None

        def cleanup(_: object) -> None:
            subprocess.run(["nft", "flush", "chain", "inet", table, "c"], check=True)

        text = _caught(leak, cleanup, "nftables", "198.18.254.9")
        assert "+\t\tip saddr 198.18.254.9 accept" in text, text   # counters are not in the diff
    finally:
        subprocess.run(["nft", "delete", "table", "inet", table], check=True)


def _cgroup_base() -> Path:
    for h in ("pids", "memory", "cpu,cpuacct", "unified"):
        p = Path("/sys/fs/cgroup") / h
        if p.is_dir() and os.access(p, os.W_OK):
            return p
    pytest.skip("no writable cgroup hierarchy")


def test_catches_a_cgroup_dir(guard_lock: None) -> None:
    base = _cgroup_base()
    path = base / f"vb-{secrets.token_hex(4)}"
    _caught(lambda: path.mkdir(), lambda _: path.rmdir(), "cgroups", f"+ {path}")


def test_catches_a_cgroup_below_vbdecl(guard_lock: None) -> None:
    base = _cgroup_base() / "vbdecl"
    made = not base.exists()
    base.mkdir(exist_ok=True)
    try:
        path = base / f"nested-{secrets.token_hex(4)}"
        _caught(lambda: path.mkdir(), lambda _: path.rmdir(), "cgroups", f"+ {path}")
    finally:
        if made:
            base.rmdir()


def test_catches_an_fd(guard_lock: None, tmp_path: Path) -> None:
    f = tmp_path / "held"
    f.write_text("x")

    def leak() -> object:
        return os.open(f, os.O_RDONLY)

    _caught(leak, lambda fd: os.close(fd), "fds", f"-> {f}")  # type: ignore[arg-type]


def test_catches_a_zombie_child(guard_lock: None) -> None:
    def leak() -> object:
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            st = conftest._stat(str(pid))
            if st and st[1][0] == "Z":
                break
            time.sleep(0.01)
        return pid

    text = _caught(leak, lambda pid: os.waitpid(pid, 0), "children", "state=Z")  # type: ignore[arg-type]
    assert "children (+ left behind" in text


def test_catches_a_running_child(guard_lock: None) -> None:
    def leak() -> object:
        return subprocess.Popen(["sleep", "30"])

    def cleanup(p: object) -> None:
        assert isinstance(p, subprocess.Popen)
        p.kill()
        p.wait()

    _caught(leak, cleanup, "children", "sleep state=")


def test_catches_a_reparented_daemon(guard_lock: None) -> None:
    """A double-forked process is no longer our child, but it carries the test's token."""
    def leak() -> object:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            if os.fork() == 0:
                os.setsid()
                os.write(w, b"%d" % os.getpid())
                os.execvp("sleep", ["sleep", "30"])
            os._exit(0)
        os.waitpid(pid, 0)
        os.close(w)
        daemon = int(os.read(r, 32))
        os.close(r)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and conftest._stat(str(daemon))[0] != "sleep":  # type: ignore[index]
            time.sleep(0.01)
        return daemon

    def cleanup(pid: object) -> None:
        assert isinstance(pid, int)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:   # reaped by its new parent (or left a zombie there)
            st = conftest._stat(str(pid))
            if st is None or st[1][0] == "Z":
                return
            time.sleep(0.01)

    _caught(leak, cleanup, "processes", "sleep ppid=")


def test_catches_state_and_tmp_entries(guard_lock: None) -> None:
    name = f"vb-{secrets.token_hex(4)}"
    paths = [Path("/tmp") / f"vbdecl-stage-{name}", Path("/run/vbdecl") / name]
    made_root = not Path("/run/vbdecl").exists()

    def leak() -> object:
        for p in paths:
            p.mkdir(parents=True)
        return None

    def cleanup(_: object) -> None:
        for p in paths:
            p.rmdir()
        if made_root:
            Path("/run/vbdecl").rmdir()

    text = _caught(leak, cleanup, "tmp", f"+ {paths[0]}")
    assert f"+ {paths[1]}" in text


def test_diff_is_readable() -> None:
    before = {"links": {"lo", "eth0"}, "nftables": "table inet x {\n}"}
    after = {"links": {"lo", "eth0", "vbabc"}, "nftables": "table inet x {\n\tchain c\n}"}
    problems = conftest.diff_snapshots(before, after)
    assert problems[0] == "links (+ left behind, - gone):\n  + vbabc"
    assert problems[1].startswith("nftables changed:\n") and "  +\tchain c" in problems[1]
    assert conftest.diff_snapshots(before, dict(before)) == []
