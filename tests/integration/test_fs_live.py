"""fs.* ops on a LIVE environment: build its root by actions, add and remove a bind in place.

A stand-in for the runtime's init: a child that unshares mount, pid and ipc
namespaces and waits, as pid 1 of its pid namespace. The ops run helpers
that join it; everything is checked from the host through
/proc/PID/mountinfo and /proc/PID/root, which show the environment's view.
"""

from __future__ import annotations

import os
import signal
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_fs_harness import enter_userns, unshare

from vbdecl.errors import RuntimeSetupError
from vbdecl.ops import op_for
from vbdecl.ops.base import Context
from vbdecl.ops.fs import _in_env, _RemountJob, _UndoJob, mountinfo_of

CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWIPC = 0x20000, 0x20000000, 0x08000000


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Context]:
    yield from _env(tmp_path, userns=False)


@pytest.fixture
def userns_env(tmp_path: Path) -> Iterator[Context]:
    yield from _env(tmp_path, userns=True)


def _env(tmp_path: Path, userns: bool) -> Iterator[Context]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(r)
            if userns:
                enter_userns()
            unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC)
            from vbdecl.sys.ns import contain_mounts

            contain_mounts()
            init = os.fork()
            if init == 0:
                os.close(w)
                signal.pause()
                os._exit(0)
            os.write(w, str(init).encode())
            os.close(w)
            os.waitpid(init, 0)
        except BaseException:
            code = 1
        os._exit(code)
    os.close(w)
    init_pid = int(os.read(r, 32))
    os.close(r)
    ctx = Context(name="t", instance="vb-0000abcd", state_dir=str(tmp_path / "state"),
                  runtime_dir=str(tmp_path / "run"), env_pid=init_pid,
                  spec={"network": {"mode": "isolated"}})
    try:
        yield ctx
    finally:
        os.kill(init_pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def act(ctx: Context, kind: str, **params) -> dict:
    return op_for(kind).apply(ctx, params)


def mounts(ctx: Context) -> dict[str, dict]:
    return {mi["target"]: mi for mi in mountinfo_of(ctx) or []}


def test_live_root_built_by_actions(env: Context, tmp_path: Path) -> None:
    lower = tmp_path / "lower"
    lower.mkdir()
    (lower / "f").write_text("lower")
    upper, work = tmp_path / "upper", tmp_path / "work"
    root = f"/proc/{env.env_pid}/root"
    act(env, "fs.rootfs", rootfs=None)
    act(env, "fs.ro-bind", target="/usr", source="/usr", optional=False)
    act(env, "fs.symlink", target="/bin", points_to="usr/bin")
    act(env, "fs.proc", target="/proc")
    act(env, "fs.dev", target="/dev")
    act(env, "fs.mqueue", target="/dev/mqueue")
    act(env, "fs.tmpfs", target="/tmp", size=1 << 20, mode=0o1777)
    act(env, "fs.dir", target="/run/app", mode=0o700)
    act(env, "fs.file", target="/etc/motd", content="hi\n", source=None, mode=None)
    act(env, "fs.bind-data", target="/etc/token", content="tok", readonly=True, mode=None)
    act(env, "fs.overlay", target="/srv", lower=[str(lower)], upper=str(upper), work=str(work))
    act(env, "fs.net-files", dns=["192.0.2.53"], hosts={"db": "10.0.0.2"}, hostname="web")
    mi = mounts(env)
    assert mi["/"]["fstype"] == "tmpfs"
    assert {"ro", "nosuid", "nodev"} <= set(mi["/usr"]["opts"])
    assert mi["/proc"]["fstype"] == "proc" and mi["/dev/pts"]["fstype"] == "devpts"
    assert mi["/dev/mqueue"]["fstype"] == "mqueue" and mi["/srv"]["fstype"] == "overlay"
    assert "ro" in mi["/etc/token"]["opts"] and "ro" in mi["/etc/resolv.conf"]["opts"]
    assert sorted(os.listdir(root)) == ["bin", "dev", "etc", "proc", "run", "srv", "tmp", "usr"]
    assert os.readlink(f"{root}/bin") == "usr/bin"
    assert os.path.exists(f"{root}/bin/sh")
    assert Path(f"{root}/etc/motd").read_text() == "hi\n"
    assert Path(f"{root}/etc/token").read_text() == "tok"
    assert Path(f"{root}/etc/resolv.conf").read_text() == "nameserver 192.0.2.53\n"
    assert "10.0.0.2\tdb" in Path(f"{root}/etc/hosts").read_text()
    assert oct(os.stat(f"{root}/run/app").st_mode & 0o7777) == "0o700"
    # the proc instance belongs to the environment's pid namespace: its init is 1 there
    assert Path(f"{root}/proc/1/stat").exists()
    assert os.readlink(f"{root}/proc/1/ns/mnt") == os.readlink(f"/proc/{env.env_pid}/ns/mnt")
    # the overlay's upper is the host's
    Path(f"{root}/srv/new").write_text("x")
    assert (upper / "new").read_text() == "x"


def test_live_rootfs_directory_is_nodev(env: Context, tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    root.mkdir()
    os.mknod(root / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    act(env, "fs.rootfs", rootfs=str(root))
    assert "nodev" in mounts(env)["/"]["opts"]
    with pytest.raises(PermissionError):     # (its device node, through the environment's root)
        os.close(os.open(f"/proc/{env.env_pid}/root/null", os.O_WRONLY))


def test_live_environment_with_a_user_namespace(userns_env: Context, tmp_path: Path) -> None:
    env = userns_env
    root = f"/proc/{env.env_pid}/root"
    act(env, "fs.rootfs", rootfs=None)
    act(env, "fs.ro-bind", target="/usr", source="/usr", optional=False)
    act(env, "fs.proc", target="/proc")
    act(env, "fs.dev", target="/dev")
    act(env, "fs.tmp-overlay", target="/opt", lower=["/usr/share"])
    act(env, "fs.file", target="/etc/motd", content="hi\n", source=None, mode=None)
    mi = mounts(env)
    assert {"/", "/usr", "/proc", "/dev", "/dev/pts", "/opt"} <= set(mi)
    assert Path(f"{root}/etc/motd").read_text() == "hi\n"
    assert Path(f"{root}/proc/1/uid_map").read_text().split() == ["0", "0", "1"]


def test_live_bind_add_probe_and_revert(env: Context, tmp_path: Path) -> None:
    src = tmp_path / "data"
    src.mkdir()
    (src / "a").write_text("A")
    root = f"/proc/{env.env_pid}/root"
    act(env, "fs.rootfs", rootfs=None)
    op = op_for("fs.bind")
    params = {"target": "/mnt/data", "source": str(src), "optional": False}
    assert op.probe(env, params, None) is None
    record = op.apply(env, params)
    assert Path(f"{root}/mnt/data/a").read_text() == "A"
    assert {"nosuid", "nodev"} <= set(mounts(env)["/mnt/data"]["opts"])
    assert op.probe(env, params, record) == record
    assert op.probe(env, params, None) is not None
    op.revert(env, record)
    assert "/mnt/data" not in mounts(env)
    assert not os.path.exists(f"{root}/mnt")       # the mount points it created are gone
    assert op.probe(env, params, record) is None
    op.revert(env, record)                          # idempotent
    assert (src / "a").read_text() == "A"           # the host source is untouched


def test_live_file_bind_chmod_remount_and_reverts(env: Context, tmp_path: Path) -> None:
    host_file = tmp_path / "conf"
    host_file.write_text("conf")
    root = f"/proc/{env.env_pid}/root"
    act(env, "fs.rootfs", rootfs=None)
    rec_bind = act(env, "fs.ro-bind", target="/etc/conf", source=str(host_file), optional=False)
    assert Path(f"{root}/etc/conf").read_text() == "conf"
    rec_dir = act(env, "fs.dir", target="/data/x", mode=None)
    rec_chmod = act(env, "fs.chmod", target="/data", mode=0o700)
    assert oct(os.stat(f"{root}/data").st_mode & 0o7777) == "0o700"
    rec_ro = act(env, "fs.remount-ro", target="/data")
    assert "ro" in mounts(env)["/data"]["opts"]
    op_for("fs.remount-ro").revert(env, rec_ro)
    assert "/data" not in mounts(env)
    op_for("fs.chmod").revert(env, rec_chmod)
    assert oct(os.stat(f"{root}/data").st_mode & 0o7777) == "0o755"
    op_for("fs.dir").revert(env, rec_dir)
    assert not os.path.exists(f"{root}/data")
    op_for("fs.ro-bind").revert(env, rec_bind)
    assert not os.path.exists(f"{root}/etc")


def test_live_remount_ro_revert_leaves_a_read_only_mount_read_only(env: Context, tmp_path: Path) -> None:
    """A review: removing a remount-ro entry over a ro-bind made the bind writable (the
    revert cleared the read-only flag whatever it was before), and no probe saw it: the
    process could write the host's files. The revert now sets back what was there, and
    a read-only mount found writable is drift."""
    src = tmp_path / "src"
    src.mkdir()
    act(env, "fs.rootfs", rootfs=None)
    ro_params = {"target": "/ro", "source": str(src), "optional": False}
    rec_robind = act(env, "fs.ro-bind", **ro_params)
    rec_rw = act(env, "fs.bind", target="/rw", source=str(src), optional=False)
    remount = op_for("fs.remount-ro")
    rec_on_ro = remount.apply(env, {"target": "/ro"})
    rec_on_rw = remount.apply(env, {"target": "/rw"})
    assert (rec_on_ro["was_ro"], rec_on_rw["was_ro"]) == (True, False)
    assert "ro" in mounts(env)["/rw"]["opts"]
    remount.revert(env, rec_on_ro)
    remount.revert(env, rec_on_rw)
    assert "ro" in mounts(env)["/ro"]["opts"]
    assert "rw" in mounts(env)["/rw"]["opts"]
    # a record from before "was_ro": the manifest tells (a ro-bind there stays read-only)
    env.spec = {"filesystem": [{"type": "ro-bind", "target": "/ro", "source": str(src)}]}
    remount.revert(env, {k: v for k, v in rec_on_ro.items() if k != "was_ro"})
    assert "ro" in mounts(env)["/ro"]["opts"]

    robind = op_for("fs.ro-bind")
    assert rec_robind["ro"] is True and "ro" not in rec_rw
    assert robind.probe(env, ro_params, rec_robind) == rec_robind
    _in_env(env, _RemountJob("/ro", undo={"self_bound": False, "was_ro": False}))   # made writable
    assert "rw" in mounts(env)["/ro"]["opts"]
    assert robind.probe(env, ro_params, rec_robind) == {**rec_robind, "ro": False}


def test_live_an_optional_bind_whose_source_appears_is_drift(env: Context, tmp_path: Path) -> None:
    """A user review: an optional bind applied while its source was missing was never
    bound once the source appeared (plan and apply: "No changes", status "ok")."""
    src = tmp_path / "later"
    act(env, "fs.rootfs", rootfs=None)
    op = op_for("fs.bind")
    params = {"target": "/later", "source": str(src), "optional": True}
    record = op.apply(env, params)
    assert record["skipped"] is True and "/later" not in mounts(env)
    assert op.probe(env, params, record) == record
    src.mkdir()
    assert op.probe(env, params, record) == {**record, "skipped": False}

    from vbdecl.plan.diff import changes, state_of

    plan = {"name": "t", "actions": [{"id": "mount[/later]", "kind": "fs.bind", "params": params,
                                      "deps": [], "describe": ""}]}
    state = state_of(plan)
    state["resources"]["mount[/later]"]["record"] = record
    (drift, repair) = changes(plan, state, {"mount[/later]": {**record, "skipped": False}})
    assert drift.reason == "changed outside vbdecl: optional source missing -> there now"
    assert repair.symbol == "-/+"


@pytest.mark.parametrize("chmod_first", [False, True])
def test_live_a_dir_and_a_chmod_of_one_directory_leave_its_first_mode(
        env: Context, tmp_path: Path, chmod_first: bool) -> None:
    """A review: a dir entry with a mode and a chmod entry on one host directory each
    set back a mode that was the other's: removing one left the directory at 0755 (with
    the other still declared) and a destroy at 0700, where it was 0755 before vbdecl."""
    host = tmp_path / "host"
    (host / "sub").mkdir(parents=True)
    (host / "sub").chmod(0o755)
    act(env, "fs.rootfs", rootfs=None)
    env.records["mount[/data]"] = act(env, "fs.bind", target="/data", source=str(host), optional=False)
    steps = [("chmod[/data/sub]", "fs.chmod", {"target": "/data/sub", "mode": 0o750}),
             ("dir[/data/sub]", "fs.dir", {"target": "/data/sub", "mode": 0o700})]
    if not chmod_first:
        steps.reverse()
    for rid, kind, params in steps:
        env.records[rid] = op_for(kind).apply(env, params)
    last_mode = steps[1][2]["mode"]
    assert (host / "sub").stat().st_mode & 0o7777 == last_mode
    first_id, first_kind, _ = steps[0]
    op_for(first_kind).revert(env, env.records.pop(first_id))     # the other stays declared
    assert (host / "sub").stat().st_mode & 0o7777 == last_mode
    second_id, second_kind, _ = steps[1]
    op_for(second_kind).revert(env, env.records.pop(second_id))
    assert (host / "sub").stat().st_mode & 0o7777 == 0o755


def test_live_dir_symlink_chmod_change_in_place(env: Context) -> None:
    """A new mode or link target is set in place; what vbdecl created stays its own, so
    the reverts still remove it, and a chmod's revert restores the mode from before."""
    from vbdecl.errors import RuntimeSetupError

    root = f"/proc/{env.env_pid}/root"
    act(env, "fs.rootfs", rootfs=None)
    d, ln, ch = op_for("fs.dir"), op_for("fs.symlink"), op_for("fs.chmod")
    rec_dir = act(env, "fs.dir", target="/data/x", mode=0o700)
    Path(f"{root}/data/x/kept").write_text("the process's file")
    rec_dir = d.update(env, {"target": "/data/x", "mode": 0o750}, rec_dir)
    assert os.stat(f"{root}/data/x").st_mode & 0o7777 == 0o750
    assert Path(f"{root}/data/x/kept").exists()
    rec_dir = d.update(env, {"target": "/data/x", "mode": None}, rec_dir)
    assert os.stat(f"{root}/data/x").st_mode & 0o7777 == 0o755     # what a new one gets
    assert rec_dir["created"] == ["/data", "/data/x"]

    rec_ln = act(env, "fs.symlink", target="/etc/app/current", points_to="v1")
    rec_ln = ln.update(env, {"target": "/etc/app/current", "points_to": "v2"}, rec_ln)
    assert os.readlink(f"{root}/etc/app/current") == "v2"
    assert sorted(os.listdir(f"{root}/etc/app")) == ["current"]     # no temporary name left
    assert ln.probe(env, {"target": "/etc/app/current", "points_to": "v2"}, rec_ln) == rec_ln
    os.symlink("theirs", f"{root}/etc/app/other")
    theirs = act(env, "fs.symlink", target="/etc/app/other", points_to="theirs")
    assert theirs["created"] == []
    with pytest.raises(RuntimeSetupError, match="not a symlink to 'mine'"):
        ln.update(env, {"target": "/etc/app/other", "points_to": "mine"}, theirs)
    assert os.readlink(f"{root}/etc/app/other") == "theirs"
    os.unlink(f"{root}/etc/app/current")
    os.mkdir(f"{root}/etc/app/current")
    with pytest.raises(RuntimeSetupError, match="not a symlink"):
        ln.update(env, {"target": "/etc/app/current", "points_to": "v3"}, rec_ln)
    os.rmdir(f"{root}/etc/app/current")
    rec_ln = ln.update(env, {"target": "/etc/app/current", "points_to": "v3"}, rec_ln)
    assert os.readlink(f"{root}/etc/app/current") == "v3"

    rec_ch = act(env, "fs.chmod", target="/data", mode=0o700)
    rec_ch = ch.update(env, {"target": "/data", "mode": 0o711}, rec_ch)
    assert os.stat(f"{root}/data").st_mode & 0o7777 == 0o711
    ch.revert(env, rec_ch)
    assert os.stat(f"{root}/data").st_mode & 0o7777 == 0o755

    os.unlink(f"{root}/etc/app/other")
    ln.revert(env, rec_ln)
    assert not os.path.exists(f"{root}/etc/app")
    os.unlink(f"{root}/data/x/kept")
    d.revert(env, rec_dir)
    assert not os.path.exists(f"{root}/data")


def test_live_dir_and_chmod_modes_from_before_and_inside(env: Context) -> None:
    """Modes are set as given (not cut by vbdecl's umask); a dir entry on a directory
    that was there gives its mode back when the mode goes or the entry goes; a mount
    over a directory is not drift on its mode; chmod does not go through a link at
    its target, and its revert finds nothing to restore once the target is gone or
    a link is in its place."""
    root = f"/proc/{env.env_pid}/root"
    act(env, "fs.rootfs", rootfs=None)
    d, ch = op_for("fs.dir"), op_for("fs.chmod")
    old_umask = os.umask(0o077)
    try:
        sticky = act(env, "fs.dir", target="/shared", mode=0o1777)
    finally:
        os.umask(old_umask)
    assert os.stat(f"{root}/shared").st_mode & 0o7777 == 0o1777
    assert d.probe(env, {"target": "/shared", "mode": 0o1777}, sticky) == sticky

    os.mkdir(f"{root}/etc2", 0o751)
    os.chmod(f"{root}/etc2", 0o751)
    params = {"target": "/etc2", "mode": 0o700}
    rec = d.apply(env, params)
    assert (rec["created"], rec["old_mode"]) == ([], 0o751)
    rec = d.update(env, {"target": "/etc2", "mode": 0o710}, rec)
    assert os.stat(f"{root}/etc2").st_mode & 0o7777 == 0o710 and rec["old_mode"] == 0o751
    d.revert(env, rec)
    assert os.stat(f"{root}/etc2").st_mode & 0o7777 == 0o751       # there before: kept, mode back
    rec = d.apply(env, params)
    rec = d.update(env, {"target": "/etc2", "mode": None}, rec)
    assert os.stat(f"{root}/etc2").st_mode & 0o7777 == 0o751 and "old_mode" not in rec

    rec = d.apply(env, {"target": "/mnt/covered", "mode": 0o700})
    act(env, "fs.tmpfs", target="/mnt/covered", size=None, mode=0o755)
    assert d.probe(env, {"target": "/mnt/covered", "mode": 0o700}, rec) == rec

    os.symlink("/etc2", f"{root}/link")         # not through a link (docs/security.md)
    with pytest.raises(RuntimeSetupError, match=r"/link is a symlink \(to /etc2\); the entry does not"):
        ch.apply(env, {"target": "/link", "mode": 0o705})
    assert os.stat(f"{root}/etc2").st_mode & 0o7777 == 0o751
    rec_ch = ch.apply(env, {"target": "/etc2", "mode": 0o705})
    assert ch.probe(env, {"target": "/etc2", "mode": 0o705}, rec_ch) == rec_ch
    os.rmdir(f"{root}/etc2")
    os.symlink("/link", f"{root}/etc2")         # a link in its place: not followed either
    ch.revert(env, rec_ch)                      # nothing to restore: no error


def test_live_mounts_are_told_apart_and_found_where_they_are(env: Context, tmp_path: Path) -> None:
    """A mount put from inside in place of vbdecl's is drift (anything mounted at the
    target passed); a revert takes what was mounted over vbdecl's mount with it (it
    skipped or unmounted only the top one, and stacks grew); a mount is found where it
    was made, whatever a link in its target says later (it was "deleted" and made twice)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("A")
    root = f"/proc/{env.env_pid}/root"
    act(env, "fs.rootfs", rootfs=None)
    tmpfs, bind = op_for("fs.tmpfs"), op_for("fs.bind")
    p_tmpfs = {"target": "/data", "size": None, "mode": None}
    p_bind = {"target": "/data", "source": str(src), "optional": False}
    rec_tmpfs = env.records["mount[/data]"] = tmpfs.apply(env, p_tmpfs)
    rec_bind = env.records["mount[/data]#2"] = bind.apply(env, p_bind)
    assert rec_tmpfs["mount"] != rec_bind["mount"]
    assert tmpfs.probe(env, p_tmpfs, rec_tmpfs) == rec_tmpfs      # under the bind, still there
    tmpfs.revert(env, rec_tmpfs)
    assert "/data" not in mounts(env)                              # with what was over it
    del env.records["mount[/data]"], env.records["mount[/data]#2"]
    # from inside: a tmpfs mounted over vbdecl's bind, then the bind unmounted under it
    rec_bind = bind.apply(env, p_bind)
    tmpfs.apply(env, p_tmpfs)               # from inside, over it
    assert bind.probe(env, p_bind, rec_bind) == {**rec_bind, "mount": {**rec_bind["mount"], "covered_by": "tmpfs"}}
    _in_env(env, _UndoJob(["/data"], []))
    _in_env(env, _UndoJob(["/data"], []))
    tmpfs.apply(env, p_tmpfs)
    assert bind.probe(env, p_bind, rec_bind) is None
    old_record = {k: v for k, v in rec_bind.items() if k != "mount"}     # a state from before
    assert bind.probe(env, p_bind, old_record) == old_record
    bind.revert(env, rec_bind)                  # not there: the other tmpfs is left alone
    assert mounts(env)["/data"]["fstype"] == "tmpfs"
    _in_env(env, _UndoJob(["/data"], []))
    # through a link: made at /srv/v1/t; found there after the link points elsewhere
    os.makedirs(f"{root}/srv/v1")
    os.makedirs(f"{root}/srv/v2")
    os.symlink("srv/v1", f"{root}/cur")
    p_t = {"target": "/cur/t", "size": None, "mode": None}
    rec_t = tmpfs.apply(env, p_t)
    assert rec_t["mount"]["at"] == "/srv/v1/t"
    assert tmpfs.probe(env, p_t, rec_t) == rec_t
    os.unlink(f"{root}/cur")
    os.symlink("srv/v2", f"{root}/cur")
    assert tmpfs.probe(env, p_t, rec_t) == rec_t
    tmpfs.revert(env, rec_t)
    assert "/srv/v1/t" not in mounts(env)


def test_ops_without_a_live_environment_fail_clearly(tmp_path: Path) -> None:
    from vbdecl.errors import RuntimeSetupError

    ctx = Context(name="t", instance="vb-0000abcd", state_dir=str(tmp_path),
                  runtime_dir=str(tmp_path / "run"))
    with pytest.raises(RuntimeSetupError) as ei:
        act(ctx, "fs.tmpfs", target="/tmp", size=None, mode=None)
    assert "no live environment" in ei.value.message
    assert op_for("fs.tmpfs").probe(ctx, {"target": "/tmp"}, None) is None


def test_live_failure_removes_host_dirs_it_created(env: Context, tmp_path: Path) -> None:
    from vbdecl.errors import RuntimeSetupError

    act(env, "fs.rootfs", rootfs=None)
    state = tmp_path / "state-ov"
    with pytest.raises(RuntimeSetupError):
        act(env, "fs.overlay", target="/srv", lower=[str(tmp_path / "missing-lower")],
            upper=str(state / "up"), work=str(state / "work"))
    assert not state.exists()
    assert "/srv" not in mounts(env)


def test_live_interrupted_applies_are_judged_by_what_was_there(env: Context) -> None:
    """What an apply killed before its record was journaled made or changed, judged
    against what observe() saw before it ran: the directories on the way, a mount
    point without its mount, a directory made but not yet given its mode, a mode
    changed; a mount that was at the target before is not the apply's."""
    root = f"/proc/{env.env_pid}/root"
    act(env, "fs.rootfs", rootfs=None)
    d, tmpfs, ch = op_for("fs.dir"), op_for("fs.tmpfs"), op_for("fs.chmod")

    p_dir = {"target": "/a/b/c", "mode": 0o700}
    before = d.observe(env, p_dir)
    assert before == {"missing": ["/a", "/a/b", "/a/b/c"], "mode": None}
    assert d.recover(env, p_dir, before) is None                 # nothing made yet
    os.makedirs(f"{root}/a/b")                                    # killed on the way
    rec = d.recover(env, p_dir, before)
    assert rec is not None and rec["created"] == ["/a", "/a/b"]
    assert d.probe(env, p_dir, rec) is None                       # the entry's object is not there
    os.mkdir(f"{root}/a/b/c", 0o755)                             # made, its mode not set yet
    rec = d.recover(env, p_dir, before)
    assert rec is not None and rec["created"] == ["/a", "/a/b", "/a/b/c"]
    d.revert(env, rec)
    assert not os.path.exists(f"{root}/a")

    p_mnt = {"target": "/m/t", "size": None, "mode": None}
    before = tmpfs.observe(env, p_mnt)
    assert before == {"missing": ["/m", "/m/t"], "top": None}
    os.makedirs(f"{root}/m/t")                                    # the mount point, no mount
    rec = tmpfs.recover(env, p_mnt, before)
    assert rec is not None and rec["mount"] is None and rec["created"] == ["/m", "/m/t"]
    assert tmpfs.probe(env, p_mnt, rec) is None
    first = tmpfs.apply(env, p_mnt)                               # (mounts there: its own record)
    tmpfs.revert(env, rec)                                        # no mount of its own to take
    assert "/m/t" in mounts(env)
    tmpfs.revert(env, first)
    assert "/m/t" not in mounts(env)

    first = tmpfs.apply(env, p_mnt)
    before = tmpfs.observe(env, p_mnt)
    assert before == {"missing": [], "top": mounts(env)["/m/t"]["id"]}
    assert tmpfs.recover(env, p_mnt, before) is None              # the mount there was there before
    second = tmpfs.apply(env, p_mnt)
    rec = tmpfs.recover(env, p_mnt, before)
    assert rec is not None and rec["mount"] == second["mount"] != first["mount"]
    tmpfs.revert(env, rec)
    assert tmpfs.probe(env, p_mnt, first) == first
    tmpfs.revert(env, first)

    os.mkdir(f"{root}/etc3", 0o751)
    os.chmod(f"{root}/etc3", 0o751)
    p_ch = {"target": "/etc3", "mode": 0o700}
    before = ch.observe(env, p_ch)
    os.chmod(f"{root}/etc3", 0o700)                               # the chmod, not journaled
    rec = ch.recover(env, p_ch, before)
    assert rec is not None and rec["old_mode"] == 0o751
    ch.revert(env, rec)
    assert os.stat(f"{root}/etc3").st_mode & 0o7777 == 0o751
    before = d.observe(env, p_ch)
    os.chmod(f"{root}/etc3", 0o700)
    rec = d.recover(env, p_ch, before)
    assert rec is not None and (rec["created"], rec["old_mode"]) == ([], 0o751)
    d.revert(env, rec)
    assert os.stat(f"{root}/etc3").st_mode & 0o7777 == 0o751


def test_live_directories_on_the_way_stay_while_another_entry_needs_them(env: Context) -> None:
    """A directory one entry made on its way and another declares (or made too) stays
    until the last of them goes; a dir entry takes the directories others made on the
    way to it for its own, so it removes them when it goes last."""
    root = f"/proc/{env.env_pid}/root"
    act(env, "fs.rootfs", rootfs=None)
    f, d = op_for("fs.file"), op_for("fs.dir")
    rec_f = act(env, "fs.file", target="/x/y/f", content="1", mode=None)
    assert rec_f["created"] == ["/x", "/x/y", "/x/y/f"]
    env.records["file"] = rec_f
    rec_d = act(env, "fs.dir", target="/x/y", mode=None)
    assert (rec_d["created"], rec_d["adopted"]) == ([], ["/x", "/x/y"])    # the file entry made them
    env.records["dir"] = rec_d
    f.revert(env, rec_f)
    del env.records["file"]
    assert os.listdir(f"{root}/x/y") == []
    d.revert(env, rec_d)
    del env.records["dir"]
    assert not os.path.exists(f"{root}/x")


def test_live_ownership_of_shared_directories_edge_cases(env: Context) -> None:
    """A skipped optional bind owns and claims nothing (its directories stayed forever);
    a chmod of a directory another entry made takes it on, so it goes with the last of
    them (the chmod kept it forever); an interrupted create's record takes on what
    others made too."""
    root = f"/proc/{env.env_pid}/root"
    act(env, "fs.rootfs", rootfs=None)
    f, bind, ch, d = op_for("fs.file"), op_for("fs.bind"), op_for("fs.chmod"), op_for("fs.dir")
    env.records["file"] = rec_f = act(env, "fs.file", target="/e/app/conf", content="c", mode=None)
    env.records["bind"] = rec_b = act(env, "fs.bind", target="/e/app", source="/nonexistent-vbdecl",
                                      optional=True)
    assert rec_b["skipped"] and "adopted" not in rec_b
    f.revert(env, rec_f)
    del env.records["file"]
    assert not os.path.exists(f"{root}/e")
    bind.revert(env, rec_b)
    del env.records["bind"]

    env.records["dir"] = rec_d = act(env, "fs.dir", target="/a/b", mode=None)
    env.records["chmod"] = rec_c = act(env, "fs.chmod", target="/a", mode=0o700)
    assert rec_c["adopted"] == ["/a"]
    d.revert(env, rec_d)
    del env.records["dir"]
    assert os.listdir(f"{root}/a") == [] and os.stat(f"{root}/a").st_mode & 0o7777 == 0o700
    ch.revert(env, rec_c)
    del env.records["chmod"]
    assert not os.path.exists(f"{root}/a")

    os.mkdir(f"{root}/t")
    env.records["link"] = rec_l = act(env, "fs.symlink", target="/s/l", points_to="/t")
    rec_d = act(env, "fs.dir", target="/s", mode=None)
    rec_f = act(env, "fs.file", target="/s/l/f", content="x", mode=None)
    assert rec_d["adopted"] == rec_f["adopted"] == ["/s"]     # not the link: its entry's own
    op_for("fs.symlink").revert(env, rec_l)
    del env.records["link"]

    env.records["file"] = rec_f = act(env, "fs.file", target="/p/q/f", content="x", mode=None)
    p_dir = {"target": "/p/q", "mode": None}
    before = d.observe(env, p_dir)
    rec = d.recover(env, p_dir, before)
    assert rec is not None and (rec["created"], rec["adopted"]) == ([], ["/p", "/p/q"])
    f.revert(env, rec_f)
    del env.records["file"]
    assert not os.path.exists(f"{root}/p")


def test_live_a_shared_directory_loses_the_mode_of_the_entry_that_went(env: Context) -> None:
    """A dir entry's mode does not outlive the entry on a directory another entry
    still needs: it gets the mode it has when made on the way, as a fresh apply
    without the dir entry gives it; a chmod of it, still there, keeps its mode."""
    root = f"/proc/{env.env_pid}/root"
    act(env, "fs.rootfs", rootfs=None)
    d = op_for("fs.dir")
    env.records["dir"] = rec_d = act(env, "fs.dir", target="/a", mode=0o700)
    env.records["file"] = act(env, "fs.file", target="/a/b/f", content="x", mode=None)
    made_on_the_way = os.stat(f"{root}/a/b").st_mode & 0o7777
    d.revert(env, rec_d)
    del env.records["dir"]
    assert os.stat(f"{root}/a").st_mode & 0o7777 == made_on_the_way == 0o755

    # (ids as the planner gives them: the ops find the other entries setting a mode by them)
    env.records["file[/c/f]"] = act(env, "fs.file", target="/c/f", content="x", mode=None)
    env.records["dir[/c]"] = rec_d = act(env, "fs.dir", target="/c", mode=0o750)
    assert rec_d["adopted"] == ["/c"]
    env.records["chmod[/c]"] = act(env, "fs.chmod", target="/c", mode=0o711)
    d.revert(env, rec_d)
    del env.records["dir[/c]"]
    assert os.stat(f"{root}/c").st_mode & 0o7777 == 0o711


def test_live_a_file_edited_or_chmod_ed_inside_is_drift_its_update_repairs(env: Context, tmp_path: Path) -> None:
    """A day-2 review: a file entry's file rewritten and made world-writable inside the
    environment probed "ok" (only its existence was looked at). Its mode and content
    digest are recorded and read back; an update writes the file as declared again. A
    source file's pinned digest counts as its content; a chmod entry on the file owns
    its mode; a record from before these were kept sees no drift."""
    from vbdecl.hashing import sha256

    root = f"/proc/{env.env_pid}/root"
    f = op_for("fs.file")
    act(env, "fs.rootfs", rootfs=None)
    params = {"target": "/etc/app.conf", "content": "a=1\n", "mode": 0o640, "source": None}
    rec = f.apply(env, params)
    assert rec["mode"] == 0o640 and rec["content_sha256"] == sha256(b"a=1\n").hexdigest()
    assert rec["dev"] == os.stat(f"{root}/etc/app.conf").st_dev
    assert f.probe(env, params, rec) == rec
    Path(f"{root}/etc/app.conf").write_text("a=2\n")
    os.chmod(f"{root}/etc/app.conf", 0o666)
    seen = f.probe(env, params, rec)
    assert seen == {**rec, "mode": 0o666, "content_sha256": sha256(b"a=2\n").hexdigest()}
    old_style = {k: v for k, v in rec.items() if k not in ("mode", "content_sha256")}
    assert f.probe(env, params, old_style) == old_style
    # a record from before "dev" was kept: the device of the file vbdecl made (a review)
    no_dev = {k: v for k, v in rec.items() if k != "dev"}
    assert no_dev["file_id"] and f.probe(env, params, no_dev)["content_sha256"] == sha256(b"a=2\n").hexdigest()
    rec = f.update(env, params, rec)
    assert Path(f"{root}/etc/app.conf").read_text() == "a=1\n"
    assert os.stat(f"{root}/etc/app.conf").st_mode & 0o7777 == 0o640
    assert f.probe(env, params, rec) == rec
    # what a later entry mounts over the file (or a directory above it) is not the file
    # written: no drift (a review: a bind's host file was "repaired", a read-only one
    # failed the apply and its rollback for good)
    other = tmp_path / "hostf"
    other.write_text("hostdata\n")
    bound = act(env, "fs.ro-bind", target="/etc/app.conf", source=str(other), optional=False)
    assert f.probe(env, params, rec) == rec
    op_for("fs.ro-bind").revert(env, bound)
    over = act(env, "fs.tmpfs", target="/etc", size=None, mode=None)
    Path(f"{root}/etc/app.conf").write_text("another file\n")
    assert f.probe(env, params, rec) == rec
    op_for("fs.tmpfs").revert(env, over)
    assert f.probe(env, params, rec) == rec

    source = tmp_path / "src.conf"
    source.write_text("from the host\n")
    sparams = {"target": "/etc/src.conf", "content": None, "mode": None, "source": str(source),
               "source_sha256": sha256(b"from the host\n").hexdigest()}
    srec = f.apply(env, sparams)
    assert srec["mode"] == 0o644 and srec["content_sha256"] == sparams["source_sha256"]
    Path(f"{root}/etc/src.conf").write_text("edited\n")
    # (another size than written: changed, without reading it, see ops.fs._file_now)
    assert f.probe(env, sparams, srec)["content_sha256"] == "size:7"

    chmod = act(env, "fs.chmod", target="/etc/app.conf", mode=0o600)
    env.records = {"file[/etc/app.conf]": rec, "chmod[/etc/app.conf]": chmod}
    assert f.probe(env, params, rec) == rec          # (the chmod entry's mode, not drift)


def test_a_tmpfs_updated_in_place_is_the_one_recorded(env: Context) -> None:
    """A review of the in-place tmpfs update: it went by the mount id only (reused), so
    root inside could have vbdecl resize and chmod another filesystem bound there. It
    acts on the recorded device's mount only, else replaces the entry; a rollback that
    cannot shrink it back (the environment filled it) keeps the larger size, and says so."""
    act(env, "fs.rootfs", rootfs=None)
    tmpfs = op_for("fs.tmpfs")

    def size() -> int:
        st = os.statvfs(f"/proc/{env.env_pid}/root/t")
        return st.f_blocks * st.f_frsize

    small = {"target": "/t", "size": 1 << 20, "mode": None}
    large = {**small, "size": 4 << 20}
    record = tmpfs.apply(env, small)
    assert isinstance(record.get("dev"), int)
    kept = tmpfs.update(env, large, record)
    assert kept["mount"] == record["mount"] and size() == 4 << 20
    Path(f"/proc/{env.env_pid}/root/t/f").write_bytes(b"x" * (2 << 20))
    with pytest.raises(RuntimeSetupError, match="cannot change its size to 1Mi"):
        tmpfs.update(env, small, kept)
    env.restoring = True
    try:
        assert tmpfs.update(env, small, kept) == kept
        assert env.notes and "keeps its larger size" in env.notes[0], env.notes
    finally:
        env.restoring = False
        env.notes.clear()
    assert size() == 4 << 20
    # not the recorded filesystem: replaced, never reconfigured
    other = tmpfs.update(env, small, {**kept, "dev": kept["dev"] + 1})
    assert size() == 1 << 20       # (a new tmpfs, whose device number may be the freed one)
    assert not Path(f"/proc/{env.env_pid}/root/t/f").exists()
    tmpfs.revert(env, other)
