"""seccomp profiles: the default list, manifest lists, OCI files, filter building (no root)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from vbdecl.errors import RuntimeSetupError
from vbdecl.ops import sec
from vbdecl.sys import seccomp as ssc

DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"


def _names(profile: dict) -> list[str]:
    return [n for r in profile["syscalls"] for n in r["names"]]


def test_default_profile_shape_and_list() -> None:
    p = sec.default_profile()
    assert p["defaultAction"] == "SCMP_ACT_ALLOW"
    assert all(r["action"] == "SCMP_ACT_ERRNO" and r["errnoRet"] == 1 for r in p["syscalls"])
    names = set(_names(p))
    for must in ("kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
                 "reboot", "swapon", "swapoff", "keyctl", "add_key", "request_key", "bpf",
                 "perf_event_open", "userfaultfd", "open_by_handle_at", "mount", "umount2",
                 "pivot_root", "move_mount", "open_tree", "fsopen", "fsmount", "fspick", "acct",
                 "settimeofday", "clock_settime", "iopl", "ioperm", "lookup_dcookie"):
        assert must in names, must
    for allowed in ("ptrace", "unshare", "clone", "clone3", "setns", "chroot", "name_to_handle_at"):
        assert allowed not in names, allowed


def test_docs_list_exactly_the_default_calls() -> None:
    section = DOC.read_text().split("## Default seccomp profile", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    documented = {n for row in rows for n in re.findall(r"`([a-z_0-9]+)`", row)}
    assert documented == set(_names(sec.default_profile()))


def test_off_default_and_unsupported() -> None:
    assert sec.seccomp_profile("off") == (None, False)
    assert sec.seccomp_profile(None) == (None, False)
    assert sec.seccomp_profile("default")[0] == sec.default_profile()
    with pytest.raises(RuntimeSetupError, match="unsupported value"):
        sec.seccomp_profile(["x"])


def test_deny_list_extends_the_default_with_its_errno() -> None:
    p, _ = sec.seccomp_profile({"deny": ["ptrace", "@swap", "mount"], "errno": "ENOSYS"})
    first = p["syscalls"][0]
    assert first == {"names": ["ptrace", "swapoff", "swapon", "mount"], "action": "SCMP_ACT_ERRNO",
                     "errnoRet": 38}
    rest = [n for r in p["syscalls"][1:] for n in r["names"]]
    assert "kexec_load" in rest and "mount" not in rest and "swapon" not in rest


def test_allow_list_is_an_allowlist() -> None:
    p, _ = sec.seccomp_profile({"allow": ["read", "write"], "errno": "EPERM"})
    assert p["defaultAction"] == "SCMP_ACT_ERRNO" and p["defaultErrnoRet"] == 1
    assert p["syscalls"] == [{"names": ["read", "write", "execve", "exit", "exit_group"],
                              "action": "SCMP_ACT_ALLOW"}]
    p, _ = sec.seccomp_profile({"allow": ["read"]}, extra_allow=("capset",))
    assert "capset" in p["syscalls"][0]["names"]


def test_names_are_checked() -> None:
    with pytest.raises(RuntimeSetupError, match="unknown system call 'nope'"):
        sec.seccomp_profile({"deny": ["nope"]})
    with pytest.raises(RuntimeSetupError, match="unknown system call group '@nope'"):
        sec.seccomp_profile({"deny": ["@nope"]})
    with pytest.raises(RuntimeSetupError, match="unknown errno"):
        sec.seccomp_profile({"deny": ["mount"], "errno": "EWHAT"})


def test_profile_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"defaultAction": ')
    with pytest.raises(RuntimeSetupError, match=r"bad.json:1:\d+: the seccomp profile is not valid JSON"):
        sec.seccomp_profile({"profile": str(bad)})
    with pytest.raises(RuntimeSetupError, match="cannot read the seccomp profile"):
        sec.seccomp_profile({"profile": str(tmp_path / "missing.json")})
    good = tmp_path / "p.json"
    good.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": []}))
    loaded = sec.load_host_files({"security": {"seccomp": {"profile": str(good)}}})
    assert loaded["security"]["seccomp"]["profile_data"]["defaultAction"] == "SCMP_ACT_ALLOW"
    # an item the profile got wrong: its file, the key that named the file, and the item
    # (a review was told only "seccomp profile: unsupported action 'SCMP_ACT_BOGUS'")
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["ptrace"], "action": "SCMP_ACT_ERRNO"}, {"names": ["reboot"], "action": "SCMP_ACT_BOGUS"}]}))
    with pytest.raises(RuntimeSetupError) as failed:
        sec._build_filter({"profile": str(wrong)}, 0, 0)
    assert failed.value.message == \
        f"{wrong} (security.seccomp.profile): syscalls[1]: unsupported action 'SCMP_ACT_BOGUS'"
    wrong.write_text(json.dumps({"defaultAction": "SCMP_ACT_NOPE"}))
    with pytest.raises(RuntimeSetupError, match=r"wrong.json \(security.seccomp.profile\): defaultAction: "
                                                r"unsupported action 'SCMP_ACT_NOPE'"):
        sec._build_filter({"profile": str(wrong)}, 0, 0)


def _pfc(profile: dict, **kw: object) -> str:
    import tempfile

    filt = ssc.build_filter(profile, **kw)
    with tempfile.TemporaryFile("w+") as f:
        filt.export_pfc(f)
        f.seek(0)
        return f.read()


def test_default_filter_covers_native_and_compat_arches() -> None:
    pfc = _pfc(sec.default_profile())
    if ssc.native_arch() == "x86_64":
        for arch in ("x86_64", "x86", "x32"):
            assert f"# filter for arch {arch} (" in pfc
    assert "kexec_load" in pfc and "action ERRNO(1)" in pfc


def test_oci_includes_excludes_args_and_unknown_names() -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
        "syscalls": [
            {"names": ["read", "write", "not_a_real_call"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_PTRACE"]}},
            {"names": ["chroot"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_SYS_CHROOT"]}},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
            {"names": ["socket"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 1, "value": 0xF, "valueTwo": 1, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["close"], "action": "SCMP_ACT_ERRNO"},   # same as the default: skipped
        ],
    }
    pfc = _pfc(profile, caps={"SYS_CHROOT"})
    assert "read" in pfc and "personality" in pfc and "socket" in pfc
    assert "ptrace" not in pfc and "chroot" not in pfc
    pfc = _pfc(profile, caps={"SYS_PTRACE"})
    assert "ptrace" in pfc and "chroot" in pfc
    with pytest.raises(RuntimeSetupError, match="unsupported action"):
        ssc.build_filter({"defaultAction": "SCMP_ACT_NOTIFY"})
    with pytest.raises(RuntimeSetupError, match="unknown architecture"):
        ssc.build_filter({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_VAX"]})


def test_rule_applies_arches_and_kernel() -> None:
    assert ssc.rule_applies({"includes": {"arches": ["amd64"]}}, set(), "x86_64")
    assert not ssc.rule_applies({"includes": {"arches": ["arm64"]}}, set(), "x86_64")
    assert not ssc.rule_applies({"excludes": {"arches": ["x86_64"]}}, set(), "x86_64")
    assert ssc.rule_applies({"includes": {"minKernel": "4.8"}}, set(), "x86_64")
    assert not ssc.rule_applies({"includes": {"minKernel": "99.0"}}, set(), "x86_64")


def test_raw_program_shape(tmp_path: Path) -> None:
    import os

    r, w = os.pipe()
    os.write(w, b"\x06\x00\x00\x00\x00\x00\xff\x7f")   # ret ALLOW
    os.close(w)
    assert ssc.read_bpf_fd(r) == b"\x06\x00\x00\x00\x00\x00\xff\x7f"
    for data in (b"", b"1234567"):
        r, w = os.pipe()
        os.write(w, data)
        os.close(w)
        with pytest.raises(RuntimeSetupError, match="not a non-empty multiple of 8"):
            ssc.read_bpf_fd(r)


def test_binding_is_found_outside_the_venv() -> None:
    s = ssc.binding()
    assert hasattr(s, "SyscallFilter")
    assert ssc.errno_number("EPERM") == 1 and ssc.errno_number(38) == 38


def test_preload_leaves_nothing_to_import_or_read_after_pivot(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    code = """
import builtins, sys
from vbdecl.ops import sec
from vbdecl.sys import seccomp as ssc
settings = ["default", {"deny": ["@swap", "mkdir"], "errno": "EROFS"}, {"allow": ["@swap", "read"]}]
specs = [{"security": {"seccomp": s, "landlock": {"read": ["/usr"]}}, "process": {"user": u}}
         for s in settings for u in (0, 1000)]
