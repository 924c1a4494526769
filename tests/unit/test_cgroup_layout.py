"""cgroupfs without root: mountinfo parsing, value conversions, read-back rules,
availability checks, and the whole v2 code path on a FAKE cgroup2 tree
(a temporary directory that mimics cgroupfs files; no kernel cgroup involved)."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from vbdecl.errors import ActionError, SysError
from vbdecl.ops.base import Context
from vbdecl.sys import cgroupfs as cg

V1_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
90 39 0:36 /sub /mnt/pids\\040bind rw,relatime - cgroup cgroup rw,pids
"""
HYBRID_MOUNTINFO = V1_MOUNTINFO + \
    "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate\n"
V2_MOUNTINFO = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"


def test_parse_mountinfo_v1() -> None:
    unified, v1 = cg.parse_mountinfo(V1_MOUNTINFO)
    assert unified is None
    assert v1 == {"cpu": "/sys/fs/cgroup/cpu,cpuacct", "cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
                  "memory": "/sys/fs/cgroup/memory", "blkio": "/sys/fs/cgroup/blkio",
                  "pids": "/sys/fs/cgroup/pids"}
    layout = cg.Layout(unified=unified, v1=v1)
    assert layout.mode == "v1"
    assert layout.place("io") == (1, "/sys/fs/cgroup/blkio")
    assert layout.place("cpuacct") == (1, "/sys/fs/cgroup/cpu,cpuacct")


def test_parse_mountinfo_hybrid_and_v2() -> None:
    unified, v1 = cg.parse_mountinfo(HYBRID_MOUNTINFO)
    assert unified == "/sys/fs/cgroup/unified"
    layout = cg.Layout(unified=unified, v1=v1, v2_controllers=frozenset({"hugetlb"}))
    assert layout.mode == "hybrid"
    assert layout.place("memory") == (1, "/sys/fs/cgroup/memory")
    unified, v1 = cg.parse_mountinfo(V2_MOUNTINFO)
    layout = cg.Layout(unified=unified, v1=v1, v2_controllers=frozenset({"memory", "cpu"}))
    assert layout.mode == "v2"
    assert layout.place("memory") == (2, "/sys/fs/cgroup")
    assert layout.place("cpuacct") == (2, "/sys/fs/cgroup")
    assert layout.place("pids") is None
    assert cg.Layout().mode == "none"


def test_unescape_mountinfo() -> None:
    assert cg._unescape("/a\\040b") == "/a b"
    assert cg._unescape("/trailing\\04") == "/trailing\\04"


def test_conversions() -> None:
    assert cg.cpu_quota(0.2) == 20_000
    assert cg.cpu_quota(1.5) == 150_000
    assert cg.cpu_quota(0.001) == cg.CPU_QUOTA_MIN_US
    assert cg.weight_to_shares(100) == 1024
    assert cg.weight_to_shares(1) == 10
    assert cg.weight_to_shares(10000) == 102400
    for w in (1, 50, 100, 200, 10000):
        assert abs(cg.shares_to_weight(cg.weight_to_shares(w)) - w) <= 1
    assert cg.io_weight_v1(100, "blkio.weight") == 500
    assert cg.io_weight_v1(10000, "blkio.weight") == 1000
    assert cg.io_weight_v1(1, "blkio.weight") == 10
    assert cg.io_weight_v1(5000, "blkio.bfq.weight") == 1000


def test_limit_writes_both_versions() -> None:
    lim: dict[str, Any] = {"memory": 64 << 20, "memory_swap": 16 << 20}
    assert cg.limit_writes(2, "memory", 64 << 20, lim) == [("memory.max", str(64 << 20))]
    assert cg.limit_writes(1, "memory", None, lim) == [("memory.limit_in_bytes", "-1")]
    assert cg.limit_writes(2, "memory_swap", 16 << 20, lim) == [("memory.swap.max", str(16 << 20))]
    # v1 limits memory+swap together.
    assert cg.limit_writes(1, "memory_swap", 16 << 20, lim) == \
        [("memory.memsw.limit_in_bytes", str(80 << 20))]
    assert cg.limit_writes(2, "cpu", 0.2, lim) == [("cpu.max", "20000 100000")]
    assert cg.limit_writes(2, "cpu", None, lim) == [("cpu.max", "max 100000")]
    assert cg.limit_writes(1, "cpu", 1.5, lim) == \
        [("cpu.cfs_period_us", "100000"), ("cpu.cfs_quota_us", "150000")]
    assert cg.limit_writes(1, "cpu_weight", 100, lim) == [("cpu.shares", "1024")]
    assert cg.limit_writes(2, "cpu_weight", 100, lim) == [("cpu.weight", "100")]
    assert cg.limit_writes(2, "pids", 8, lim) == [("pids.max", "8")]
    assert cg.limit_writes(1, "pids", None, lim) == [("pids.max", "max")]
    assert cg.limit_writes(2, "io_weight", 300, lim) == [("io.weight", "default 300")]


