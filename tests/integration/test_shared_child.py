"""The sandbox's first child in vbdecl's own memory (vbdecl/sys/_sharedchild.c).

`vb` and `vbdecl run` start it with clone(CLONE_VM) where the parent has nothing
to do until the process starts: the child runs Python as if it were the parent's
thread while the parent waits. These tests hold the conditions that makes safe:
the parent's interpreter is intact after many such runs (failed ones too), the
child is used exactly where it may be, pid 1's compiled loop reaps and forwards,
and a child killed inside Python makes vbdecl stop instead of going on.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_pid1 import BASE

from vbdecl.sys import _linux

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not _linux.SHARED_CHILD, reason="no shared child on this architecture"),
]

VB = str(Path(sys.executable).with_name("vb"))
ROOT = ["--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
        "--symlink", "usr/bin", "/bin"]
KCMP = {"x86_64": 312, "aarch64": 272}
KCMP_VM = 1


def shares_memory_with(a: int, b: int) -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    ret = libc.syscall(KCMP[platform.machine()], a, b, KCMP_VM, 0, 0)
    assert ret >= 0, os.strerror(ctypes.get_errno())
    return ret == 0


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def wait_for(path: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def test_the_interpreter_is_intact_after_many_shared_runs(tmp_path: Path) -> None:
    # One process, 64 runs in its memory: with and without a pid namespace (pid 1's
    # loop; an exec in place), failing in setup, at exec and at chdir. A frame, a
    # reference or an exception left behind by a child would show in the stack
    # depth, the frame chain, a traceback, the fds or the mappings, or crash.
    driver = tmp_path / "driver.py"
    driver.write_text("""
import copy, gc, json, os, sys, traceback
from vbdecl.runtime.spawn import run_spec
BASE = json.load(open(sys.argv[1]))

def state():
    with open("/proc/self/maps") as f:
        maps = sum(1 for _ in f)
    return len(traceback.extract_stack()), len(os.listdir("/proc/self/fd")), maps, sys.exc_info()[0]

codes = []
for i in range(64):
    if i == 4:
        before = state()   # after a run of each kind: what they import and allocate once
    spec = copy.deepcopy(BASE)
    spec["namespaces"]["pid"] = i % 2 == 0
    kind = i % 4
    if kind == 0:
        spec["process"]["command"] = ["/bin/sh", "-c", f"exit {i % 7}"]
    elif kind == 1:
        spec["process"]["command"] = ["/nonexistent/command"]
    elif kind == 2:
        spec["process"]["command"] = ["/bin/true"]
        spec["process"]["cwd"] = "/nonexistent-dir"
    else:
        spec["filesystem"] = spec["filesystem"] + [{"type": "tmpfs", "target": "/proc/vbdecl-no-such-dir"}]
    r = run_spec(spec, share_memory=True)
    codes.append([r.code, None if r.error is None else str(r.error)])
    try:
        raise ValueError(i)
    except ValueError as exc:
        lines = traceback.format_exc().splitlines()
        assert exc.args == (i,) and lines[-1] == f"ValueError: {i}", lines
        assert sum(line.startswith("  File ") for line in lines) == 1, lines
    assert sys._getframe().f_back is None    # the module's frame is still the outermost
