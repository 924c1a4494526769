"""The root as a whole: pivot, staging invisible, nothing left on the host, fallbacks, speed."""

from __future__ import annotations

import errno
import os
import stat
import statistics
from pathlib import Path

import pytest
from test_fs_harness import SandboxError, base_spec, in_sandbox, mountinfo

from vbdecl.plan.ids import fs_action_ids as action_ids
from vbdecl.sys import mount as m

HELLO = [
    {"type": "ro-bind", "source": "/usr", "target": "/usr", "optional": False},
    {"type": "symlink", "target": "/bin", "points_to": "usr/bin"},
    {"type": "symlink", "target": "/lib", "points_to": "usr/lib"},
    {"type": "symlink", "target": "/lib64", "points_to": "usr/lib64"},
    {"type": "proc", "target": "/proc"},
    {"type": "dev", "target": "/dev"},
    {"type": "tmpfs", "target": "/tmp", "size": None, "mode": None},
]


def _probe_root():
    mi = mountinfo()
    return {"mounts": sorted(mi), "ls": sorted(os.listdir("/")), "cwd": os.getcwd(),
            "root": mi["/"], "sh": os.access("/bin/sh", os.X_OK)}


def test_hello_root_is_clean_and_setup_is_fast(capsys: pytest.CaptureFixture[str]) -> None:
    times = []
    r = None
    for _ in range(7):
        stats: dict = {}
        r = in_sandbox(base_spec(HELLO), _probe_root, pidns=True, stats=stats)
        times.append(stats["setup_s"])
        assert stats["leaked_fds"] == []
    assert r is not None
    assert r["ls"] == ["bin", "dev", "etc", "lib", "lib64", "proc", "tmp", "usr"]   # (etc: resolv.conf)
    assert r["cwd"] == "/" and r["sh"]
    assert r["root"]["fstype"] == "tmpfs" and "shared" not in " ".join(r["root"]["opts"])
    for mp in r["mounts"]:
        assert not any(w in mp for w in ("oldroot", "newroot", "stage")), mp
    assert r["mounts"][:2] == ["/", "/dev"]
    med = statistics.median(times)
    with capsys.disabled():
        print(f"\nsetup_root(hello): median {med * 1000:.2f} ms over {len(times)} runs")
    assert med < 0.1


def test_nothing_left_on_host(tmp_path: Path) -> None:
    before = sorted(os.listdir("/tmp"))
    rundir = tmp_path / "run"
    spec = base_spec([*HELLO,
                      {"type": "bind-data", "target": "/etc/x", "content": "x", "readonly": True,
                       "mode": None},
                      {"type": "tmp-overlay", "target": "/opt", "lower": ["/usr/share"]}],
                     network={"mode": "bridge", "dns": ["192.0.2.1"], "hosts": {"a": "10.0.0.1"}})
    stats: dict = {}
    in_sandbox(spec, lambda: None, stats=stats)
    assert stats["leaked_fds"] == []
    with pytest.raises(SandboxError):  # a failure half way through
        in_sandbox(base_spec([*HELLO, {"type": "bind", "source": str(tmp_path / "missing"),
                                       "target": "/m", "optional": False}]), lambda: None)
    assert sorted(os.listdir("/tmp")) == before
    assert not rundir.exists()


def test_failure_removes_overlay_dirs_it_created(tmp_path: Path) -> None:
    lower = tmp_path / "lower"
    lower.mkdir()
    state = tmp_path / "state"
    spec = base_spec([
        {"type": "overlay", "target": "/srv", "lower": [str(lower)],
         "upper": str(state / "up"), "work": str(state / "work")},
        {"type": "bind", "source": str(tmp_path / "missing"), "target": "/m", "optional": False},
    ])
    with pytest.raises(SandboxError) as ei:
        in_sandbox(spec, lambda: None)
    assert ei.value.where == "mount[/m]"
    assert not state.exists()