def test_same_value_readback_rules() -> None:
    page = cg.PAGE_SIZE
    assert cg.same_value("x/memory.max", str(page + 1), str(page))
    assert not cg.same_value("x/memory.max", str(2 * page), str(page))
    assert cg.same_value("x/memory.limit_in_bytes", "-1", "9223372036854771712")
    assert cg.same_value("x/memory.max", "max", "max")
    assert cg.same_value("x/cpu.max", "max", "max 100000")
    assert not cg.same_value("x/cpu.max", "20000 100000", "30000 100000")
    assert cg.same_value("x/cpu.cfs_quota_us", "-1", "-1")
    assert cg.same_value("x/io.weight", "default 300", "default 300\n8:0 200")
    assert not cg.same_value("x/pids.max", "8", "9")


def test_missing_controllers_are_named_with_a_hint(tmp_path: Path) -> None:
    layout = cg.Layout(unified=None, v1={"memory": str(tmp_path)})
    problems = cg.missing(layout, {"memory": 1 << 20, "pids": 10, "cpu": None})
    assert [p[0] for p in problems] == ["pids"]
    assert "pids controller" in problems[0][1]
    assert "limits.optional" in problems[0][2]
    # v1 without swap accounting (no memsw file in the fake root).
    problems = cg.missing(layout, {"memory": 1 << 20, "memory_swap": 0})
    assert [p[0] for p in problems] == ["memory_swap"]
    assert "swapaccount=1" in problems[0][2]
    (tmp_path / "memory.memsw.limit_in_bytes").write_text("0")
    assert cg.missing(layout, {"memory_swap": 0})[0][1].startswith(
        "limits.memory_swap needs limits.memory")
    assert cg.missing(cg.Layout(), {"memory": 1})[0][1] == "no cgroup hierarchy is mounted"
    # a hierarchy this user may not write (not delegated): also the way without root
    real_access = os.access

    def no_write(path: Any, mode: int, **kw: Any) -> bool:
        return False if mode == os.W_OK and str(path).startswith(str(tmp_path)) else \
            real_access(path, mode, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cg.os, "access", no_write)
        problems = cg.missing(cg.Layout(unified=None, v1={"pids": str(tmp_path)}), {"pids": 8})
    assert problems[0][1] == f"limits.pids: {tmp_path} is not writable by this user"
    # (it said to ask for a delegated cgroup, which vbdecl does not use: a user's review)
    assert problems[0][2].startswith("run as root (limits need it: vbdecl does not use a cgroup "
                                     "delegated to you)") and "limits.optional: true" in problems[0][2]


def test_group_plan_per_layout() -> None:
    hybrid = cg.Layout(unified="/u", v1={"memory": "/m", "cpu": "/c", "cpuacct": "/c", "pids": "/p"})
    plan = cg.group_plan(hybrid, ["memory", "cpu"])
    assert [(d["hierarchy"], d["version"], d["controllers"]) for d in plan] == \
        [("/m", 1, ["memory"]), ("/c", 1, ["cpu"]), ("/u", 2, [])]
    v1 = cg.Layout(v1={"memory": "/m", "cpu": "/c", "cpuacct": "/a"})
    plan = cg.group_plan(v1, ["memory"])
    assert [(d["hierarchy"], d["controllers"]) for d in plan] == [("/m", ["memory"]), ("/a", ["cpuacct"])]
    v2 = cg.Layout(unified="/u", v2_controllers=frozenset({"memory", "cpu", "pids", "io"}))
    plan = cg.group_plan(v2, ["memory", "cpu", "pids"])
    assert [(d["hierarchy"], d["controllers"]) for d in plan] == [("/u", ["memory", "cpu", "pids"])]


