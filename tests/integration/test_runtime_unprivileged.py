"""An unprivileged user runs a sandbox through a user namespace (caller -> 0), as bubblewrap does.

The test creates a throw-away user with useradd and removes it afterwards;
the sandbox runs under the system Python (the venv lives under /root) with
vbdecl on PYTHONPATH: the run path needs only the standard library.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"

SPEC = {
    "rootfs": None, "hostname": "unpriv",
    "namespaces": {"user": False, "pid": True, "mount": True, "uts": True, "ipc": True,
                   "net": True, "cgroup": False},
    "idmap": None,
    "filesystem": [
        {"type": "ro-bind", "source": "/usr", "target": "/usr", "optional": False},
        {"type": "symlink", "target": "/bin", "points_to": "usr/bin"},
        {"type": "symlink", "target": "/lib", "points_to": "usr/lib"},
        {"type": "symlink", "target": "/lib64", "points_to": "usr/lib64"},
        {"type": "proc", "target": "/proc"},
        {"type": "dev", "target": "/dev"},
        {"type": "tmpfs", "target": "/tmp", "size": None, "mode": 0o1777},
    ],
    "limits": {"rlimits": {}}, "network": {"mode": "isolated"},
    "process": {"command": ["/bin/sh", "-c",
                            "id -u; id -g; cat /proc/self/uid_map; echo $$; hostname; ls /"],
                "cwd": "/", "env": {}, "clear_env": False, "unset_env": [], "argv0": None,
                "user": 0, "group": 0, "init": True, "die_with_parent": True,
                "new_session": False, "inherit_fds": [], "tty": "auto"},
    "security": {"no_new_privs": True, "capabilities": None, "seccomp": "default", "landlock": None,
                 "disable_userns": False},
    "status": {"lock_file": None, "events": None},
}

DRIVER = """
import json, sys
from vbdecl.runtime.spawn import run_spec
r = run_spec(json.load(open(sys.argv[1])))
if r.error is not None:
    print(f"error: {r.error}", file=sys.stderr)
sys.exit(r.code)
"""


@pytest.fixture
def user() -> Iterator[tuple[str, int, int]]:
    if not shutil.which("useradd") or not os.path.exists(SYSTEM_PYTHON):
        pytest.skip("needs useradd and the system python3")
    name = "vbt" + os.urandom(3).hex()
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    try:
        out = subprocess.run(["id", "-u", name], capture_output=True, text=True, check=True).stdout
        gid = subprocess.run(["id", "-g", name], capture_output=True, text=True, check=True).stdout
        yield name, int(out), int(gid)
    finally:
        subprocess.run(["userdel", name], check=False)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="unpriv-", dir="/var/tmp"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def run_as(user: tuple[str, int, int], d: Path, spec: dict[str, object]) -> subprocess.CompletedProcess[str]:
    (d / "spec.json").write_text(json.dumps(spec))
    (d / "driver.py").write_text(DRIVER)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1",
           "HOME": str(d)}
    _, uid, gid = user
    return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                           SYSTEM_PYTHON, str(d / "driver.py"), str(d / "spec.json")],
                          capture_output=True, text=True, env=env, timeout=60)


def test_unprivileged_user_runs_a_sandbox(user: tuple[str, int, int], shared_dir: Path) -> None:
    r = run_as(user, shared_dir, SPEC)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("\n")
    assert lines[0] == "0" and lines[1] == "0"                    # root inside
    assert lines[2].split() == ["0", str(user[1]), "1"]          # caller -> 0
    assert lines[3] == "2"                                       # pid 2 under vbdecl's init
    assert lines[4] == "unpriv"
    assert set(lines[5:]) >= {"bin", "dev", "proc", "tmp", "usr"}


def test_unprivileged_features_needing_root_fail_clearly(user: tuple[str, int, int],
                                                        shared_dir: Path) -> None:
    spec = json.loads(json.dumps(SPEC))
    spec["idmap"] = {"uid": [{"inside": 0, "outside": 0, "count": 1}],
                     "gid": [{"inside": 0, "outside": 0, "count": 1}]}
    r = run_as(user, shared_dir, spec)
    assert r.returncode == 125
    assert "newuidmap" in r.stderr     # mapping someone else's id needs the setuid helper


PLAN_DRIVER = """
import json, sys
from vbdecl.runtime.spawn import run_plan
r = run_plan(json.load(open(sys.argv[1])))
if r.error is not None:
    print(f"error: {r.error}", file=sys.stderr)
for e in r.events:
    if e["event"] == "runtime_init_warnings":
        print(json.dumps(e["warnings"]), file=sys.stderr)
