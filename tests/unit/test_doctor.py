"""vbdecl doctor: every check is reported, with a hint when something is missing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from vbdecl.cli.main import main


def test_doctor_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["doctor", "--json"])
    out = json.loads(capsys.readouterr().out)
    checks = out["checks"]
    for name in ("kernel", "namespace.user", "namespace.pid", "namespace.mount", "namespace.uts",
                 "namespace.ipc", "namespace.net", "namespace.cgroup", "namespace.user-unprivileged",
                 "cgroups", "overlayfs", "nftables", "seccomp", "landlock"):
        assert name in checks
        assert isinstance(checks[name]["ok"], bool) and checks[name]["detail"]
        if not checks[name]["ok"]:
            assert checks[name]["hint"], name
    assert checks["cgroups"]["layout"] in ("v1", "v2", "hybrid", "none")
    assert isinstance(checks["landlock"]["abi"], int)
    assert rc == (0 if out["ok"] else 1)


def test_doctor_text(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["doctor"])
    out = capsys.readouterr().out
    assert "namespace.user-unprivileged" in out and "landlock" in out
    assert out.strip().splitlines()[-1].startswith("vbdecl can" if rc == 0 else "vbdecl cannot")


def test_probes_agree_with_the_kernel() -> None:
    import os

    from vbdecl.sys import probe

    assert probe.kernel()["detail"].split()[1] == os.uname().release
    with open("/proc/filesystems") as f:
        assert probe.overlayfs()["ok"] == ("overlay" in f.read() or probe.overlayfs()["ok"])
    with open("/proc/self/status") as f:
        assert probe.seccomp()["ok"] == ("Seccomp:" in f.read())


def test_controllers_a_user_may_not_write_are_not_called_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unprivileged review: doctor said "missing: memory, ..." of controllers that are
    mounted but not delegated to the user."""
    from vbdecl.sys import cgroupfs, probe

    monkeypatch.setattr(cgroupfs, "detect", lambda: {"mode": "v1", "controllers": {
        "memory": {"usable": False, "version": 1, "hierarchy": "/sys/fs/cgroup/memory"},
        "pids": {"usable": True, "version": 1, "hierarchy": "/sys/fs/cgroup/pids"},
        "io": {"usable": False, "version": None, "hierarchy": None}}})
    found = probe.cgroups()
    assert found["detail"] == "v1; usable: pids; not writable here: memory; missing: io"
    assert found["hint"].startswith("limits on memory, io cannot be enforced (memory: not writable by this "
                                    "user: limits need root; vbdecl does not use a cgroup delegated to "
                                    "a user)") is (os.geteuid() != 0)
    # root is not told to run as root (a review: a read-only cgroup mount)
    assert found["hint"].startswith("limits on memory, io cannot be enforced (memory: mounted read-only)") \
        is (os.geteuid() == 0)


def test_nft_is_found_in_sbin_outside_the_users_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A UX review: doctor as a user (PATH without /usr/sbin) said "no nft binary"."""
    import shutil

    from vbdecl.sys import probe

    if shutil.which("nft", path="/usr/sbin:/sbin") is None:
        pytest.skip("no nft in /usr/sbin or /sbin here")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert "nft at /" in probe.nftables()["detail"]
