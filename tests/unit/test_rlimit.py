"""rlimits: name mapping, value normalization, and setrlimit in a forked child
through the process's last steps (vbdecl.sys.laststep; lowering limits needs no root)."""

from __future__ import annotations

import os
import resource

import pytest

from vbdecl.errors import SysError
from vbdecl.sys import laststep
from vbdecl.sys.rlimit import NAMES, failed, normalize, resolve

INF = resource.RLIM_INFINITY


def test_names_cover_the_manifest() -> None:
    for name in ("nofile", "nproc", "core", "as", "stack", "cpu", "fsize", "memlock"):
        assert NAMES[name] == getattr(resource, f"RLIMIT_{name.upper()}")


def test_normalize() -> None:
    assert normalize({"nofile": 1024}) == {"nofile": (1024, 1024)}
    assert normalize({"nofile": [64, 128]}) == {"nofile": (64, 128)}
    assert normalize({"core": [0, "unlimited"], "stack": -1}) == \
        {"core": (0, INF), "stack": (INF, INF)}
    assert normalize({"cpu": [None, None]}) == {"cpu": (INF, INF)}


@pytest.mark.parametrize(("value", "match"), [
    ({"nofiles": 3}, "did you mean 'nofile'"),
    ({"nofile": [10, 5]}, "above the hard limit"),
    ({"nofile": ["unlimited", 5]}, "above the hard limit"),
    ({"nofile": [1, 2, 3]}, r"expected \[soft, hard\]"),
    ({"nofile": -5}, "negative"),
    ({"nofile": True}, "not a limit value"),
])
def test_normalize_rejects(value: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        normalize(value)


def apply_rlimits(rlimits: dict[str, object]) -> None:
    """setrlimit each entry here, as the process's last steps do."""
    limits = resolve(rlimits)
    plan = laststep.LastStep()
    plan.rlimits = [(number, soft, hard) for _, number, soft, hard in limits]
    failure = laststep.exec_in_place(plan)
    if failure is not None:
        assert failure.step == laststep.RLIMIT
        name, _, soft, hard = limits[failure.index]
        raise failed(name, soft, hard, failure.errno)


def _in_child(fn: object) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            code = fn()  # type: ignore[operator]
        except BaseException:
            code = 99
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_apply_rlimits_in_child_is_seen_by_the_kernel() -> None:
    def child() -> int:
        # (the worker's fds, up to the test order: with 16 of them open, no file opens)
        os.closerange(3, 1 << 16)
        apply_rlimits({"nofile": [16, 32], "core": 0})
        with open("/proc/self/limits") as f:
            limits = f.read()
        nofile = next(line for line in limits.splitlines() if line.startswith("Max open files"))
        core = next(line for line in limits.splitlines() if line.startswith("Max core file size"))
        ok = nofile.split()[3:5] == ["16", "32"] and core.split()[4:6] == ["0", "0"]
        return 0 if ok else 1

    assert _in_child(child) == 0


def test_apply_rlimits_error_names_the_limit() -> None:
    def child() -> int:
        try:
            apply_rlimits({"nofile": [1 << 40, 1 << 40]})
        except SysError as exc:
            return 0 if "setrlimit nofile" in str(exc) and exc.hint else 2
        return 1

    assert _in_child(child) == 0
