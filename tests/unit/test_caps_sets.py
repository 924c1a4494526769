"""Capability set computation (pure) and name handling."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vbdecl.errors import RuntimeSetupError
from vbdecl.model.names import CAPABILITIES, DEFAULT_CAPABILITIES
from vbdecl.ops import sec

LAST = 40
ALL = (1 << (LAST + 1)) - 1


def m(*names: str) -> int:
    return sum(1 << CAPABILITIES[n] for n in names)


DEFAULT = m(*DEFAULT_CAPABILITIES)


@pytest.mark.parametrize("raw", ["NET_RAW", "net_raw", "CAP_NET_RAW", "cap_net_raw", " Cap_Net_Raw "])
def test_cap_name_spellings(raw: str) -> None:
    assert sec.cap_name(raw) == "NET_RAW"
    assert sec.cap_mask([raw], LAST) == m("NET_RAW")


def test_all_and_unknown() -> None:
    assert sec.cap_mask(["all"], LAST) == ALL
    assert sec.cap_mask(["ALL"], LAST, 0b101) == 0b101
    with pytest.raises(RuntimeSetupError, match="unknown capability 'NOPE'"):
        sec.cap_mask(["NOPE"], LAST)
    with pytest.raises(RuntimeSetupError, match="not known to the running kernel"):
        sec.cap_mask(["CHECKPOINT_RESTORE"], 39)


def test_default_for_root_and_for_other_uids() -> None:
    assert sec.capability_sets(None, 0, LAST) == (DEFAULT, DEFAULT)
    assert sec.capability_sets(None, 1000, LAST) == (DEFAULT, 0)
    assert not DEFAULT & m("SYS_ADMIN", "NET_ADMIN", "NET_RAW", "SYS_PTRACE", "SYS_MODULE")


def test_drop_and_add() -> None:
    assert sec.capability_sets({"drop": ["ALL"], "add": []}, 0, LAST) == (0, 0)
    assert sec.capability_sets({"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}, 0, LAST) == \
        (m("NET_BIND_SERVICE"), m("NET_BIND_SERVICE"))
    b, k = sec.capability_sets({"drop": ["chown"], "add": ["SYS_PTRACE"]}, 0, LAST)
    assert b == k == (DEFAULT & ~m("CHOWN")) | m("SYS_PTRACE")
    assert sec.capability_sets({"drop": [], "add": ["ALL"]}, 0, LAST) == (ALL, ALL)
    # A non-root uid keeps only what `add` names; the bounding set is the computed set.
    b, k = sec.capability_sets({"drop": [], "add": ["NET_BIND_SERVICE"]}, 1000, LAST)
    assert (b, k) == (DEFAULT | m("NET_BIND_SERVICE"), m("NET_BIND_SERVICE"))


def test_available_limits_all_and_default_but_explicit_adds_must_be_held() -> None:
    held = DEFAULT & ~m("MKNOD")
    assert sec.capability_sets(None, 0, LAST, available=held) == (held, held)
    assert sec.capability_sets({"drop": [], "add": ["ALL"]}, 0, LAST, available=held) == (held, held)
    with pytest.raises(RuntimeSetupError, match="does not hold MKNOD"):
        sec.capability_sets({"drop": [], "add": ["MKNOD"]}, 0, LAST, available=held)


def test_disable_userns_removes_sys_resource() -> None:
    b, k = sec.capability_sets({"drop": [], "add": ["ALL"]}, 0, LAST, disable_userns=True)
    assert b == k == ALL & ~m("SYS_RESOURCE")
    with pytest.raises(RuntimeSetupError, match="SYS_RESOURCE"):
        sec.capability_sets({"drop": [], "add": ["SYS_RESOURCE"]}, 0, LAST, disable_userns=True)


def test_docs_list_the_default_set() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text()
    section = doc.split("## Default capabilities", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    listed = {n for row in rows for n in re.findall(r"`CAP_([A-Z_]+)`", row)}
    assert listed == set(DEFAULT_CAPABILITIES)


def test_status_parser() -> None:
    from vbdecl.sys.caps import caps_of_status

    text = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t0000000000000400\n"
    assert caps_of_status(text) == {"CapInh": 0, "CapEff": 0x400}


def test_run_path_imports_stay_light() -> None:
    import subprocess
    import sys

    code = ("import sys, vbdecl.ops.sec as s; s.capability_sets(None, 0, 40); s.default_profile(); "
            "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('pydantic', 'ruamel', 'rich', 'pyroute2', 'seccomp'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_the_live_ptrace_rule_is_root_s_and_needs_its_own_user_namespace(monkeypatch) -> None:
    """The session's review: the rule refused (with `this process does not hold X`) what
    an unprivileged caller's plan of any capabilities.add had been, and took a joined user
    namespace, which may be the host's, for one of the environment's own."""
    import os

    spec = {"namespaces": {"user": False, "pid": True, "mount": True},
            "security": {"capabilities": {"add": ["SYS_PTRACE"]}}, "process": {}}
    if os.geteuid() == 0:
        assert sec.live_ptrace_problem(spec) is not None
        joined = {**spec, "namespaces": {**spec["namespaces"], "user": {"join": "/proc/1/ns/user"}}}
        assert sec.live_ptrace_problem(joined) is not None
        own = {**spec, "namespaces": {**spec["namespaces"], "user": True}}
        assert sec.live_ptrace_problem(own) is None
    monkeypatch.setattr(sec.os, "geteuid", lambda: 1000)
    assert sec.live_ptrace_problem(spec) is None


def test_a_refused_seccomp_program_points_at_the_cache(tmp_path: Path, monkeypatch) -> None:
    """A crash review damaged a cached seccomp program (a valid length, bad instructions):
    every run failed with a bare `prctl(PR_SET_SECCOMP...): EINVAL`."""
    import errno

    from vbdecl.sys import laststep

    monkeypatch.setenv("VBDECL_CACHE_DIR", str(tmp_path))
    err = sec.failure({}, laststep.LastStep(), laststep.Failure(laststep.SECCOMP, 0, errno.EINVAL))
    assert err is not None and f"{tmp_path}/seccomp: remove that directory" in str(err), err
