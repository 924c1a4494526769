"""The sandbox runtime: process options, exit codes, namespaces, events, lock file, soak.

Specs are built by hand in the normalized shape of docs/plan-format.md.
Without filesystem entries the sandbox's mount namespace is a private copy
of the host's, so the process can write results into tmp_path.
"""

from __future__ import annotations

import copy
import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from vbdecl.runtime.spawn import run_spec
from vbdecl.sys import ns as sysns

# The host's filesystem, bound into the new root: these tests run host programs and
# look at the host's files (a new mount namespace gets an empty root otherwise).
HOST_ROOT: list[dict[str, Any]] = [{"type": "dev-bind", "source": "/", "target": "/"}]

BASE: dict[str, Any] = {
    "rootfs": None, "hostname": None,
    "namespaces": {"user": False, "pid": True, "mount": True, "uts": True, "ipc": True,
                   "net": True, "cgroup": False},
    "idmap": None, "filesystem": HOST_ROOT,
    "limits": {"memory": None, "memory_swap": None, "cpu": None, "cpu_weight": None, "pids": None,
               "io_weight": None, "rlimits": {}, "optional": False},
    "network": {"mode": "isolated"},
    "process": {"command": ["/bin/true"], "cwd": "/", "env": {}, "clear_env": False, "unset_env": [],
                "argv0": None, "user": 0, "group": 0, "init": True, "die_with_parent": True,
                "new_session": False, "inherit_fds": [], "tty": "auto"},
    "security": {"no_new_privs": True, "capabilities": None, "seccomp": "off", "landlock": None,
                 "disable_userns": False},
    "status": {"lock_file": None, "events": None},
}

DRIVER = """
import json, sys
from vbdecl.runtime.spawn import run_spec
r = run_spec(json.load(open(sys.argv[1])), forward_signals=True)
if r.error is not None:
    print(f"error: {r.error}", file=sys.stderr)
sys.exit(r.code)
"""


def make_spec(command: list[str] | None = None, *, ns: dict[str, Any] | None = None,
              **kw: Any) -> dict[str, Any]:
    """BASE with ``command``, namespaces from ``ns``, process keys and top-level keys from kw."""
    spec = copy.deepcopy(BASE)
    if command is not None:
        spec["process"]["command"] = command
    spec["namespaces"].update(ns or {})
    for key, value in kw.items():
        if key in spec["process"]:
            spec["process"][key] = value
        else:
            spec[key] = value
    return spec


def sh(script: str, **kw: Any) -> dict[str, Any]:
    return make_spec(["/bin/sh", "-c", script], **kw)


def driver(tmp_path: Path, spec: dict[str, Any], name: str = "spec") -> list[str]:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(spec))
    drv = tmp_path / "driver.py"
    if not drv.exists():    # never rewrite it while another driver may be starting
        drv.write_text(DRIVER)
    return [sys.executable, str(drv), str(path)]


# --- exit status --------------------------------------------------------------

def test_exit_code_and_signal_status() -> None:
    assert run_spec(sh("exit 7")).code == 7
    assert run_spec(sh("kill -TERM $$")).code == 128 + 15
    assert run_spec(sh("exit 0")).code == 0


def test_exit_code_without_pid_namespace_and_init_false() -> None:
    assert run_spec(sh("exit 9", ns={"pid": False})).code == 9
    assert run_spec(sh("exit 11", init=False)).code == 11
    assert run_spec(sh("kill -KILL $$", ns={"pid": False})).code == 137


def test_127_not_found_126_not_executable_125_bad_cwd(tmp_path: Path) -> None:
    r = run_spec(make_spec(["no-such-command-vbdecl"]))
    assert r.code == 127 and r.error is not None
    assert "command not found: no-such-command-vbdecl" in r.error.message
    assert r.error.hint is not None and r.error.hint.endswith("or fix process.command")
    # (exited follows spawned, also for a command that could not be run)
    assert [(e["event"], e.get("exit_code")) for e in r.events] == [
        ("runtime_init_warnings", None), ("spawned", None), ("exited", 127)]
    noexec = tmp_path / "script"
    noexec.write_text("#!/bin/sh\necho hi\n")
    noexec.chmod(0o644)
    r = run_spec(make_spec([str(noexec)]))
    assert r.code == 126 and "cannot execute" in r.error.message  # type: ignore[union-attr]
    r = run_spec(make_spec(["/bin/true"], cwd="/no/such/dir"))
    assert r.code == 125 and "process.cwd" in r.error.message  # type: ignore[union-attr]


