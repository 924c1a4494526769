"""The raw syscall layer (vbdecl/sys/_linux.c through vbdecl.sys.raw)."""

from __future__ import annotations

import errno
import os

import pytest

from vbdecl.errors import SysError
from vbdecl.sys import _linux, raw


def test_a_result_comes_back_as_is_and_a_failure_as_minus_errno() -> None:
    assert raw.syscall("setns", -1, 0) == -errno.EBADF
    fd = raw.syscall("pidfd_open", os.getpid(), 0)
    assert fd >= 0
    os.close(fd)


def test_bytes_and_none_are_pointers_and_flags_may_use_all_64_bits() -> None:
    # statx(AT_FDCWD, "/", 0, STATX_BASIC_STATS, buf): bytes in, a writable buffer out
    buf = bytearray(256)
    assert raw.syscall("statx", -100, b"/", 0, 0x7FF, buf) == 0
    assert int.from_bytes(buf[0:4], "little") & 0x7FF     # stx_mask: the kernel wrote it
    # flags with every bit set go through (and are refused by the kernel); so does 2**64-1
    assert raw.syscall("statx", -100, b"/", 0xFFFFFFFF, 0x7FF, buf) == -errno.EINVAL
    assert raw.syscall("statx", -100, b"/", (1 << 64) - 1, 0x7FF, buf) == -errno.EINVAL
    assert raw.syscall("statx", -100, None, 0, 0x7FF, buf) == -errno.EFAULT


def test_arguments_it_cannot_pass_are_refused_before_the_call() -> None:
    with pytest.raises(TypeError):
        raw.syscall("setns", "3", 0)           # type: ignore[arg-type]
    with pytest.raises(TypeError):
        raw.syscall("setns", b"x", memoryview(b"read-only"))  # type: ignore[arg-type]
    with pytest.raises(OverflowError):
        raw.syscall("setns", 1 << 64, 0)
    with pytest.raises(TypeError):
        _linux.syscall(raw.NR["setns"], 1, 2, 3, 4, 5, 6, 7)


def test_check_names_the_call_and_the_errno() -> None:
    with pytest.raises(SysError) as caught:
        raw.check(raw.syscall("setns", -1, 0), "setns(-1)")
    assert caught.value.errno == errno.EBADF
    assert "setns(-1): Bad file descriptor (EBADF)" in str(caught.value)
