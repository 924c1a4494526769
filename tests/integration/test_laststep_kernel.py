"""The process's last steps where the kernel's state matters (root): fds are closed
even when close_range is refused and /proc is missing, and a vfork child's id
changes leave the spawning process dumpable."""

from __future__ import annotations

import ctypes
import os
import struct
from pathlib import Path

import pytest

from vbdecl.ops import sec
from vbdecl.sys import laststep

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
SECCOMP_MODE_FILTER = 2
CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
NR_CLOSE_RANGE = 436     # x86_64 and every architecture since the unified table


def _refuse_close_range() -> None:
    """A seccomp filter: close_range fails with ENOSYS, as on kernels before 5.9."""
    insns = [
        (0x20, 0, 0, 0),                            # A = seccomp_data.nr
        (0x15, 0, 1, NR_CLOSE_RANGE),               # if A == close_range
        (0x06, 0, 0, 0x00050000 | 38),              #   return ERRNO(ENOSYS)
        (0x06, 0, 0, 0x7FFF0000),                   # return ALLOW
    ]
    prog = b"".join(struct.pack("=HBBI", *i) for i in insns)
    buf = ctypes.create_string_buffer(prog)
    fprog = struct.pack("=HxxxxxxQ", len(insns), ctypes.addressof(buf))
    assert _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
    assert _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.c_char_p(fprog), 0, 0) == 0


def test_fds_are_closed_without_close_range_and_without_proc(tmp_path: Path) -> None:
    target = tmp_path / "host-file"
    target.write_text("")
    pid = os.fork()
    if pid == 0:
        try:
            assert _libc.unshare(CLONE_NEWNS) == 0
            assert _libc.mount(b"none", b"/", None, 0x4000 | 0x40000, None) == 0   # MS_REC|MS_PRIVATE
            assert _libc.mount(b"tmpfs", b"/proc", b"tmpfs", 0, None) == 0         # no /proc
            fd = os.open(target, os.O_WRONLY)
            os.dup2(fd, 9)            # inheritable: only the close step stops it
            _refuse_close_range()
            plan = laststep.LastStep()
            plan.argv = [b"/bin/sh", b"-c", b"echo leaked >&9"]
            plan.paths = [b"/bin/sh"]
            plan.envp = [b"PATH=/usr/bin:/bin"]
            plan.keep = []
            laststep.exec_in_place(plan)
        finally:
            os._exit(99)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) != 99
    assert target.read_text() == ""


def test_spawning_with_other_ids_leaves_the_spawner_dumpable() -> None:
    """The vfork child's setresuid resets the dumpable flag of the memory it shares
    with pid 1 (commit_creds); pid 1's own credentials never changed."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            _libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
            spec = {"process": {"command": ["/bin/true"], "user": 1000, "group": 1000},
                    "security": {"seccomp": "off"}}
            plan = laststep.LastStep()
            sec.fill_last_step(plan, spec)
            plan.argv, plan.paths, plan.keep = [b"/bin/true"], [b"/bin/true"], []
            child, failed = laststep.spawn(plan)
            os.waitpid(child, 0)
            os.write(w, f"{failed is None} {_libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0)}".encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        report = f.read()
    os.waitpid(pid, 0)
    assert report == "True 1"


@pytest.mark.parametrize("reader_alive", [True, False])
def test_pid1_runs_nothing_once_the_watched_reader_is_gone(reader_alive: bool) -> None:
    """pid 1 of a new pid namespace sees its parent as 0, so the death-signal step
    cannot tell by getppid() that vbdecl died (for instance while the ids changed,
    which clears the death signal): the pipe only vbdecl reads tells instead. Here
    the middle process plays vbdecl: it forks pid 1 and holds (or closes) the read
    end; pid 1's last steps must exec only while it is held."""
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            r, w = os.pipe2(os.O_CLOEXEC)
            go_r, go_w = os.pipe2(os.O_CLOEXEC)
            assert _libc.unshare(CLONE_NEWPID) == 0
            child = os.fork()
            if child == 0:
                try:
                    os.close(r)
                    os.close(go_w)
                    assert os.getpid() == 1 and os.getppid() == 0
                    assert os.read(go_r, 1) == b"g"      # the middle process has chosen
                    plan = laststep.LastStep()
                    plan.death_parent = 0
                    plan.death_watch = w
                    plan.argv = plan.paths = [b"/bin/true"]
                    plan.keep = [w]
                    laststep.exec_in_place(plan)
                finally:
                    os._exit(98)
            os.close(w)
            if not reader_alive:
                os.close(r)
            os.write(go_w, b"g")
            _, status = os.waitpid(child, 0)
            code = os.waitstatus_to_exitcode(status)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == (0 if reader_alive else 128 + 9)