# --- the v2 code on a FAKE tree ----------------------------------------------------

V2_FILES = {
    "cgroup.procs": "", "cgroup.events": "populated 0\nfrozen 0\n", "cgroup.kill": "",
    "cgroup.subtree_control": "", "memory.max": "max", "memory.swap.max": "max",
    "memory.current": "4096", "memory.peak": "8192", "memory.events": "low 0\noom_kill 0\n",
    "cpu.max": "max 100000", "cpu.weight": "100", "cpu.stat": "usage_usec 1234\n",
    "pids.max": "max", "pids.current": "1", "pids.peak": "3", "io.weight": "default 100\n",
}


@pytest.fixture
def fake_v2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> cg.Layout:
    """A temporary directory that mimics a cgroup2 root; mkdir populates the files."""
    root = tmp_path / "cgroup2"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpu io memory pids\n")
    (root / "cgroup.subtree_control").write_text("")

    def mkdir(path: str) -> bool:
        try:
            os.mkdir(path)
        except FileExistsError:
            return False
        parent_ctl = Path(path).parent / "cgroup.subtree_control"
        enabled = " ".join(w.lstrip("+") for w in parent_ctl.read_text().split())
        (Path(path) / "cgroup.controllers").write_text(enabled)
        for name, content in V2_FILES.items():
            (Path(path) / name).write_text(content)
        return True

    def rmdir(path: str) -> None:
        if any(p.is_dir() for p in Path(path).iterdir()):
            raise OSError(39, "Directory not empty")
        for p in Path(path).iterdir():
            p.unlink()
        os.rmdir(path)

    monkeypatch.setattr(cg, "_mkdir", mkdir)
    monkeypatch.setattr(cg, "_rmdir", rmdir)
    return cg.Layout(unified=str(root), v1={}, v2_controllers=cg.read_controllers(str(root)))


def test_v2_fake_tree_group_limits_update_usage_revert(fake_v2: cg.Layout) -> None:
    from vbdecl.ops.cgroup import Group, Limit, oom_killed, usage

    root = Path(fake_v2.unified or "")
    limits: dict[str, Any] = {"memory": 64 << 20, "memory_swap": 0, "cpu": 0.2, "cpu_weight": 50,
                              "pids": 8, "io_weight": 300, "rlimits": {}, "optional": False}
    ctx = Context(name="t", instance="vb-0000fa2e", state_dir="", runtime_dir="",
                  spec={"limits": limits}, extra={"cgroup_layout": fake_v2})
    rec = Group().apply(ctx, {"layout_hint": None})
    cgdir = root / "vbdecl" / "vb-0000fa2e"
    assert rec["created"] == [str(cgdir)] and rec["parents_created"] == [str(root / "vbdecl")]
    assert set((root / "cgroup.subtree_control").read_text().replace("+", "").split()) == \
        {"memory", "cpu", "pids", "io"}
    assert set((root / "vbdecl" / "cgroup.subtree_control").read_text().replace("+", "").split()) \
        == {"memory", "cpu", "pids", "io"}
    ctx.records["cgroup"] = rec
    recs = {}
    for name in ("memory", "memory_swap", "cpu", "cpu_weight", "pids", "io_weight"):
        recs[name] = Limit().apply(ctx, {"limit": name, "value": limits[name]})
    assert (cgdir / "memory.max").read_text() == str(64 << 20)
    assert (cgdir / "memory.swap.max").read_text() == "0"
    assert (cgdir / "cpu.max").read_text() == "20000 100000"
    assert (cgdir / "cpu.weight").read_text() == "50"
    assert (cgdir / "pids.max").read_text() == "8"
    assert (cgdir / "io.weight").read_text() == "default 300"
    # probe reads the live values back in manifest units
    assert Limit().probe(ctx, {"limit": "cpu", "value": 0.2}, recs["cpu"]) == recs["cpu"]
    # probe works from the limit's own record (no group record at hand) and shows drift
    bare = Context(name="t", instance="vb-0000fa2e", state_dir="", runtime_dir="")
    (cgdir / "cpu.max").write_text("50000 100000")
    assert Limit().probe(bare, {}, recs["cpu"]) == {**recs["cpu"], "value": 0.5}
    (cgdir / "cpu.max").write_text("20000 100000")
    # in-place update
    Limit().update(ctx, {"limit": "pids", "value": 32}, recs["pids"])
    assert (cgdir / "pids.max").read_text() == "32"
    u = usage(rec)
    assert u["memory"] == {"current": 4096, "peak": 8192, "limit": 64 << 20, "oom_kills": 0}
    assert u["cpu"] == {"usage_usec": 1234, "limit": 0.2, "weight": 50}
    assert u["pids"] == {"current": 1, "peak": 3, "limit": 32}
    assert not oom_killed(rec)
    (cgdir / "memory.events").write_text("low 0\noom_kill 1\n")
    assert oom_killed(rec)
    # revert of a limit restores the default
    Limit().revert(ctx, recs["cpu"])
    assert (cgdir / "cpu.max").read_text() == "max 100000"
    Group().revert(ctx, rec)
    assert not (root / "vbdecl").exists()
    Group().revert(ctx, rec)  # idempotent