for spec in specs:
    sec.preload(spec)
sys.path[:] = []
sys.path_importer_cache.clear()
def no_open(*a, **k):
    raise AssertionError(f"open{a} after preload")
builtins.open = no_open
for spec in specs:
    _, _, kept, hold = sec.privileges(spec)
    filt, raw = sec.seccomp_filters(spec, kept, hold)
    # (and the filter of Landlock's sockets, where it handles TCP)
    assert filt is None and len(raw) == 1 + sec.landlock_handles_tcp(spec), spec
    assert all(len(program) % 8 == 0 for program in raw), spec
print(sec.capability_sets({"drop": ["ALL"], "add": ["net_bind_service"]}, 1000, 40))
"""
    env = dict(os.environ, VBDECL_CACHE_DIR=str(tmp_path / "cache"))
    for attempt in ("builds and caches the programs", "reads them from the cache"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        assert out.returncode == 0, (attempt, out.stderr)
        assert out.stdout.strip() == "(1024, 1024)"
    from vbdecl.ops import sec

    tcp = sec.landlock_handles_tcp({"security": {"landlock": {"read": ["/usr"]}}})
    assert len(list((tmp_path / "cache" / "seccomp").glob("*.marshal"))) == 6 + tcp


def test_cached_program_is_the_program_libseccomp_builds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VBDECL_CACHE_DIR", str(tmp_path))
    spec: dict[str, Any] = {"security": {"seccomp": {"deny": ["mkdir"]}}, "process": {"user": 0}}
    sec._programs.clear()
    sec.prepare_programs(spec)
    _, _, kept, hold = sec.privileges(spec)
    _, (program,) = sec.seccomp_filters(spec, kept, hold)
    profile, _ = sec.seccomp_profile(spec["security"]["seccomp"])
    assert program == ssc.export_bpf(ssc.build_filter(profile, caps=sec.mask_names(kept)))
    (entry,) = (tmp_path / "seccomp").glob("*.marshal")
    sec._programs.clear()
    entry.write_bytes(b"garbage")                  # a corrupt entry is rebuilt, not used
    sec.prepare_programs(spec)
    assert sec.seccomp_filters(spec, kept, hold)[1] == [program]
    assert ssc.library_unchanged(ssc.library_identity())
    assert not ssc.library_unchanged([["/nonexistent", 1, 2, 3]]) and not ssc.library_unchanged(None)
    changed = ssc.library_identity()
    changed[0][3] = int(str(changed[0][3])) + 1           # another build of the binding
    assert not ssc.library_unchanged(changed)
    sec._programs.clear()


def test_program_key_covers_the_code_that_builds_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from vbdecl.engine import cachefile

    monkeypatch.setattr(sec, "_inputs", None)
    before = sec._program_key("default", 0, 0)
    monkeypatch.setattr(sec, "_inputs", None)
    monkeypatch.setattr(cachefile, "code_fingerprint", lambda *parts: "a newer vbdecl")
    assert sec._program_key("default", 0, 0) != before
    assert sec._program_key("default", 0, 0) != sec._program_key("default", 1 << 21, 0)
    assert sec._program_key("off", 0, 0) is None
    assert sec._program_key({"profile": "/x.json"}, 0, 0) is None       # read in the child
    monkeypatch.setattr(sec, "_inputs", None)
