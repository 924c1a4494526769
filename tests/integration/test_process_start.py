"""pid 1 builds the root, then spawns the process (child.init_main, vbdecl.sys.laststep):
the process's steps happen in the new root, never outside it, and pid 1's errors come
first. (pid 1 used to fork the process before it built the root; these tests guarded
that order and still hold.)"""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_runtime import driver, make_spec

from vbdecl.errors import SysError
from vbdecl.runtime.spawn import run_spec
from vbdecl.sys import mount as m

VB = str(Path(sys.executable).parent / "vb")
USR = ["--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
       "--symlink", "usr/lib64", "/lib64"]


def test_a_relative_chdir_is_resolved_in_the_new_root_not_the_callers_cwd(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "marker").write_text("host file\n")
    r = subprocess.run([VB, "--unshare-pid", *USR, "--chdir", "sub", "--", "cat", "marker"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.stdout == "" and r.returncode == 1, r.stdout
    assert "Can't chdir to sub" in r.stderr


def test_disable_userns_without_proc_in_the_sandbox() -> None:
    r = subprocess.run([VB, "--unshare-user", "--unshare-pid", "--disable-userns", *USR,
                        "--dev", "/dev", "--", "echo", "hello"],
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout) == (0, "hello\n"), r.stderr


def test_the_chroot_fallback_starts_the_process_again_in_the_new_root(
        monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    """pivot_root refuses (as it does on an initramfs) and the root builder chroots:
    the process still starts in the new root."""
    real = m.pivot_root

    def refusing(new_root: str, put_old: str) -> None:
        if put_old == "oldroot":
            raise SysError("pivot_root: Invalid argument (EINVAL)", errno=errno.EINVAL)
        real(new_root, put_old)

    monkeypatch.setattr(m, "pivot_root", refusing)   # the forked children inherit it
    spec: dict[str, Any] = make_spec(["/bin/sh", "-c", "ls /; pwd"], ns={"net": False}, filesystem=[
        {"type": "ro-bind", "source": "/usr", "target": "/usr", "optional": False},
        {"type": "symlink", "target": "/bin", "points_to": "usr/bin"},
        {"type": "symlink", "target": "/lib", "points_to": "usr/lib"},
        {"type": "symlink", "target": "/lib64", "points_to": "usr/lib64"},
    ])
    capfd.readouterr()
    result = run_spec(spec)
    assert (result.code, result.error) == (0, None), str(result.error)
    assert capfd.readouterr().out.split() == ["bin", "etc", "lib", "lib64", "usr", "/"]   # (etc: the host's resolv.conf)


def test_when_both_fail_pid_1s_error_is_the_one_reported(tmp_path: Path) -> None:
    """The process would fail (tty: true without a terminal) and the root fails too
    (a missing bind source): the root comes first, so its error is the one the user
    sees, every time."""
    spec: dict[str, Any] = make_spec(["/bin/true"], tty=True, filesystem=[
        {"type": "ro-bind", "source": "/usr", "target": "/usr", "optional": False},
        {"type": "symlink", "target": "/bin", "points_to": "usr/bin"},
        {"type": "tmpfs", "target": "/tmp"},
        {"type": "bind", "source": str(tmp_path / "missing"), "target": "/data", "optional": False},
    ])
    for _ in range(5):
        r = subprocess.run(driver(tmp_path, spec), stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 125
        assert "missing" in r.stderr and "tty" not in r.stderr, r.stderr


@pytest.mark.parametrize("pid", [True, False])
def test_a_root_that_fails_while_the_parent_reads_the_namespaces_is_reported(
        tmp_path: Path, pid: bool) -> None:
    """The child builds the root while the parent reads its namespaces (and works out
    the process's steps): a root that fails at once is still reported as such, with
    a pid namespace (pid 1 does it) and without (the first child becomes the process)."""
    spec: dict[str, Any] = make_spec(["/bin/true"], ns={"pid": pid}, filesystem=[
        {"type": "bind", "source": str(tmp_path / "missing"), "target": "/data", "optional": False},
    ])
    for _ in range(5):
        r = subprocess.run(driver(tmp_path, spec), stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 125 and "missing" in r.stderr, r.stderr


@pytest.mark.parametrize("pid", [True, False])
def test_the_child_gets_the_process_steps_from_the_parent(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pid: bool) -> None:
    """As root without a user namespace the parent works out the process's last steps
    (spawn._steps_parent): the child that starts the process never does (should it,
    its pid lands in the record, or the record cannot be opened in the new root and
    the run fails)."""
    import os

    from vbdecl.runtime import child

    record = tmp_path / "prepared-by"
    real = child._prepare

    def recording(cfg: Any, parent: Any) -> Any:
        fd = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.close(fd)
        return real(cfg, parent)

    monkeypatch.setattr(child, "_prepare", recording)
    spec: dict[str, Any] = make_spec(["/bin/true"], ns={"pid": pid}, filesystem=[
        {"type": "ro-bind", "source": "/usr", "target": "/usr", "optional": False},
        *({"type": "symlink", "target": f"/{d}", "points_to": f"usr/{d}"} for d in ("bin", "lib", "lib64")),
    ])
    result = run_spec(spec)
    assert (result.code, result.error) == (0, None), str(result.error)
    assert record.read_text().split() == [str(os.getpid())]


def test_the_parent_giving_up_after_pid_1_started_ends_the_run(
        monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    """A direct init builds the root while the parent reads the namespaces: when the parent
    fails there, pid 1 (waiting for the second "go") goes without starting the process, and
    the run ends with the parent's error, without hanging (the leak guard checks the rest)."""
    from vbdecl.errors import RuntimeSetupError
    from vbdecl.runtime import spawn

    def broken(pid: int) -> dict[str, int]:
        raise RuntimeSetupError("cannot read the namespaces (test)")

    monkeypatch.setattr(spawn.sysns, "own_ns_inodes", broken)
    spec: dict[str, Any] = make_spec(["/bin/sh", "-c", "echo ran"], filesystem=[
        {"type": "ro-bind", "source": "/usr", "target": "/usr", "optional": False},
        {"type": "symlink", "target": "/bin", "points_to": "usr/bin"},
    ])
    capfd.readouterr()
    result = run_spec(spec)
    assert result.code == 125 and "cannot read the namespaces (test)" in str(result.error)
    assert "ran" not in capfd.readouterr().out      # the process never got its "go"