def test_a_file_bound_onto_a_directory_says_so() -> None:
    """Not move_mount's EINVAL: the target exists as a directory, the source is a file."""
    spec = base_spec([{"type": "dir", "target": "/a"},
                      {"type": "ro-bind", "source": "/etc/hostname", "target": "/a", "optional": False}])
    with pytest.raises(SandboxError) as ei:
        in_sandbox(spec, lambda: None)
    assert ei.value.where == "mount[/a]"
    assert "ro-bind /etc/hostname -> /a: Is a directory (EISDIR)" in ei.value.message


def test_host_directory_as_rootfs(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "os-release").write_text("ID=tiny\n")
    spec = base_spec([{"type": "ro-bind", "source": "/usr", "target": "/usr", "optional": False},
                      {"type": "file", "target": "/etc/motd", "content": "hi\n", "source": None,
                       "mode": None}], rootfs=str(root))

    def probe():
        return {"rel": Path("/etc/os-release").read_text(), "ls": sorted(os.listdir("/")),
                "root": mountinfo()["/"]["root"]}

    r = in_sandbox(spec, probe)
    assert r["rel"] == "ID=tiny\n" and r["ls"] == ["etc", "usr"]
    assert r["root"].endswith("/rootfs")
    assert (root / "etc" / "motd").read_text() == "hi\n"  # files land in the given root
    assert (root / "usr").is_dir() and not os.listdir(root / "usr")


def test_a_rootfs_directory_is_nodev(tmp_path: Path) -> None:
    """Root inside may mknod in a host directory it runs on: the root mount is nodev, so
    such a node opens nothing (a review made /dev/kmsg's there, and wrote the host's log)."""
    root = tmp_path / "rootfs"
    root.mkdir()
    os.mknod(root / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))

    def probe():
        try:
            os.close(os.open("/null", os.O_WRONLY))
            opened = "opened"
        except OSError as exc:
            opened = errno.errorcode[exc.errno]
        return {"opts": mountinfo()["/"]["opts"], "opened": opened}

    r = in_sandbox(base_spec([], rootfs=str(root)), probe)
    assert "nodev" in r["opts"] and "nosuid" not in r["opts"]
    assert r["opened"] == "EACCES"


def test_a_read_only_rootfs_without_resolv_conf_goes_without_the_hosts(tmp_path: Path) -> None:
    """The host's resolv.conf is bound in every mode now (dns left out); a review: a
    rootfs directory that is read-only and has no /etc/resolv.conf to mount on failed
    to start where it ran before. It goes without the file."""
    from vbdecl.sys import mount as m

    root = tmp_path / "rootfs"
    root.mkdir()

    def read_only() -> None:     # (in the sandbox's own mount namespace)
        m.mount(str(root), str(root), None, m.MS_BIND)
        m.mount(None, str(root), None, m.MS_REMOUNT | m.MS_BIND | m.MS_RDONLY)

    r = in_sandbox(base_spec([], rootfs=str(root)), lambda: os.path.exists("/etc"), before=read_only)
    assert r is False


def test_bind_onto_root_then_more_entries(tmp_path: Path) -> None:
    src = tmp_path / "asroot"
    src.mkdir()
    spec = base_spec([{"type": "bind", "source": str(src), "target": "/", "optional": False},
                      {"type": "dir", "target": "/made", "mode": None},
                      {"type": "tmpfs", "target": "/t", "size": None, "mode": None}])
    r = in_sandbox(spec, lambda: sorted(os.listdir("/")))
    assert r == ["etc", "made", "t"]        # (etc: the host's resolv.conf)
    assert sorted(os.listdir(src)) == ["etc", "made", "t"]


