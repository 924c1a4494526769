"""One test per filesystem operation, checked from inside the new root.

Each test builds a root in a forked child's private mount namespace (see
test_fs_harness) and inspects it from inside: mountinfo flags, modes, contents.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
from test_fs_harness import CLONE_NEWNS, SandboxError, base_spec, in_sandbox, mountinfo

from vbdecl.sys import mount as m


def bind(kind: str, source: str, target: str, optional: bool = False) -> dict:
    return {"type": kind, "source": source, "target": target, "optional": optional}


def writable(path: str) -> bool | str:
    try:
        with open(path, "w") as f:
            f.write("x")
        return True
    except OSError as exc:
        return errno.errorcode[exc.errno or 0]


def test_bind_dir_rw_hardened(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("hello")

    def probe():
        mi = mountinfo()["/data"]
        return {"a": Path("/data/a").read_text(), "opts": mi["opts"], "w": writable("/data/new")}

    r = in_sandbox(base_spec([bind("bind", str(src), "/data")]), probe)
    assert r["a"] == "hello"
    assert {"rw", "nosuid", "nodev"} <= set(r["opts"])
    assert r["w"] is True
    assert (src / "new").read_text() == "x"  # the write went to the host source


def test_bind_file_source_gets_file_mountpoint(tmp_path: Path) -> None:
    src = tmp_path / "hostname"
    src.write_text("box\n")

    def probe():
        st = os.stat("/etc/thing")
        return {"text": Path("/etc/thing").read_text(), "reg": stat.S_ISREG(st.st_mode),
                "mounted": "/etc/thing" in mountinfo(),
                "ro": "ro" in mountinfo()["/etc/thing"]["opts"], "w": writable("/etc/thing")}

    r = in_sandbox(base_spec([bind("ro-bind", str(src), "/etc/thing")]), probe)
    assert r == {"text": "box\n", "reg": True, "mounted": True, "ro": True, "w": "EROFS"}
    assert src.read_text() == "box\n"


def test_ro_bind_is_recursively_read_only(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)

    def before() -> None:
        # A submount of the source, in the child's namespace only.
        m.mount("tmpfs", str(src / "sub"), "tmpfs", 0, "mode=0755")

    def probe():
        mi = mountinfo()
        return {"top": mi["/ro"]["opts"], "sub": mi["/ro/sub"]["opts"],
                "w_top": writable("/ro/x"), "w_sub": writable("/ro/sub/x")}

    r = in_sandbox(base_spec([bind("ro-bind", str(src), "/ro")]), probe, before=before)
    assert {"ro", "nosuid", "nodev"} <= set(r["top"])
    assert {"ro", "nosuid", "nodev"} <= set(r["sub"])
    assert r["w_top"] == "EROFS" and r["w_sub"] == "EROFS"


def test_dev_bind_keeps_devices() -> None:
    def probe():
        return {"opts": mountinfo()["/null"]["opts"], "w": writable("/null"),
                "chr": stat.S_ISCHR(os.stat("/null").st_mode)}

    r = in_sandbox(base_spec([bind("dev-bind", "/dev/null", "/null")]), probe)
    assert "nodev" not in r["opts"] and "nosuid" in r["opts"]
    assert r["w"] is True and r["chr"] is True


def test_bind_of_a_bind_fd(tmp_path: Path) -> None:
    src = tmp_path / "viafd"
    src.mkdir()
    (src / "f").write_text("fd!")
    fd = os.open(src, os.O_PATH | os.O_DIRECTORY)
    try:
        r = in_sandbox(base_spec([{"type": "ro-bind", "fd": fd, "target": "/viafd",
                                   "optional": False}]),
                       lambda: Path("/viafd/f").read_text())
    finally:
        os.close(fd)
    assert r == "fd!"


def test_optional_bind_skipped_and_missing_source_fails(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    r = in_sandbox(base_spec([bind("bind", missing, "/x", optional=True)]),
                   lambda: os.path.exists("/x"))
    assert r is False
    with pytest.raises(SandboxError) as ei:
        in_sandbox(base_spec([bind("bind", missing, "/x")]), lambda: None)
    assert ei.value.where == "mount[/x]"
    assert "set optional: true" in ei.value.message


def test_proc() -> None:
    def probe():
        mi = mountinfo()["/proc"]
        return {"fstype": mi["fstype"], "opts": mi["opts"], "self": os.path.isdir("/proc/self/fd")}

    r = in_sandbox(base_spec([{"type": "proc", "target": "/proc"}]), probe, pidns=True)
    assert r["fstype"] == "proc"
    assert {"nosuid", "nodev", "noexec"} <= set(r["opts"])
    assert r["self"]


def test_proc_in_pid_namespace_shows_pid_1() -> None:
    r = in_sandbox(base_spec([{"type": "proc", "target": "/proc"}]),
                   lambda: (os.getpid(), os.readlink("/proc/self")), pidns=True)
    assert r == [1, "1"]


def test_minimal_dev() -> None:
    def probe():
        mi = mountinfo()
        st = {n: oct(os.lstat(f"/dev/{n}").st_mode) for n in sorted(os.listdir("/dev"))}
        links = {n: os.readlink(f"/dev/{n}") for n in ("fd", "stdin", "stdout", "stderr", "ptmx",
                                                        "core")}
        return {"st": st, "links": links, "dev": mi["/dev"], "pts": mi["/dev/pts"],
                "shm": mi["/dev/shm"], "null": mi["/dev/null"]["opts"], "w": writable("/dev/null"),
                "zero": open("/dev/zero", "rb").read(4).hex()}

    r = in_sandbox(base_spec([{"type": "dev", "target": "/dev"}]), probe)
    assert set(r["st"]) >= {"null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "fd",
                            "stdin", "stdout", "stderr", "ptmx"}
    assert r["links"] == {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
                          "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2",
                          "ptmx": "pts/ptmx", "core": "/proc/kcore"}
    assert r["dev"]["fstype"] == "tmpfs" and "mode=755" in r["dev"]["super"]
    assert {"nosuid", "nodev"} <= set(r["dev"]["opts"])
    assert r["pts"]["fstype"] == "devpts"
    assert {"mode=620", "ptmxmode=666"} <= set(r["pts"]["super"])
    assert r["shm"]["fstype"] == "tmpfs" and r["st"]["shm"] == oct(0o41777)
    assert "nodev" not in r["null"] and r["w"] is True
    assert r["zero"] == "00000000"


def test_mqueue() -> None:
    r = in_sandbox(base_spec([{"type": "mqueue", "target": "/dev/mqueue"}]),
                   lambda: mountinfo()["/dev/mqueue"]["fstype"])
    assert r == "mqueue"


def test_tmpfs_size_and_mode() -> None:
    def probe():
        mi = mountinfo()
        return {"t": mi["/t"]["super"], "d": mi["/d"]["super"], "opts": mi["/t"]["opts"],
                "mode_t": oct(os.stat("/t").st_mode & 0o7777),
                "mode_d": oct(os.stat("/d").st_mode & 0o7777)}

    r = in_sandbox(base_spec([
        {"type": "tmpfs", "target": "/t", "size": 1 << 20, "mode": 0o1777},
        {"type": "tmpfs", "target": "/d", "size": None, "mode": None},
    ]), probe)
    assert "size=1024k" in r["t"] and r["mode_t"] == "0o1777"
    assert r["mode_d"] == "0o755"  # bubblewrap's default
    assert {"nosuid", "nodev"} <= set(r["opts"])


def test_dir_mode_and_parents() -> None:
    def probe():
        return {p: oct(os.stat(p).st_mode & 0o7777) for p in ("/run", "/run/app", "/tmp")}

    r = in_sandbox(base_spec([
        {"type": "dir", "target": "/run/app", "mode": 0o700},
        {"type": "tmpfs", "target": "/tmp", "size": None, "mode": None},
        {"type": "dir", "target": "/tmp", "mode": 0o1777},  # existing: gets the mode
    ]), probe)
    assert r == {"/run": "0o755", "/run/app": "0o700", "/tmp": "0o1777"}


def test_file_content_source_fd_and_modes(tmp_path: Path) -> None:
    host = tmp_path / "app.conf"
    host.write_text("from host\n")
    before = host.stat()
    r_fd, w_fd = os.pipe()
    os.write(w_fd, b"from fd\n")
    os.close(w_fd)

    def probe():
        return {p: [Path(p).read_text(), oct(os.stat(p).st_mode & 0o7777)]
                for p in ("/etc/motd", "/etc/app.conf", "/etc/viafd", "/etc/secret")}

    try:
        r = in_sandbox(base_spec([
            {"type": "file", "target": "/etc/motd", "content": "hello\n", "source": None,
             "mode": None},
            {"type": "file", "target": "/etc/app.conf", "content": None, "source": str(host),
             "mode": 0o640},
            {"type": "file", "target": "/etc/viafd", "fd": r_fd, "content": None, "source": None,
             "mode": None},
            {"type": "file", "target": "/etc/secret", "content": "s", "source": None, "mode": 0o600},
        ]), probe)
    finally:
        os.close(r_fd)
    assert r == {"/etc/motd": ["hello\n", "0o644"], "/etc/app.conf": ["from host\n", "0o640"],
                 "/etc/viafd": ["from fd\n", "0o644"], "/etc/secret": ["s", "0o600"]}
    after = host.stat()
    assert (after.st_mtime_ns, after.st_mode) == (before.st_mtime_ns, before.st_mode)


def test_bind_data_readonly_and_rw() -> None:
    def probe():
        mi = mountinfo()
        return {"text": Path("/etc/token").read_text(), "ro": "ro" in mi["/etc/token"]["opts"],
                "mode": oct(os.stat("/etc/token").st_mode & 0o7777), "w_ro": writable("/etc/token"),
                "w_rw": writable("/etc/rw"), "rw": Path("/etc/rw").read_text(),
                "mode_rw": oct(os.stat("/etc/rw").st_mode & 0o7777)}

    r = in_sandbox(base_spec([
        {"type": "bind-data", "target": "/etc/token", "content": "s3cret\n", "readonly": True,
         "mode": None},
        {"type": "bind-data", "target": "/etc/rw", "content": "abc", "readonly": False,
         "mode": 0o644},
    ]), probe)
    assert r["text"] == "s3cret\n" and r["ro"] and r["w_ro"] == "EROFS"
    assert r["mode"] == "0o600"  # bubblewrap's default
    assert r["w_rw"] is True and r["rw"] == "x" and r["mode_rw"] == "0o644"


def test_symlink_independent_of_cwd_and_idempotent(tmp_path: Path) -> None:
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()

    def probe():
        return {"bin": os.readlink("/bin"), "sh": os.path.exists("/bin/sh"),
                "deep": os.readlink("/a/b/c")}

    spec = base_spec([
        bind("ro-bind", "/usr", "/usr"),
        {"type": "symlink", "target": "/bin", "points_to": "usr/bin"},
        {"type": "symlink", "target": "/bin", "points_to": "usr/bin"},  # same again: fine
        {"type": "symlink", "target": "/a/b/c", "points_to": "/x"},
    ])
    r = in_sandbox(spec, probe, before=lambda: os.chdir(elsewhere))
    assert r == {"bin": "usr/bin", "sh": True, "deep": "/x"}
    assert os.listdir(elsewhere) == []
    with pytest.raises(SandboxError) as ei:
        in_sandbox(base_spec([{"type": "symlink", "target": "/l", "points_to": "a"},
                              {"type": "symlink", "target": "/l", "points_to": "b"}]), lambda: None)
    assert ei.value.where == "symlink[/l]#2"


def test_chmod() -> None:
    r = in_sandbox(base_spec([
        {"type": "dir", "target": "/data", "mode": None},
        {"type": "chmod", "target": "/data", "mode": 0o700},
        {"type": "file", "target": "/f", "content": "", "source": None, "mode": None},
        {"type": "chmod", "target": "/f", "mode": 0o4711},
    ]), lambda: [oct(os.stat(p).st_mode & 0o7777) for p in ("/data", "/f")])
    assert r == ["0o700", "0o4711"]


def test_remount_ro_keeps_other_flags() -> None:
    def probe():
        mi = mountinfo()
        return {"t": mi["/t"]["opts"], "sub": mi["/t/sub"]["opts"], "w": writable("/t/x"),
                "w_sub": writable("/t/sub/x"), "d": mi["/d"]["opts"], "w_d": writable("/d/x")}

    r = in_sandbox(base_spec([
        {"type": "tmpfs", "target": "/t", "size": None, "mode": None},
        {"type": "tmpfs", "target": "/t/sub", "size": None, "mode": None},
        {"type": "remount-ro", "target": "/t"},
        {"type": "dir", "target": "/d", "mode": None},  # not a mount point: bound onto itself
        {"type": "remount-ro", "target": "/d"},
    ]), probe)
    assert {"ro", "nosuid", "nodev"} <= set(r["t"]) and r["w"] == "EROFS"
    assert "rw" in r["sub"] and r["w_sub"] is True  # not recursive, as bubblewrap
    assert "ro" in r["d"] and r["w_d"] == "EROFS"


def test_overlay_upper_persists_on_host(tmp_path: Path) -> None:
    lower = tmp_path / "lower"
    lower.mkdir()
    (lower / "base").write_text("lower")
    upper, work = tmp_path / "state" / "upper", tmp_path / "state" / "work"

    def probe():
        Path("/srv/new").write_text("written inside")
        Path("/srv/base").write_text("changed")
        return {"fstype": mountinfo()["/srv"]["fstype"], "ls": sorted(os.listdir("/srv"))}

    r = in_sandbox(base_spec([{"type": "overlay", "target": "/srv", "lower": [str(lower)],
                               "upper": str(upper), "work": str(work)}]), probe)
    assert r == {"fstype": "overlay", "ls": ["base", "new"]}
    assert (upper / "new").read_text() == "written inside"
    assert (upper / "base").read_text() == "changed"
    assert (lower / "base").read_text() == "lower"
    # a second environment sees the persisted upper
    r2 = in_sandbox(base_spec([{"type": "overlay", "target": "/srv", "lower": [str(lower)],
                                "upper": str(upper), "work": str(work)}]),
                    lambda: Path("/srv/new").read_text())
    assert r2 == "written inside"


def test_tmp_overlay_leaves_lower_untouched(tmp_path: Path) -> None:
    lower = tmp_path / "src"
    lower.mkdir()
    (lower / "f").write_text("orig")

    def probe():
        Path("/src/f").write_text("scratch")
        Path("/src/g").write_text("new")
        return {"f": Path("/src/f").read_text(), "fstype": mountinfo()["/src"]["fstype"],
                "mounts": sorted(mountinfo())}

    r = in_sandbox(base_spec([{"type": "tmp-overlay", "target": "/src", "lower": [str(lower)]}]),
                   probe)
    assert r["f"] == "scratch" and r["fstype"] == "overlay"
    assert r["mounts"] == ["/", "/etc/resolv.conf", "/src"]
    assert sorted(os.listdir(lower)) == ["f"] and (lower / "f").read_text() == "orig"


@pytest.mark.parametrize("n", [1, 2, 3])
def test_ro_overlay(tmp_path: Path, n: int) -> None:
    lowers = []
    for i in range(n):
        d = tmp_path / f"l{i}"
        d.mkdir()
        (d / f"only{i}").write_text(str(i))
        (d / "common").write_text(f"layer {i}")
        lowers.append(str(d))

    def probe():
        return {"ls": sorted(os.listdir("/opt")), "common": Path("/opt/common").read_text(),
                "w": writable("/opt/x"), "ro": "ro" in mountinfo()["/opt"]["opts"]}

    r = in_sandbox(base_spec([{"type": "ro-overlay", "target": "/opt", "lower": lowers}]), probe)
    assert r["ls"] == sorted(["common"] + [f"only{i}" for i in range(n)])
    assert r["common"] == "layer 0"  # the first lower is the top one
    assert r["w"] == "EROFS" and r["ro"]


def test_net_files_dns_and_hosts() -> None:
    def probe():
        mi = mountinfo()
        return {"resolv": Path("/etc/resolv.conf").read_text(), "hosts": Path("/etc/hosts").read_text(),
                "ro": "ro" in mi["/etc/resolv.conf"]["opts"] and "ro" in mi["/etc/hosts"]["opts"]}

    spec = base_spec([], hostname="web",
                     network={"mode": "bridge", "dns": ["192.0.2.53"], "hosts": {"db": "10.88.0.20"}})
    r = in_sandbox(spec, probe)
    assert r["resolv"] == "nameserver 192.0.2.53\n"
    assert "127.0.0.1\tlocalhost" in r["hosts"] and "10.88.0.20\tdb\n" in r["hosts"]
    assert "127.0.1.1\tweb\n" in r["hosts"]
    assert r["ro"]


def test_net_files_host_resolv_conf_read_only_and_host_untouched() -> None:
    if not os.path.exists("/etc/resolv.conf"):
        pytest.skip("host has no /etc/resolv.conf")
    host = Path("/etc/resolv.conf")
    before = (host.read_bytes(), os.lstat(host).st_mtime_ns, os.path.islink(host))

    def probe():
        return {"text": Path("/etc/resolv.conf").read_text(),
                "ro": "ro" in mountinfo()["/etc/resolv.conf"]["opts"],
                "w": writable("/etc/resolv.conf")}

    r = in_sandbox(base_spec([bind("ro-bind", "/usr", "/usr")],
                             network={"mode": "host", "dns": None, "hosts": {}}), probe)
    assert r["text"] == host.read_text() and r["ro"] and r["w"] == "EROFS"
    assert (host.read_bytes(), os.lstat(host).st_mtime_ns, os.path.islink(host)) == before
    # isolated without dns: the host's too (MANIFEST.md); dns: [] is none at all
    r2 = in_sandbox(base_spec([]), probe)
    assert r2["text"] == host.read_text() and r2["ro"]
    r3 = in_sandbox(base_spec([], network={"mode": "isolated", "dns": [], "hosts": {}}),
                    lambda: os.path.exists("/etc"))
    assert r3 is False


def test_helpers_smoke() -> None:
    assert CLONE_NEWNS == 0x20000


def test_vb_proc_host_bind_and_cover_and_dev_shm_dir() -> None:
    """Keys the vb front end adds: proc.host (bind the host's /proc), proc.cover, dev.shm=dir."""
    host_init = Path("/proc/1/stat").read_text().split()[1]

    def probe():
        mi = mountinfo()
        return {"init": Path("/proc/1/stat").read_text().split()[1],
                "irq": mi.get("/proc/irq", {}).get("opts", []),
                "shm_mounted": "/dev/shm" in mi,
                "shm_mode": oct(os.stat("/dev/shm").st_mode & 0o7777)}

    r = in_sandbox(base_spec([
        {"type": "proc", "target": "/proc", "host": True, "cover": ["sys", "irq", "bus"]},
        {"type": "dev", "target": "/dev", "shm": "dir"},
    ]), probe)
    assert r["init"] == host_init          # the host's /proc, bound
    assert "ro" in r["irq"]
    assert r["shm_mounted"] is False and r["shm_mode"] == "0o755"


@pytest.mark.parametrize("refuse", ["fd", "fd+lowerdir+"])
def test_overlay_fallbacks_for_older_kernels(tmp_path: Path, refuse: str) -> None:
    """Without layer fds (< 6.13) and without lowerdir+ (< 6.8): paths, escaped."""
    lowers = []
    for name in ("a:1", "b,2"):
        d = tmp_path / name
        d.mkdir()
        (d / name[0]).write_text(name)
        lowers.append(str(d))

    def before() -> None:
        from vbdecl.errors import SysError

        real = m.new_mount

        def old_kernel(fstype, options, attr_flags=0, source=None):
            if fstype == "overlay":
                for key, value in options:
                    if key == "lowerdir+" and (isinstance(value, int) or refuse == "fd+lowerdir+"):
                        raise SysError("fsconfig: Invalid argument (EINVAL)", errno=errno.EINVAL)
            return real(fstype, options, attr_flags, source)

        m.new_mount = old_kernel

    def probe():
        Path("/rw/new").write_text("n")
        return {"ro": sorted(os.listdir("/ro")), "rw": sorted(os.listdir("/rw"))}

    r = in_sandbox(base_spec([
        {"type": "ro-overlay", "target": "/ro", "lower": lowers},
        {"type": "overlay", "target": "/rw", "lower": lowers[:1], "upper": str(tmp_path / "u"),
         "work": str(tmp_path / "w")},
    ]), probe, before=before)
    assert r == {"ro": ["a", "b"], "rw": ["a", "new"]}
    assert os.listdir(tmp_path / "u") == ["new"]