def test_v2_fake_tree_kernel_refusal_names_file_and_value(fake_v2: cg.Layout) -> None:
    rec = cg.create_group(fake_v2, "vb-0000fa2f", ["pids"])
    try:
        cgdir = Path(rec["unified"])
        (cgdir / "pids.max").unlink()
        with pytest.raises(SysError) as err:
            cg.set_limit(rec, "pids", 8, {"pids": 8})
        assert str(cgdir / "pids.max") in str(err.value) and "'8'" in str(err.value)
        assert err.value.hint and "controller" in err.value.hint
        # a read-back that differs is an error too
        (cgdir / "pids.max").write_text("max")
        orig = cg.read

        def clamp(path: str) -> str:
            return "7" if path.endswith("pids.max") else orig(path)

        cg.read = clamp  # type: ignore[assignment]
        try:
            with pytest.raises(SysError, match="kernel shows '7'"):
                cg.set_limit(rec, "pids", 8, {"pids": 8})
        finally:
            cg.read = orig  # type: ignore[assignment]
    finally:
        cg.remove_group(rec)


def test_v2_fake_tree_missing_controller_error_or_warning(fake_v2: cg.Layout) -> None:
    from vbdecl.ops.cgroup import Group, Limit, warnings

    layout = cg.Layout(unified=fake_v2.unified, v2_controllers=frozenset({"memory"}))
    ctx = Context(name="t", instance="vb-0000fa30", state_dir="", runtime_dir="",
                  spec={"limits": {"memory": 1 << 24, "pids": 8, "optional": False}},
                  extra={"cgroup_layout": layout})
    with pytest.raises(ActionError) as err:
        Group().apply(ctx, {"layout_hint": None})
    assert err.value.where == "cgroup" and "pids" in err.value.message
    assert not Path(fake_v2.unified or "", "vbdecl").exists()
    ctx.spec["limits"]["optional"] = True
    rec = Group().apply(ctx, {"layout_hint": None})
    try:
        assert len(warnings(rec)) == 1 and "limits.pids not enforced" in warnings(rec)[0]
        ctx.records["cgroup"] = rec
        lrec = Limit().apply(ctx, {"limit": "pids", "value": 8})
        assert lrec["skipped"]
    finally:
        Group().revert(ctx, rec)