sys.exit(r.code)
"""


@pytest.mark.parametrize("optional", [True, False])
def test_unprivileged_limits_optional_runs_without_a_cgroup(user: tuple[str, int, int],
                                                            shared_dir: Path, optional: bool) -> None:
    """cgroups are not delegated to a plain user: limits.optional turns that into
    warnings and the sandbox runs; without it the run fails before it starts."""
    from testmanifests import head

    from vbdecl.plan.compile import compile_file

    manifest = shared_dir / "m.yaml"
    manifest.write_text(head("optlim", template=False)
                        + f"  limits: {{pids: 64, optional: {str(optional).lower()}}}\n"
                        + "  process: {command: [/bin/echo, hi]}\n")
    (shared_dir / "plan.json").write_text(json.dumps(compile_file(str(manifest))[0]))
    (shared_dir / "driver.py").write_text(PLAN_DRIVER)
    _, uid, gid = user
    r = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", SYSTEM_PYTHON,
                        str(shared_dir / "driver.py"), str(shared_dir / "plan.json")],
                       capture_output=True, text=True, timeout=60,
                       env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO),
                            "PYTHONDONTWRITEBYTECODE": "1", "HOME": str(shared_dir)})
    if optional:
        assert (r.returncode, r.stdout) == (0, "hi\n"), r.stderr
        assert "not enforced" in r.stderr
    else:
        assert r.returncode == 125 and "error: " in r.stderr and "hi" not in r.stdout, r.stderr


@pytest.mark.parametrize("read_only", [False, True], ids=["rw", "remount-ro"])
def test_unprivileged_run_leaves_a_bound_directory_as_it_found_it(user: tuple[str, int, int],
                                                                 shared_dir: Path, read_only: bool) -> None:
    """What the root made through a bind is undone from inside the run's user and
    mount namespaces, which the caller owns (runtime/undo.py), also when a later
    remount-ro made the bind read-only (the undo failed with EROFS)."""
    data = shared_dir / "data"
    data.mkdir()
    data.chmod(0o751)
    os.chown(data, user[1], user[2])
    spec = json.loads(json.dumps(SPEC))
    spec["filesystem"] += [
        {"type": "bind", "source": str(data), "target": "/data", "optional": False},
        {"type": "dir", "target": "/data/sub/deeper", "mode": None},
        {"type": "file", "target": "/data/f", "content": "x", "mode": None, "fd": None, "source": None},
        {"type": "tmpfs", "target": "/data/t", "size": None, "mode": None},
        {"type": "chmod", "target": "/data", "mode": 0o700},
    ]
    if read_only:
        spec["filesystem"].append({"type": "remount-ro", "target": "/data"})
    spec["process"]["command"] = ["/bin/sh", "-c", "ls /data/sub /data/t >/dev/null && "
                                  f"{'! ' if read_only else ''}echo out 2>/dev/null > /data/out"]
    r = run_as(user, shared_dir, spec)
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    assert sorted(p.name for p in data.iterdir()) == ([] if read_only else ["out"])
    assert data.stat().st_mode & 0o7777 == 0o751
    # a file entry over a file the host has: refused before it is touched (a review: it
    # was overwritten, and its mode changed, for good)
    keep = data / "keep"
    keep.write_text("mine\n")
    keep.chmod(0o644)
    spec["filesystem"][-4 if read_only else -3]["target"] = "/data/keep"
    r = run_as(user, shared_dir, spec)
    assert r.returncode == 125 and "file /data/keep: a file of the host's is there" in r.stderr, r.stderr
    assert keep.read_text() == "mine\n" and keep.stat().st_mode & 0o7777 == 0o644
    assert sorted(p.name for p in data.iterdir()) == (["keep"] if read_only else ["keep", "out"])


UNPIN_DRIVER = """
import os, sys
from vbdecl.ops.env import Namespaces
from vbdecl.sys.ns import pin, unpin
print(Namespaces().preflight({}))
target = os.path.join(sys.argv[1], "user")
try:
    pin(os.getpid(), "user", target)
except OSError as exc:
    print("pin failed:", exc.errno)
