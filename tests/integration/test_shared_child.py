"""The sandbox's first child in vbdecl's own memory (vbdecl/sys/_sharedchild.c).

`vb` and `vbdecl run` start it with clone(CLONE_VM) where the parent has nothing
to do until the process starts: the child runs Python as if it were the parent's
thread while the parent waits. These tests hold the conditions that make it
safe: the parent's interpreter is intact after many such runs (failed ones
too), the child is used exactly where it may be, pid 1's compiled loop reaps
and forwards, a child killed inside Python makes vbdecl stop instead of going
on, a long report does not block it, and the sandbox cannot get into a shared
pid 1's memory (not dumpable; CAP_KILL only).
"""

from __future__ import annotations

import copy
import ctypes
import json
import os
import platform
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import pytest
from test_pid1 import BASE

from vbdecl.sys import _linux

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not _linux.SHARED_CHILD or sys.version_info >= (3, 14),
                       reason="no shared child on this architecture or Python (see spawn.shares_memory)"),
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


def line_of(stream: IO[bytes], timeout: float = 10.0) -> bytes:
    """The next line of ``stream`` (unbuffered: Popen(bufsize=0), else select cannot
    see what a buffer holds already), or b"" after ``timeout`` seconds without one."""
    ready, _, _ = select.select([stream], [], [], timeout)
    return stream.readline() if ready else b""


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
from vbdecl.sys import _linux
BASE = json.load(open(sys.argv[1]))
shared = []
real = _linux.shared_child
def counted(*args):
    shared.append(1)
    return real(*args)
_linux.shared_child = counted

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
        # (a failure that changes nothing of the host: runs that may are not shared, runtime/undo.py)
        spec["filesystem"] = spec["filesystem"] + [{"type": "remount-ro", "target": "/proc/vbdecl-no-such-dir"}]
    r = run_spec(spec, share_memory=True, ns_ids=False)
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
print(json.dumps({"before": before, "after": after, "codes": codes, "shared": len(shared)}, default=str))
""")
    (tmp_path / "spec.json").write_text(json.dumps(BASE))
    r = subprocess.run([sys.executable, str(driver), str(tmp_path / "spec.json")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["shared"] == 64                 # every run's first child shared our memory
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
    ("root", ["--unshare-pid", "--info-fd", "INFO"], False),  # the namespaces are read: a forked child
    ("root", ["--unshare-pid", "--unshare-user"], False),   # root's maps: the parent writes them
    ("nobody", ["--unshare-pid"], True),                    # its own ids: the child maps them
    ("nobody", ["--unshare-pid", "--uid", "0", "--gid", "0"], True),
])
def test_vb_runs_its_first_child_in_its_memory_only_where_it_may(
        user: str, flags: list[str], shared: bool) -> None:
    vb = [VB] if user == "root" else AS_NOBODY
    info_r, info_w = os.pipe()      # (--info-fd on stdout would be closed in the command, as bwrap has it)
    flags = [str(info_w) if flag == "INFO" else flag for flag in flags]
    proc = subprocess.Popen([*vb, *ROOT, *flags, "--die-with-parent", "/bin/sh", "-c", "echo ready; exec sleep 30"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, pass_fds=(info_w,))
    os.close(info_w)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline()]
        while lines[-1] not in (b"ready\n", b"") and len(lines) < 50:
            lines.append(proc.stdout.readline())
        assert lines[-1] == b"ready\n", lines
        first = children(proc.pid)
        assert len(first) == 1
        assert shares_memory_with(proc.pid, first[0]) is shared
        proc.terminate()        # vb passes it on to the process, and returns
        assert proc.wait(timeout=10) == 128 + signal.SIGTERM
    finally:
        os.close(info_r)
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


def state_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


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
            while state_of(child) not in ("T", "") and time.monotonic() < deadline:
                time.sleep(0.001)
            if Path(f"/proc/{child}/comm").read_text().strip() != "vb":
                os.kill(child, signal.SIGCONT)     # too late: it left Python; try again
                proc.wait(timeout=10)
                continue
            os.kill(child, signal.SIGKILL)
            _, err = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                if child:
                    os.kill(child, signal.SIGKILL)   # (ours: vb's child, stopped or not)
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
    # The driver notes each attempt at a shared child, and the fallback.
    driver = ("import sys; sys.argv[0] = 'vb'\n"
              "from vbdecl.sys import _linux\n"
              "real = _linux.shared_child\n"
              "def noted(*args):\n"
              "    try:\n"
              "        return real(*args)\n"
              "    except OSError as exc:\n"
              "        print(f'shared child refused: {exc.strerror}', file=sys.stderr)\n"
              "        raise\n"
              "_linux.shared_child = noted\n"
              "from vbdecl.entry import console_vb\n"
              "console_vb()\n")
    r = subprocess.run(["setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin", sys.executable, "-c",
                        driver, *ROOT, "--unshare-pid", "--cap-drop", "ALL", "/bin/true"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1, r
    first, *rest = r.stderr.splitlines()
    assert first == "shared child refused: Operation not permitted", r.stderr
    assert "Operation not permitted" in rest[0] and "clone" not in rest[0], r.stderr


def test_a_process_that_could_trace_into_pid_1_gets_a_forked_one(tmp_path: Path) -> None:
    # As root without a user namespace, CAP_SYS_PTRACE would let the sandbox into a
    # shared pid 1, and so into vb: vb forks pid 1 for such a process, unless it
    # holds CAP_SYS_ADMIN anyway (root's default in bubblewrap: all but SYS_RESOURCE).
    for caps, shared in (([], True), (["--cap-drop", "ALL"], True),
                         (["--cap-drop", "ALL", "--cap-add", "CAP_SYS_PTRACE"], False)):
        proc = subprocess.Popen([VB, *ROOT, "--unshare-pid", *caps, "--die-with-parent", "/bin/sh", "-c",
                                 "echo ready; exec sleep 30"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == b"ready\n"
            (first,) = children(proc.pid)
            assert shares_memory_with(proc.pid, first) is shared, caps
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            assert proc.stdout is not None
            proc.stdout.close()


NOBODY_DRIVER = """
import copy, json, sys
from vbdecl.runtime.spawn import run_spec
from vbdecl.sys import _linux
base = json.loads(sys.argv[1])
out = []
real = _linux.shared_child
def counted(*args):
    out.append("shared")
    return real(*args)