def test_fallback_when_root_is_not_a_mount_point(tmp_path: Path) -> None:
    box = tmp_path / "box"
    box.mkdir()

    def before() -> None:
        m.mount("tmpfs", str(box), "tmpfs", 0, "mode=0755")
        (box / "jail" / "tmp").mkdir(parents=True)
        os.chroot(str(box / "jail"))  # the process root is now not a mount point
        os.chdir("/")

    spec = base_spec([{"type": "file", "target": "/hello", "content": "hi", "source": None,
                       "mode": None},
                      {"type": "tmpfs", "target": "/t", "size": None, "mode": None}])

    def probe():
        mi = mountinfo()
        return {"hello": Path("/hello").read_text(), "ls": sorted(os.listdir("/")),
                "mounts": sorted(mi), "root": mi["/"]["fstype"]}

    r = in_sandbox(spec, probe, before=before)
    assert r["hello"] == "hi" and r["ls"] == ["hello", "t"]
    assert r["mounts"] == ["/", "/t"] and r["root"] == "tmpfs"


def test_action_ids_follow_the_plan_format() -> None:
    ids = action_ids([{"type": "bind", "target": "/a"}, {"type": "dir", "target": "/a"},
                      {"type": "tmpfs", "target": "/a"}, {"type": "bind-data", "target": "/b"},
                      {"type": "remount-ro", "target": "/a"}])
    assert ids == ["mount[/a]", "dir[/a]", "mount[/a]#2", "mount[/b]", "remount-ro[/a]"]


def test_every_kind_in_a_user_namespace(tmp_path: Path) -> None:
    """Rootless: inherited mounts are locked; binds, overlays (userxattr), proc, dev all work."""
    for d in ("l1", "l2"):
        (tmp_path / d).mkdir()
    (tmp_path / "l1" / "a").write_text("a")
    spec = base_spec([*HELLO,
                      {"type": "bind-data", "target": "/etc/x", "content": "x", "readonly": True,
                       "mode": None},
                      {"type": "tmp-overlay", "target": "/ov", "lower": [str(tmp_path / "l1")]},
                      {"type": "ro-overlay", "target": "/rov",
                       "lower": [str(tmp_path / "l1"), str(tmp_path / "l2")]},
                      {"type": "overlay", "target": "/pov", "lower": [str(tmp_path / "l1")],
                       "upper": str(tmp_path / "u"), "work": str(tmp_path / "w")},
                      {"type": "mqueue", "target": "/dev/mqueue"},
                      {"type": "remount-ro", "target": "/tmp"},
                      {"type": "file", "target": "/etc/f", "content": "f", "source": None,
                       "mode": None}],
                     network={"mode": "host", "dns": None, "hosts": {"a": "192.0.2.4"}})

    def probe():
        Path("/ov/b").write_text("b")
        Path("/pov/c").write_text("c")
        mi = mountinfo()
        return {"mounts": sorted(mi), "ov": sorted(os.listdir("/ov")), "pov": mi["/pov"]["super"],
                "uid_map": Path("/proc/self/uid_map").read_text().split(),
                "hosts": Path("/etc/hosts").read_text()}

    r = in_sandbox(spec, probe, pidns=True, userns=True)
    assert r["uid_map"] == ["0", "0", "1"]
    assert {"/", "/usr", "/proc", "/dev/pts", "/dev/mqueue", "/ov", "/rov", "/pov", "/etc/x",
            "/etc/hosts", "/tmp"} <= set(r["mounts"])
    assert r["ov"] == ["a", "b"] and "192.0.2.4\ta" in r["hosts"]
    assert os.listdir(tmp_path / "u") == ["c"]
    assert "userxattr" in r["pov"]


def test_dev_console_when_stdin_is_a_tty() -> None:
    import pty

    def before() -> None:
        _master, slave = pty.openpty()
        os.dup2(slave, 0)
        os.close(slave)

    def probe():
        mi = mountinfo()
        return {"console": "/dev/console" in mi, "chr": os.path.exists("/dev/console")
                and (os.stat("/dev/console").st_mode & 0o170000) == 0o020000}

    r = in_sandbox(base_spec([{"type": "dev", "target": "/dev"}]), probe, before=before)
    assert r == {"console": True, "chr": True}
    r = in_sandbox(base_spec([{"type": "dev", "target": "/dev"}]), probe,
                   before=lambda: os.dup2(os.open("/dev/null", os.O_RDONLY), 0))
    assert r == {"console": False, "chr": False}