def test_v2_fake_tree_parent_goes_with_its_last_environment(
        fake_v2: cg.Layout, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shared parent is removed by whichever environment leaves it empty,
    also when another one created it, and kept while another environment is inside."""
    parent = Path(fake_v2.unified or "", "vbdecl")
    cg._mkdir(str(parent))
    a = cg.create_group(fake_v2, "vb-0000fa31", ["memory"])
    b = cg.create_group(fake_v2, "vb-0000fa32", ["memory"])
    assert a["parents_created"] == [] and b["parents_created"] == []
    real_rmdir = cg._rmdir

    def rmdir(path: str) -> None:
        # A fake tree holds plain files where cgroupfs has none: drop them as the kernel would.
        if os.path.basename(path) == "vbdecl" and any(
                p.is_dir() for p in Path(path).iterdir()):
            raise OSError(errno.EBUSY, "busy")
        for p in Path(path).iterdir():
            if p.is_file():
                p.unlink()
        real_rmdir(path)

    monkeypatch.setattr(cg, "_rmdir", rmdir)
    cg.remove_group(a)
    assert parent.is_dir()       # b is still inside
    cg.remove_group(b)
    assert not parent.exists()   # the last one out removes it


def test_v2_fake_tree_probe_without_a_record_finds_the_group(fake_v2: cg.Layout) -> None:
    """Recovery of an apply killed inside the ``cgroup`` step: probe(params, None) gives
    the record create_group gave (found by the instance id), never another instance's."""
    from vbdecl.ops.cgroup import Group

    limits = {"memory": 64 << 20, "pids": 8, "rlimits": {}, "optional": False}
    ctx = Context(name="t", instance="vb-0000fa50", state_dir="", runtime_dir="",
                  spec={"limits": limits}, extra={"cgroup_layout": fake_v2})
    landed = Group().apply(ctx, {"layout_hint": None})
    other = cg.create_group(fake_v2, "vb-0000fa51", ["pids"])
    found = Group().probe(ctx, {"layout_hint": None}, None)
    assert found is not None
    for key in ("instance", "dirs", "created", "unified", "controllers"):
        assert found[key] == landed[key], key
    assert cg.find_group(fake_v2, "vb-0000fa52") is None
    assert cg.find_group(fake_v2, "..") is None
    Group().revert(ctx, found)
    assert not Path(landed["unified"]).exists() and Path(other["unified"]).exists()
    assert Group().probe(ctx, {"layout_hint": None}, None) is None
    cg.remove_group(other)
    assert not Path(fake_v2.unified or "", "vbdecl").exists()
    # killed between making the shared parent and the instance's directory in it (a kill
    # review found the parent left): no group is found (a review of the first fix had
    # recovery record it as one made without directories, and never make it), and the
    # tidying after the reverts removes it, empty, and only then
    cg._mkdir(os.path.join(fake_v2.unified or "", "vbdecl"))
    assert Group().probe(ctx, {"layout_hint": None}, None) is None
    other = cg.create_group(fake_v2, "vb-0000fa53", ["pids"])
    from vbdecl.ops import tidy_shared

    tidy_shared(ctx, ["cgroup.group"])
    assert Path(other["unified"]).is_dir()
    cg.remove_group(other)
    cg._mkdir(os.path.join(fake_v2.unified or "", "vbdecl"))
    tidy_shared(ctx, ["cgroup.group"])
    assert not Path(fake_v2.unified or "", "vbdecl").exists()


def test_fake_hybrid_tracking_dir_is_optional(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FAKE hybrid tree: an unwritable cgroup2 mount only loses the tracking dir
    (cpu time then comes from cpuacct); a v1 controller failure is an error."""
    mem, acct, uni = tmp_path / "memory", tmp_path / "cpuacct", tmp_path / "unified"
    for d in (mem, acct, uni):
        d.mkdir()

    def mkdir(path: str) -> bool:
        if path.startswith(str(uni)):
            raise PermissionError(13, "Permission denied")
        try:
            os.mkdir(path)
        except FileExistsError:
            return False
        Path(path, "cgroup.procs").write_text("")
        return True

    def rmdir(path: str) -> None:
        for p in Path(path).iterdir():
            if p.is_file():
                p.unlink()
        os.rmdir(path)

    monkeypatch.setattr(cg, "_mkdir", mkdir)
    monkeypatch.setattr(cg, "_rmdir", rmdir)
    layout = cg.Layout(unified=str(uni), v1={"memory": str(mem), "cpuacct": str(acct)})
    rec = cg.create_group(layout, "vb-0000fa40", ["memory"])
    assert rec["unified"] is None and "Permission denied" in rec["tracking_skipped"]
    assert rec["created"] == [str(mem / "vbdecl/vb-0000fa40"), str(acct / "vbdecl/vb-0000fa40")]
    cg.remove_group(rec)
    assert not (mem / "vbdecl").exists() and not (acct / "vbdecl").exists()
    # the v1 memory hierarchy refusing is an error, and nothing is left behind
    layout = cg.Layout(unified=None, v1={"memory": str(uni)})
    with pytest.raises(SysError, match=r"cannot create .*unified/vbdecl"):
        cg.create_group(layout, "vb-0000fa41", ["memory"])


def test_v2_fake_tree_no_swap_accounting_error_or_warning(fake_v2: cg.Layout) -> None:
    from vbdecl.ops.cgroup import Group, Limit

    limits: dict[str, Any] = {"memory": 1 << 24, "memory_swap": 0, "optional": False}
    ctx = Context(name="t", instance="vb-0000fa50", state_dir="", runtime_dir="",
                  spec={"limits": limits}, extra={"cgroup_layout": fake_v2})
    rec = Group().apply(ctx, {"layout_hint": None})
    ctx.records["cgroup"] = rec
    try:
        Path(rec["unified"], "memory.swap.max").unlink()   # a kernel without swap accounting
        with pytest.raises(ActionError) as err:
            Limit().apply(ctx, {"limit": "memory_swap", "value": 0})
        assert err.value.where == "cgroup.memory_swap" and "swap accounting" in err.value.message
        limits["optional"] = True
        lrec = Limit().apply(ctx, {"limit": "memory_swap", "value": 0, "optional": True})
        assert lrec["skipped"] and "swap accounting" in lrec["warnings"][0]
    finally:
        Group().revert(ctx, rec)


def test_optional_limits_without_a_delegated_cgroup(fake_v2: cg.Layout,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """No cgroup may be made (not delegated): under limits.optional the group is an
    empty record, every limit is skipped (also one added later, never enforced in a
    cgroup without the environment's processes) and nothing drifts; with optional
    off, the group fails, and so does a limit of the empty group."""
    from vbdecl.ops.cgroup import Group, Limit, warnings

    def refuse(path: str) -> bool:
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(cg, "_mkdir", refuse)
    limits: dict[str, Any] = {"pids": 8, "optional": True}
    ctx = Context(name="t", instance="vb-0000fa60", state_dir="", runtime_dir="",
                  spec={"limits": limits}, extra={"cgroup_layout": fake_v2})
    rec = Group().apply(ctx, {"layout_hint": None})
    assert rec["dirs"] == [] and "pids" in rec["skipped"]
    # (named by what was asked: a review was told of cpuacct, vbdecl's own accounting)
    assert [w.split(" (")[0] for w in warnings(rec)] == ["limits.pids not enforced: no cgroup can be made here"]
    assert Group().probe(ctx, {}, rec) == rec
    ctx.records["cgroup"] = rec
    assert Limit().apply(ctx, {"limit": "pids", "value": 8})["skipped"]
    assert Limit().apply(ctx, {"limit": "memory", "value": 1 << 24})["skipped"]   # added later
    Group().revert(ctx, rec)
    # a limit warned of already (its controller missing) is not named again (a limits review
    # was told of each twice)
    missing = cg.missing
    monkeypatch.setattr(cg, "missing", lambda layout, asked: [("pids", "no pids controller here", None)])
    limits["memory"] = 1 << 24
    rec = Group().apply(ctx, {"layout_hint": None})
    assert [w.split(" (")[0] for w in warnings(rec)] == [
        "limits.pids not enforced: no pids controller here",
        "limits.memory not enforced: no cgroup can be made here"]
    Group().revert(ctx, rec)
    del limits["memory"]
    rec = Group().apply(ctx, {"layout_hint": None})
    assert warnings(rec) == ["limits.pids not enforced: no pids controller here"]
    Group().revert(ctx, rec)
    monkeypatch.setattr(cg, "missing", missing)
    limits["optional"] = False
    with pytest.raises(ActionError, match=r"not enforced|Permission denied") as failed:
        Group().apply(ctx, {"layout_hint": None})
    # the way out that needs no root: the hint said only "run as root, or ask for a
    # delegated cgroup" (a review)
    assert "limits.optional: true" in (failed.value.hint or "")
    with pytest.raises(ActionError, match="cannot be enforced") as err:
        Limit().apply(ctx, {"limit": "memory", "value": 1 << 24})
    assert err.value.where == "cgroup.memory"