unpin(target)
print("left:", os.path.exists(target))
"""


def test_an_unprivileged_apply_stops_before_any_step_and_leaves_no_pin_file(
        user: tuple[str, int, int], shared_dir: Path) -> None:
    """An unprivileged review: apply failed at its first step (pinning a namespace is a
    bind mount on the host), the cleanup's EPERM from umount2 hid why, and the pin's
    file stayed. The env action's preflight says so before any step (plan too), and
    unpin removes the file of a pin that never was."""
    (shared_dir / "unpin.py").write_text(UNPIN_DRIVER)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1",
           "HOME": str(shared_dir)}
    _, uid, gid = user
    run_dir = shared_dir / "run"        # (the user's, as a state directory would be)
    run_dir.mkdir()
    os.chown(run_dir, uid, gid)
    r = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", SYSTEM_PYTHON,
                        str(shared_dir / "unpin.py"), str(run_dir)],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("a live environment needs root (CAP_SYS_ADMIN over this mount namespace)"), lines
    assert lines[1] == "pin failed: 1" and lines[2] == "left: False", lines
    from vbdecl.ops.env import Namespaces

    assert Namespaces().preflight({}) is None       # (root, here)
    # root of a user namespace may not (`unshare -rm` got half-way, to a setns EPERM: a
    # review), under `unshare -r` (the host's mount namespace) neither; the host's root in
    # mounts a child user namespace owns may (a review: it was refused)
    probe = "from vbdecl.ops.env import Namespaces; print(Namespaces().preflight({}))"
    holder = subprocess.Popen(["unshare", "-U", "-r", "-m", "--propagation", "private", "sleep", "60"])
    try:
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{holder.pid}/ns/user") == os.readlink("/proc/self/ns/user"):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        for argv, allowed in ((["unshare", "-r"], False), (["unshare", "-rm"], False),
                              (["nsenter", "-t", str(holder.pid), "-m"], True)):
            r = subprocess.run([*argv, SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True,
                               env={**env, "HOME": "/"}, timeout=60)
            assert r.returncode == 0, r.stderr
            assert (r.stdout == "None\n") is allowed, (argv, r.stdout)
    finally:
        holder.kill()
        holder.wait()


def test_a_state_directory_the_user_may_not_read_is_a_clean_error(user: tuple[str, int, int],
                                                                 shared_dir: Path) -> None:
    """Another user's state directory (made by root, envs/ 0700): ls, recover, history
    and logs failed with "unexpected PermissionError ... this is a bug in vbdecl" and a
    crash log, destroy said the environment does not exist (a review). Each now says what
    it cannot read, and what to do."""
    import sys

    vbdecl = str(Path(sys.executable).parent / "vbdecl")
    state = shared_dir / "state"
    (state / "envs" / "x").mkdir(parents=True)
    (state / "envs").chmod(0o700)
    (shared_dir / "m.yaml").write_text(
        "apiVersion: vbdecl/v1\nkind: Environment\nmetadata: {name: x}\nspec: {}\n")
    _, uid, gid = user
    (shared_dir / "tmp").mkdir()
    os.chown(shared_dir / "tmp", uid, gid)     # (where a crash log would go: not the host's /tmp)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(shared_dir), "TMPDIR": str(shared_dir / "tmp"),
           "VBDECL_CACHE_DIR": str(shared_dir / "cache")}
    for args in (["ls"], ["recover"], ["history", "x"], ["logs", "x"], ["destroy", "-y", "x"],
                 ["status", "x"], ["apply", "-y", str(shared_dir / "m.yaml")]):
        r = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                            vbdecl, "--state-dir", str(state), *args],
                           capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 1, (args, r.stderr)
        assert f"error: cannot access {state}/envs" in r.stderr \
            or f"error: cannot read {state}/envs" in r.stderr, (args, r.stderr)
        assert ": Permission denied\n  hint: it belongs to root: run vbdecl as root (sudo)" in r.stderr, \
            (args, r.stderr)
        assert "this is a bug" not in r.stderr and "does not exist" not in r.stderr, (args, r.stderr)
    # exec reads the state itself (no json on its path): the same hint (a user's review)
    r = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                        vbdecl, "--state-dir", str(state), "exec", "x", "--", "true"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 125 and "cannot read the state of x: Permission denied" in r.stderr, r.stderr
    assert "hint: it belongs to root: run vbdecl as root (sudo)" in r.stderr, r.stderr
    assert not list((shared_dir / "tmp").glob("vbdecl-crash-*"))


def test_an_unprivileged_bridge_run_leaves_no_network_state(user: tuple[str, int, int],
                                                            shared_dir: Path) -> None:
    """An unprivileged review: a run in bridge mode failed as it should (CAP_NET_ADMIN),
    and left its instance (a dead pid) and the state files in the state directory. A
    failed join forgets an instance that holds nothing, and no files stay."""
    import sys

    vbdecl = str(Path(sys.executable).parent / "vbdecl")
    state = shared_dir / "state"
    name = "vbt" + os.urandom(3).hex()
    (shared_dir / "m.yaml").write_text(
        "apiVersion: vbdecl/v1\nkind: Environment\nmetadata: {name: b}\nspec:\n"
        f"  network: {{mode: bridge, bridge: {name}, subnet: 10.235.{os.urandom(1)[0] & 0xFE}.0/24}}\n"
        "  filesystem: [{type: ro-bind, source: /usr, target: /usr}]\n  process: {command: [/usr/bin/true]}\n")
    _, uid, gid = user
    state.mkdir()
    os.chown(state, uid, gid)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(shared_dir), "VBDECL_CACHE_DIR": str(state / "cache")}
    r = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                        vbdecl, "--state-dir", str(state), "run", str(shared_dir / "m.yaml")],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 125 and "needs CAP_NET_ADMIN" in r.stderr, r.stderr
    assert sorted(p.name for p in state.iterdir() if p.name != "cache") == [], sorted(state.iterdir())
    # a state directory the user may not write: said so (it was a bare PermissionError)
    theirs = shared_dir / "theirs"
    theirs.mkdir()
    r = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                        vbdecl, "--state-dir", str(theirs / "state"), "run", str(shared_dir / "m.yaml")],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 125, r.stderr
    assert f"cannot write {theirs}/state: Permission denied" in r.stderr, r.stderr
    assert "hint: it belongs to root: run vbdecl as root (sudo)" in r.stderr, r.stderr


def _subordinate(name: str, path: str) -> int:
    """The first id of ``name``'s range in /etc/subuid or /etc/subgid (useradd made it)."""
    for line in Path(path).read_text().splitlines():
        who, start, _count = line.split(":")
        if who == name:
            return int(start)
    pytest.skip(f"useradd gave {name} no range in {path}")