gc.collect()
after = state()
print(json.dumps({"before": before, "after": after, "codes": codes}, default=str))
""")
    (tmp_path / "spec.json").write_text(json.dumps(BASE))
    r = subprocess.run([sys.executable, str(driver), str(tmp_path / "spec.json")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["before"] == out["after"]       # stack depth, fds, mappings, no exception
    for i, (code, error) in enumerate(out["codes"]):
        kind = i % 4
        if kind == 0:
            assert (code, error) == (i % 7, None), i
        elif kind == 1:
            assert code == 127 and "command not found: /nonexistent/command" in error, (i, error)
        elif kind == 2:
            assert code == 125 and "cannot change to process.cwd /nonexistent-dir" in error, (i, error)
        else:
            assert code == 125 and "/proc/vbdecl-no-such-dir" in error, (i, error)


# vb from the work tree on the system python3, for a user who cannot read /root's venv
AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-I", "-B", "-c",
             f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r}); "
             "sys.argv[0] = 'vb'; from vbdecl.entry import console_vb; console_vb()"]


@pytest.mark.parametrize("user, flags, shared", [
    ("root", ["--unshare-pid"], True),  # (without a pid namespace it becomes the process: exec)
    ("root", ["--unshare-pid", "--info-fd", "1"], False),   # the namespaces are read: a forked child
    ("root", ["--unshare-pid", "--unshare-user"], False),   # root's maps: the parent writes them
    ("nobody", ["--unshare-pid"], True),                    # its own ids: the child maps them
    ("nobody", ["--unshare-pid", "--uid", "0", "--gid", "0"], True),
])
def test_vb_runs_its_first_child_in_its_memory_only_where_it_may(
        user: str, flags: list[str], shared: bool) -> None:
    vb = [VB] if user == "root" else AS_NOBODY
    proc = subprocess.Popen([*vb, *ROOT, *flags, "--die-with-parent", "/bin/sh", "-c", "echo ready; exec sleep 30"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        first = children(proc.pid)
        assert len(first) == 1
        assert shares_memory_with(proc.pid, first[0]) is shared
        proc.terminate()        # vb passes it on to the process, and returns
        assert proc.wait(timeout=10) == 128 + signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def test_shared_pid_1_reaps_orphans_and_forwards_signals(tmp_path: Path) -> None:
    ready, got = tmp_path / "ready", tmp_path / "got"
    script = (f"for i in $(seq 50); do ( /bin/true & ) ; done; "
              f"trap 'echo TERM > {got}; exit 3' TERM; touch {ready}; while :; do sleep 0.05; done")
    proc = subprocess.Popen([VB, *ROOT, "--bind", str(tmp_path), str(tmp_path), "--unshare-pid",
                             "--proc", "/proc", "--die-with-parent", "/bin/sh", "-c", script])
    try:
        wait_for(ready)
        (pid1,) = children(proc.pid)
        assert shares_memory_with(proc.pid, pid1)
        deadline = time.monotonic() + 5
        while len(children(pid1)) > 1 and time.monotonic() < deadline:   # the orphans are reaped
            time.sleep(0.01)
        assert len(children(pid1)) == 1
        os.kill(pid1, signal.SIGTERM)              # straight to pid 1: its loop forwards it
        assert proc.wait(timeout=10) == 3
    finally:
        proc.kill()
        proc.wait()
    assert got.read_text().strip() == "TERM"


def test_a_shared_child_killed_inside_python_stops_vbdecl(tmp_path: Path) -> None:
    # 400 tmpfs mounts keep the child in Python (building the root) for a while; it is
    # stopped there (its name is still vb's: pid 1 renames itself on leaving Python),
    # then killed. The parent cannot trust its interpreter's state and exits 125.
    many = [arg for i in range(400) for arg in ("--tmpfs", f"/t{i}")]
    for _ in range(20):
        proc = subprocess.Popen([VB, *ROOT, *many, "--unshare-pid", "/bin/true"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        child = 0
        try:
            deadline = time.monotonic() + 5
            while not child and time.monotonic() < deadline and proc.poll() is None:
                kids = children(proc.pid)
                child = kids[0] if kids else 0
            if not child:
                continue
            os.kill(child, signal.SIGSTOP)
            if Path(f"/proc/{child}/comm").read_text().strip() != "vb":
                os.kill(child, signal.SIGCONT)     # too late: it left Python; try again
                continue
            os.kill(child, signal.SIGKILL)
            _, err = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None and child == 0:
                proc.kill()
            proc.wait()
            assert proc.stderr is not None
            proc.stderr.close()
        assert proc.returncode == 125, err
        assert "killed while it ran in vbdecl's memory" in err
        assert "Traceback" not in err
        return
    pytest.fail("never caught the child inside Python in 20 tries")


def test_without_the_right_to_a_pid_namespace_the_holder_says_why(tmp_path: Path) -> None:
    # clone(CLONE_NEWPID) is refused without CAP_SYS_ADMIN: vb falls back to the
    # forked holder, whose unshare fails with the reason, as it would have before.
    r = subprocess.run(["setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin", VB, *ROOT,
                        "--unshare-pid", "/bin/true"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1, r
    assert "Operation not permitted" in r.stderr and "clone" not in r.stderr, r.stderr