_linux.shared_child = counted
def run(share, **sec):
    spec = copy.deepcopy(base)
    spec["security"].update(sec)
    r = run_spec(spec, share_memory=share, ns_ids=False)
    out.append(r.code if r.error is None else str(r.error))
run(True)                                  # the process's capabilities, shared child
run(False)                                 # the same, forked
run(True, disable_userns=True)             # twice in one process: both apply it
run(True, disable_userns=True)
print(json.dumps(out))
"""


def test_an_unprivileged_shared_child_gives_the_process_what_a_forked_one_does() -> None:
    # As a user who is not root: a shared child in its own user and pid namespaces
    # gives the process the same capabilities as a forked one (the parent cannot work
    # them out for it: it is outside the namespace), and a module's state that the
    # child sets (disable_userns done) does not leak into the parent's next run.
    script = ('echo "$(grep CapEff /proc/self/status | tr -d "\t") '
              'max=$(cat /proc/sys/user/max_user_namespaces)" >&2')
    spec = copy.deepcopy(BASE)
    spec["namespaces"].update({"user": True, "pid": True})
    spec["filesystem"] = [{"type": "ro-bind", "source": "/", "target": "/"},
                          {"type": "proc", "target": "/proc"}]
    spec["process"]["command"] = ["/bin/sh", "-c", script]
    r = subprocess.run([*AS_NOBODY[:4], "/usr/bin/python3", "-I", "-B", "-c",
                        f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})\n"
                        + NOBODY_DRIVER, json.dumps(spec)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == ["shared", 0, 0, "shared", 0, "shared", 0], r.stderr
    seen = [line for line in r.stderr.splitlines() if line.startswith("CapEff")]
    assert len(seen) == 4, r.stderr
    assert seen[0] == seen[1] and seen[0] != "CapEff:0000000000000000 max=" + seen[0].split("max=")[1]
    assert seen[2].endswith(" max=0") and seen[3].endswith(" max=0"), seen


def test_the_sandbox_cannot_reach_a_shared_pid_1_s_memory() -> None:
    # With every capability of its user namespace, the process could ptrace pid 1 if
    # pid 1's memory (vb's own) were dumpable; it is not while pid 1 shares it.
    probe = 'm=$(cat /proc/1/maps 2>&1); case "$m" in *python*) echo readable;; *) echo "denied: $m";; esac'
    r = subprocess.run([*AS_NOBODY, *ROOT, "--unshare-user", "--unshare-pid", "--proc", "/proc",
                        "--cap-add", "ALL", "/bin/sh", "-c", probe], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.startswith("denied: "), r
    assert "Permission denied" in r.stdout, r


def test_a_long_report_does_not_block_a_shared_child() -> None:
    # The parent reads the child's report only once the child is gone: a report
    # longer than the pipe holds would block both. It is cut to fit.
    path = ":".join(f"/nonexistent/dir{i:05d}" for i in range(4500))     # ~99 KB
    r = subprocess.run([VB, *ROOT, "--unshare-pid", "nosuchcmd"], env={**os.environ, "PATH": path},
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stderr) == (1, "vb: execvp nosuchcmd: No such file or directory\n"), r


@pytest.mark.parametrize("shared", [True, False])
def test_pid_1_keeps_only_cap_kill_and_forwards_to_another_uid(tmp_path: Path, shared: bool) -> None:
    # pid 1 drops every capability but CAP_KILL once the process runs (a process that
    # gets into it gains nothing), and still forwards a signal to a process of uid 1000.
    events = "" if shared else f"  status: {{events: {tmp_path / 'events.jsonl'}}}\n"  # (read: forked)
    # (a forked pid 1 drops them right after it spawned the process, which may look first)
    script = ("for i in $(seq 200); do grep -q 'CapEff:.*0000000000000020' /proc/1/status && break; "
              "sleep 0.01; done; grep CapEff /proc/1/status; trap 'echo TERM; exit 3' TERM; echo ready; "
              "while :; do sleep 0.05; done")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "apiVersion: vbdecl/v1\nkind: Environment\nmetadata: {name: killcap}\nspec:\n"
        "  filesystem:\n    - {type: ro-bind, source: /usr, target: /usr}\n"
        "    - {type: symlink, target: /bin, points_to: usr/bin}\n"
        "    - {type: symlink, target: /lib, points_to: usr/lib}\n"
        "    - {type: symlink, target: /lib64, points_to: usr/lib64}\n"
        "    - {type: proc, target: /proc}\n"
        "  namespaces: {pid: true}\n" + events +
        f"  process:\n    user: 1000\n    group: 1000\n    die_with_parent: true\n"
        f"    command: [/bin/sh, -c, {json.dumps(script)}]\n")
    vbdecl = str(Path(sys.executable).with_name("vbdecl"))
    proc = subprocess.Popen([vbdecl, "run", str(manifest)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            bufsize=0)
    try:
        assert proc.stdout is not None
        caps = line_of(proc.stdout)
        assert line_of(proc.stdout) == b"ready\n", caps
        assert caps == b"CapEff:\t0000000000000020\n"       # CAP_KILL (5) only
        (pid1,) = children(proc.pid)
        assert shares_memory_with(proc.pid, pid1) is shared
        os.kill(pid1, signal.SIGTERM)              # straight to pid 1: it forwards to uid 1000
        assert line_of(proc.stdout) == b"TERM\n"
        assert proc.wait(timeout=10) == 3
    finally:
        proc.kill()
        proc.wait()
        for f in (proc.stdout, proc.stderr):
            assert f is not None
            f.close()