def test_init_false_runs_command_as_pid_1(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_spec(sh(f"echo $$ > {out}", init=False)).code == 0
    assert out.read_text().strip() == "1"
    assert run_spec(sh(f"echo $$ > {out}")).code == 0
    assert out.read_text().strip() == "2"   # pid 1 is vbdecl's init


# --- process options -------------------------------------------------------------

def test_env_clear_unset_argv0(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    monkeypatch.setenv("VBDECL_T_KEEP", "k")
    monkeypatch.setenv("VBDECL_T_DROP", "d")
    spec = sh(f'echo "$VBDECL_T_KEEP/${{VBDECL_T_DROP-unset}}/$A/$0" > {out}',
              env={"A": "a"}, unset_env=["VBDECL_T_DROP"], argv0="myname")
    spec["process"]["command"] = ["/bin/sh", "-c", spec["process"]["command"][2], "zero"]
    assert run_spec(spec).code == 0
    assert out.read_text().strip() == "k/unset/a/zero"
    spec = sh(f'env > {out}', clear_env=True, env={"ONLY": "1"})
    assert run_spec(spec).code == 0
    lines = set(out.read_text().split())
    assert "ONLY=1" in lines and not any(x.startswith("VBDECL_T_KEEP") for x in lines)
    # argv0 replaces argv[0] only: the file run is still command[0]
    py = make_spec([sys.executable, "-c", f"import sys; open({str(out)!r}, 'w').write(sys.argv[0])"],
                   argv0="renamed")
    assert run_spec(py).code == 0


def captured(spec: dict[str, Any]) -> tuple[int, str]:
    """Run ``spec`` with fd 3 a pipe (the script writes to >&3); return (code, output)."""
    r, w = os.pipe()
    try:
        spec["process"]["inherit_fds"] = [w]
        script = spec["process"]["command"][2].replace(">&3", f">&{w}")
        spec["process"]["command"] = ["/bin/bash", "-c", script]   # dash knows fds 0-9 only
        code = run_spec(spec).code
        os.close(w)
        w = -1
        out = b""
        while chunk := os.read(r, 65536):
            out += chunk
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    return code, out.decode()


def test_user_group_and_cwd() -> None:
    code, out = captured(sh("{ id -u; id -g; id -G; pwd; } >&3", user=1234, group=4321, cwd="/usr/bin"))
    assert code == 0
    assert out.split() == ["1234", "4321", "4321", "/usr/bin"]


def test_inherit_fds_and_all_other_fds_closed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    r, w = os.pipe()
    leak = os.open("/dev/null", os.O_RDONLY)   # inheritable, not listed: must be closed
    os.set_inheritable(leak, True)
    try:
        spec = make_spec(["/bin/bash", "-c", f"ls /proc/self/fd > {out}; echo through >&{w}"],
                         inherit_fds=[w])
        code = run_spec(spec).code
        os.close(w)
        data = os.read(r, 100)
    finally:
        os.close(r)
        os.close(leak)
    assert code == 0 and data == b"through\n"
    fds = {int(x) for x in out.read_text().split()}
    # ls's own fds: 0,1,2, w, and the directory it reads (one more)
    assert {0, 1, 2, w} <= fds and leak not in fds and len(fds) <= 5


def test_new_namespaces_differ_from_host(tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = run_spec(sh(f"for n in mnt pid_for_children net uts ipc; do stat -L -c %i /proc/self/ns/$n; done > {out}; "
                    f"hostname >> {out}; cat /sys/class/net/lo/operstate /sys/class/net/lo/flags >> {out}",
                    hostname="boxname", ns={"cgroup": True}))
    assert r.code == 0, r.error
    lines = out.read_text().split()
    host = [os.stat(f"/proc/self/ns/{n}").st_ino for n in ("mnt", "pid", "net", "uts", "ipc")]
    assert all(int(a) != b for a, b in zip(lines[:5], host, strict=True))
    assert lines[5] == "boxname"
    assert int(lines[7], 16) & 1   # lo is up (IFF_UP) in the new net namespace
    spawned = next(e for e in r.events if e["event"] == "spawned")
    assert spawned["ns"]["net"] == int(lines[2])
    assert spawned["ns"]["cgroup"] != os.stat("/proc/self/ns/cgroup").st_ino


@pytest.mark.parametrize("pid", [True, False], ids=["pid-ns", "no-pid-ns"])
def test_spawned_reports_every_new_namespace_every_time(pid: bool) -> None:
    # The cgroup namespace is made after "go", and a sandbox that exits at once
    # takes its namespaces with it: the parent reads them from the first child
    # while it waits for the second go (races lost now and then before).
    keys = ["mount", "net", "uts", "ipc", "cgroup"] + (["pid"] if pid else [])
    host = {k: os.stat(f"/proc/self/ns/{sysns.NAMESPACES[k][1]}").st_ino for k in keys}
    for _ in range(25):
        r = run_spec(sh("true", ns={"cgroup": True, "pid": pid}))
        assert r.code == 0, r.error
        spawned = next(e for e in r.events if e["event"] == "spawned")
        assert {k: spawned["ns"].get(k) not in (None, host[k]) for k in keys} == dict.fromkeys(keys, True)


def test_root_outside_the_initial_user_namespace_falls_back_to_a_holder(tmp_path: Path) -> None:
    # euid 0 of `unshare -r` may unshare a pid namespace but not setns() back into
    # its own, which the init user namespace owns: the run must take the holder path.
    if subprocess.run(["unshare", "-r", "true"], capture_output=True).returncode != 0:
        pytest.skip("user namespaces are not available here")
    code = (
        "import os, sys\n"
        "from vbdecl.runtime.spawn import run_spec\n"
        f"spec = {make_spec(['/bin/sh', '-c', 'exit 3'], ns={'uts': False, 'ipc': False, 'net': False})!r}\n"
        "r = run_spec(spec)\n"
        "own = os.stat('/proc/self/ns/pid_for_children').st_ino == os.stat('/proc/self/ns/pid').st_ino\n"
        "print(r.code, r.error, own)\n"
    )
    out = subprocess.run(["unshare", "-r", sys.executable, "-c", code], capture_output=True,
                         text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["3", "None", "True"], out.stdout + out.stderr


def test_join_namespace_by_path(tmp_path: Path) -> None:
    out = tmp_path / "out"
    holder = subprocess.Popen(["unshare", "--net", "--uts", "sleep", "30"])
    try:
        for _ in range(100):
            if os.stat(f"/proc/{holder.pid}/ns/net").st_ino != os.stat("/proc/self/ns/net").st_ino:
                break
            time.sleep(0.01)
        target = os.stat(f"/proc/{holder.pid}/ns/net").st_ino
        spec = sh(f"stat -L -c %i /proc/self/ns/net > {out}", ns={"net": {"join": f"/proc/{holder.pid}/ns/net"}})
        assert run_spec(spec).code == 0
        assert int(out.read_text()) == target
        bad = run_spec(sh("true", ns={"net": {"join": "/no/such/ns"}}))
        assert bad.code == 125 and "cannot open namespace net" in bad.error.message  # type: ignore[union-attr]
    finally:
        holder.kill()
        holder.wait()


def test_user_namespace_as_root_maps_ids() -> None:
    spec = sh("{ cat /proc/self/uid_map /proc/self/gid_map; id -u; stat -c %u /proc/self/ns; } >&3",
              ns={"user": True},
              idmap={"uid": [{"inside": 0, "outside": 100000, "count": 65536}],
                     "gid": [{"inside": 0, "outside": 100000, "count": 65536}]})
    code, out = captured(spec)
    assert code == 0
    words = out.split()
    assert words[:6] == ["0", "100000", "65536", "0", "100000", "65536"] and words[6] == "0"


# --- events ----------------------------------------------------------------------

def test_events_file_order_and_setup_finished_after_setup(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    stamp = tmp_path / "stamp"
    spec = make_spec([sys.executable, "-c", f"import time; open({str(stamp)!r}, 'w').write(repr(time.time()))"])
    spec["status"]["events"] = str(events)
    seen: list[dict[str, Any]] = []
    r = run_spec(spec, on_event=seen.append)
    assert r.code == 0
    lines = [json.loads(x) for x in events.read_text().splitlines()]
    assert [e["event"] for e in lines] == ["runtime_init_warnings", "spawned", "setup_finished", "exited"]
    assert lines == seen
    assert lines[3]["exit_code"] == 0 and lines[3]["pid"] == lines[1]["pid"]
    # the namespaces the sandbox has of its own (BASE: all but user and cgroup), as inodes
    assert set(lines[3]["ns"]) == {"pid", "mount", "net", "uts", "ipc"}
    assert lines[3]["ns"]["net"] != os.stat("/proc/self/ns/net").st_ino
    # setup_finished is emitted once the process was exec'd: not before setup completed.
    assert lines[2]["ts"] <= float(stamp.read_text()) + 0.05
    assert lines[1]["ts"] <= lines[2]["ts"] <= lines[3]["ts"]


def test_event_order_under_20_parallel_runs(tmp_path: Path) -> None:
    procs = []
    for i in range(20):
        spec = sh(f"exit {i % 5}")
        spec["status"]["events"] = str(tmp_path / f"ev{i}.jsonl")
        procs.append(subprocess.Popen(driver(tmp_path, spec, f"s{i}")))
    codes = [p.wait(timeout=60) for p in procs]
    assert codes == [i % 5 for i in range(20)]
    for i in range(20):
        evs = [json.loads(x) for x in (tmp_path / f"ev{i}.jsonl").read_text().splitlines()]
        assert [e["event"] for e in evs] == ["runtime_init_warnings", "spawned", "setup_finished", "exited"]
        assert evs[-1]["exit_code"] == i % 5


def test_event_fd_sink() -> None:
    r, w = os.pipe()
    try:
        assert run_spec(sh("true"), event_fds=[w]).code == 0
        os.close(w)
        w = -1
        data = os.read(r, 65536).decode()
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    assert [json.loads(x)["event"] for x in data.splitlines()] == [
        "runtime_init_warnings", "spawned", "setup_finished", "exited"]


# --- lock file -------------------------------------------------------------------------

def _locked(path: Path) -> bool:
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_lock_file_exclusive_and_released_when_process_dies(tmp_path: Path) -> None:
    lock = tmp_path / "env.lock"
    ready = tmp_path / "ready"
    spec = sh(f"touch {ready}; exec sleep 30")
    spec["status"]["lock_file"] = str(lock)
    holder = subprocess.Popen(driver(tmp_path, spec, "holder"))
    try:
        for _ in range(500):
            if ready.exists():
                break
            time.sleep(0.01)
        assert ready.exists() and _locked(lock)
        second = run_spec(sh("echo should-not-run", status={"lock_file": str(lock), "events": None}))
        assert second.code == 125 and second.error is not None
        assert "is held by another environment" in second.error.message
        assert [e["event"] for e in second.events] == []
    finally:
        holder.kill()          # die_with_parent takes the sandbox (and its copy of the lock) down
        holder.wait()
    for _ in range(200):
        if not _locked(lock):
            break
        time.sleep(0.01)
    assert not _locked(lock)
    third = run_spec(sh("true", status={"lock_file": str(lock), "events": None}))
    assert third.code == 0
    assert not _locked(lock)


# --- no leaks over many runs ------------------------------------------------------------------

def _count(path: str) -> int:
    return len(os.listdir(path))


def _run_in_jail(tmp_path: Path, argv: list[str], *, self_bind: bool) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` chrooted into a jail holding what the driver needs, in a mount
    namespace of its own; ``self_bind``: the jail is bind-mounted onto itself first
    (a mount point then), else it is a plain directory of a tmpfs."""
    import vbdecl

    jail = tmp_path / "box" / "jail"
    code = Path(vbdecl.__file__).resolve().parents[1]
    binds = ["/usr", "/proc", "/dev", str(code), sys.prefix, str(tmp_path)]
    script = ["set -e", f"mount -t tmpfs none {tmp_path / 'box'}", f"mkdir -p {jail}"]
    if self_bind:
        script.append(f"mount --bind {jail} {jail}")
    for src in binds:
        script += [f"mkdir -p {jail}{src}", f"mount --rbind {src} {jail}{src}"]
    script += [f"ln -s usr/{d} {jail}/{d}" for d in ("bin", "lib", "lib64")]
    script += ["exec chroot " + str(jail) + " " + " ".join(argv)]
    (tmp_path / "box").mkdir(exist_ok=True)
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                           "\n".join(script)], capture_output=True, text=True, timeout=60)


def test_runs_from_a_chroot_need_a_root_that_is_a_mount_point(tmp_path: Path) -> None:
    """From a chroot whose root is a plain directory, a new mount namespace cannot be
    made private (bubblewrap refuses too): a clear error, not a sandbox whose mounts
    could propagate. Bound onto itself, the same jail runs the sandbox (pid 1 forks
    the process before it builds the root, and pivot_root takes it along)."""
    spec = make_spec(["/bin/cat", "/hello"], filesystem=[
        {"type": "ro-bind", "source": "/usr", "target": "/usr", "optional": False},
        {"type": "symlink", "target": "/bin", "points_to": "usr/bin"},
        {"type": "symlink", "target": "/lib", "points_to": "usr/lib"},
        {"type": "symlink", "target": "/lib64", "points_to": "usr/lib64"},
        {"type": "file", "target": "/hello", "content": "hi from the new root\n", "source": None,
         "mode": None},
    ])
    argv = driver(tmp_path, spec)
    r = _run_in_jail(tmp_path, argv, self_bind=False)
    assert r.returncode == 125 and r.stdout == "", r.stderr
    assert "root is not a mount point" in r.stderr and "chroot" in r.stderr
    r = _run_in_jail(tmp_path, argv, self_bind=True)
    assert (r.returncode, r.stdout, r.stderr) == (0, "hi from the new root\n", ""), r.stderr


@pytest.mark.slow
def test_sequential_runs_leave_nothing_behind(tmp_path: Path) -> None:
    """VBDECL_SOAK_RUNS=500 for the full count; CI runs 60 (the leak guard checks the rest)."""
    runs = int(os.environ.get("VBDECL_SOAK_RUNS", "60"))
    state = tmp_path / "state"
    state.mkdir()
    spec = sh("true")
    spec["filesystem"] = [   # a built root: staging, pivot and detach on every run
        {"type": "ro-bind", "source": "/usr", "target": "/usr", "optional": False},
        {"type": "symlink", "target": "/bin", "points_to": "usr/bin"},
        {"type": "symlink", "target": "/lib", "points_to": "usr/lib"},
        {"type": "symlink", "target": "/lib64", "points_to": "usr/lib64"},
        {"type": "proc", "target": "/proc"},
        {"type": "dev", "target": "/dev"},
        {"type": "tmpfs", "target": "/tmp", "size": None, "mode": 0o1777},
    ]
    tmp_before = set(os.listdir("/tmp"))
    fds = _count("/proc/self/fd")
    mounts = Path("/proc/self/mountinfo").read_text()
    for i in range(runs):
        r = run_spec(spec, state_dir=str(state))
        assert r.code == 0, (i, r.error)
    assert _count("/proc/self/fd") == fds
    assert Path("/proc/self/mountinfo").read_text() == mounts
    # each run unshared a pid namespace for our children (direct init) and went back
    assert os.stat("/proc/self/ns/pid_for_children").st_ino == os.stat("/proc/self/ns/pid").st_ino
    assert not (state / "run").exists() or not os.listdir(state / "run")
    ours = {n for n in set(os.listdir("/tmp")) - tmp_before if "vb" in n or "stag" in n}
    assert ours == set()     # (other engineers' files may appear meanwhile)


def test_run_path_imports_nothing_heavy(tmp_path: Path) -> None:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(sh("true")))
    code = (
        "import json, sys\n"
        "from vbdecl.runtime.spawn import run_spec\n"
        f"r = run_spec(json.load(open({str(spec_file)!r})))\n"
        "assert r.code == 0, r\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    mods = set(json.loads(out))
    heavy = {m for m in mods if m.split(".")[0] in ("pydantic", "ruamel", "rich", "pyroute2", "typer", "click")}
    assert not heavy
    assert "argparse" not in mods and "vbdecl.cli.main" not in mods


def test_tty_true_needs_a_terminal_and_tty_false_detaches(tmp_path: Path) -> None:
    spec = make_spec(["/bin/true"], tty=True)
    proc = subprocess.run(driver(tmp_path, spec, "tty"), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 125 and "not a terminal" in proc.stderr
    check = "import os; assert os.getsid(0) == os.getpid()"
    assert run_spec(make_spec([sys.executable, "-c", check], tty=False)).code == 0
    assert run_spec(make_spec([sys.executable, "-c", check], tty="auto")).code != 0


def _fd_targets(pid: int) -> set[str]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return out


@pytest.mark.parametrize("user", [False, True], ids=["direct-init", "holder"])
def test_sandbox_processes_do_not_hold_the_callers_fds(user: bool) -> None:
    r, w = os.pipe()          # e.g. vb's --info-fd / --sync-fd: must close when vbdecl closes it
    pipe = os.readlink(f"/proc/self/fd/{w}")
    seen: dict[str, set[str]] = {}

    def on_event(event: dict[str, Any]) -> None:
        if event["event"] != "setup_finished":
            return
        init = event["pid"]
        holder = int(Path(f"/proc/{init}/stat").read_text().rsplit(")", 1)[1].split()[1])
        deadline = time.monotonic() + 2
        while pipe in _fd_targets(init) and time.monotonic() < deadline:
            time.sleep(0.01)
        seen["init"] = _fd_targets(init)
        # As root without a user namespace pid 1 is our own child: there is no holder.
        assert (holder == os.getpid()) is not user
        seen["holder"] = _fd_targets(holder) if user else set()

    try:
        assert run_spec(sh("sleep 0.5; ls -l /proc/$$/fd", ns={"user": user}),
                        on_event=on_event).code == 0
    finally:
        os.close(r)
        os.close(w)
    assert seen and pipe not in seen["init"] and pipe not in seen["holder"]


def test_a_new_mount_namespace_without_entries_gets_an_empty_root(tmp_path: Path) -> None:
    """rootfs null and no filesystem entries: a fresh empty root (MANIFEST.md), never the
    host's: the host's /bin/sh is not there, and nothing of the host can be written."""
    marker = tmp_path / "written"
    spec = make_spec(["/bin/sh", "-c", f"touch {marker}"], filesystem=[])
    result = run_spec(spec)
    assert result.code == 127 and "command not found: /bin/sh" in str(result.error), str(result.error)
    assert not marker.exists()
    # without a mount namespace there is no root of its own: the host's, as asked
    spec = make_spec(["/bin/sh", "-c", f"touch {marker}"], filesystem=[], ns={"mount": False})
    assert run_spec(spec).code == 0 and marker.exists()


def test_watching_the_caller_restores_the_death_signal_and_the_mask(tmp_path: Path) -> None:
    """run_spec(caller=...) arms PR_SET_PDEATHSIG for the run only: the death signal and the
    signal mask the caller had come back, and nothing is left pending. (In a process of
    its own: forwarding signals takes them with sigwaitinfo in one thread, and a test
    runner's worker has others.)"""
    check = tmp_path / "check.py"
    check.write_text(f"""
import json, os, sys
from vbdecl.runtime.spawn import run_spec
from vbdecl.sys import proc as sysproc
from vbdecl.sys import signals
spec = json.loads({json.dumps(json.dumps(make_spec(["/bin/true"])))})
before = signals.pthread_sigmask(signals.SIG_BLOCK, set())
sysproc.set_death_signal(signals.SIGUSR2)
result = run_spec(spec, forward_signals=True, caller=os.getppid())
print(result.code, result.error, sysproc.death_signal() == signals.SIGUSR2,
      signals.pthread_sigmask(signals.SIG_BLOCK, set()) == before, not signals.sigpending())
""")
    r = subprocess.run([sys.executable, str(check)], capture_output=True, text=True, timeout=60)
    assert r.stdout.split() == ["0", "None", "True", "True", "True"], r.stdout + r.stderr