def test_a_source_root_inside_may_not_read_names_the_host_uid_it_runs_as(
        user: tuple[str, int, int], shared_dir: Path) -> None:
    """A user's review: with spec.idmap mapping 0 to a subordinate uid, a bind of the
    user's own file in a 0700 directory failed with "check the path's permissions and
    whether you run as root": the setup opens sources as root of the user namespace,
    which is that subordinate uid on the host. The hint says so now."""
    name, uid, gid = user
    sub_uid, sub_gid = _subordinate(name, "/etc/subuid"), _subordinate(name, "/etc/subgid")
    private = shared_dir / "private"
    private.mkdir(mode=0o700)
    (private / "secret").write_text("mine\n")
    os.chown(private, uid, gid)
    os.chown(private / "secret", uid, gid)
    spec = json.loads(json.dumps(SPEC))
    spec["idmap"] = {"uid": [{"inside": 0, "outside": sub_uid, "count": 65536}],
                     "gid": [{"inside": 0, "outside": sub_gid, "count": 65536}]}
    spec["filesystem"].append({"type": "ro-bind", "source": str(private / "secret"), "target": "/s",
                               "optional": False})
    spec["process"]["command"] = ["/bin/cat", "/s"]
    r = run_as(user, shared_dir, spec)
    assert r.returncode == 125, r.stdout + r.stderr
    assert f"opens host sources as host uid {sub_uid}" in r.stderr, r.stderr
    # mapped to the user's own uid, the same bind works
    spec["idmap"]["uid"][0] = {"inside": 0, "outside": uid, "count": 1}
    spec["idmap"]["gid"][0] = {"inside": 0, "outside": gid, "count": 1}
    r = run_as(user, shared_dir, spec)
    assert (r.returncode, r.stdout) == (0, "mine\n"), r.stderr


def test_a_process_user_a_run_without_root_cannot_map_is_said_at_its_key(
        user: tuple[str, int, int], shared_dir: Path) -> None:
    """A user's review: process.user 1000 with no spec.idmap failed in the sandbox's setup
    with `setresgid(1000, 1000, 1000): Invalid argument`; a run without root maps only the
    caller's ids (to 0 inside). It is said at the manifest's key, before any setup."""
    import sys

    vbdecl = str(Path(sys.executable).parent / "vbdecl")
    m = shared_dir / "pu.yaml"
    m.write_text("apiVersion: vbdecl/v1\nkind: Environment\nmetadata: {name: pu}\nspec:\n"
                 "  filesystem:\n    - {type: ro-bind, source: /usr, target: /usr}\n"
                 "  process:\n    command: [/usr/bin/id]\n    user: 1000\n    group: 1000\n")
    _, uid, gid = user
    env = {"PATH": "/usr/bin:/bin", "HOME": str(shared_dir), "VBDECL_CACHE_DIR": str(shared_dir / "cache")}
    r = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", vbdecl,
                        "--state-dir", str(shared_dir / "state"), "run", str(m)],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 125, r.stdout + r.stderr
    assert r.stderr.startswith(f"error: {m}:9:11: process.user 1000 and process.group 1000: a run without "
                               "root maps only your own uid and gid, as 0 inside"), r.stderr
    assert "spec.idmap" in r.stderr and "setresgid" not in r.stderr, r.stderr
