"""vbdecl's pid 1: reaping, signal forwarding, exit status, die-with-parent, new sessions.

Each test is also a regression test for a predecessor bug (see
../shared/seed/predecessor-inventory.md §6.6): pid 1 hung or aborted on
ECHILD after the command ran; die-with-parent did not reach through pid 1;
new-session raced with pid 1's setpgid.
"""

from __future__ import annotations

import copy
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from test_runtime import DRIVER, HOST_ROOT

from vbdecl.runtime.spawn import run_spec

BASE: dict[str, Any] = {
    "rootfs": None, "hostname": None,
    "namespaces": {"user": False, "pid": True, "mount": True, "uts": False, "ipc": False,
                   "net": False, "cgroup": False},
    "idmap": None, "filesystem": HOST_ROOT, "limits": {"rlimits": {}}, "network": {"mode": "host"},
    "process": {"command": ["/bin/true"], "cwd": "/", "env": {}, "clear_env": False, "unset_env": [],
                "argv0": None, "user": 0, "group": 0, "init": True, "die_with_parent": True,
                "new_session": False, "inherit_fds": [], "tty": "auto"},
    "security": {"no_new_privs": True, "capabilities": None, "seccomp": "off", "landlock": None,
                 "disable_userns": False},
    "status": {"lock_file": None, "events": None},
}



def spec_for(script: str, **process: Any) -> dict[str, Any]:
    spec = copy.deepcopy(BASE)
    spec["process"]["command"] = ["/bin/sh", "-c", script]
    spec["process"].update(process)
    return spec


def start(tmp_path: Path, spec: dict[str, Any], **popen: Any) -> subprocess.Popen[bytes]:
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    (tmp_path / "driver.py").write_text(DRIVER)
    return subprocess.Popen([sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "spec.json")],
                            **popen)


def wait_for(path: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def descendants(pid: int) -> set[int]:
    out: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                kids = Path(f"/proc/{p}/task/{task}/children").read_text().split()
                for k in map(int, kids):
                    if k not in out:
                        out.add(k)
                        todo.append(k)
        except OSError:
            pass
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_pid1_reaps_100_orphans(tmp_path: Path) -> None:
    # The main process mounts the new pid namespace's /proc (its mount namespace is
    # private), makes 100 orphans that exit at once, then counts zombies: pid 1 reaps them.
    out = tmp_path / "out"
    script = (
        "mount -t proc proc /proc || exit 90; "
        "for i in $(seq 100); do ( /bin/true & ) ; done; "
        "i=0; while [ $i -lt 200 ]; do "
        "  z=$(cat /proc/[0-9]*/stat 2>/dev/null | awk '$3 == \"Z\"' | wc -l); "
        "  [ $z -eq 0 ] && break; sleep 0.01; i=$((i+1)); done; "
        f"echo $z > {out}; ls /proc | grep -c '^[0-9]' >> {out}"
    )
    spec = spec_for(script)
    spec["security"]["capabilities"] = {"drop": [], "add": ["SYS_ADMIN"]}   # to mount /proc
    r = run_spec(spec)
    assert r.code == 0, r.error
    zombies, procs = out.read_text().split()
    assert zombies == "0"
    assert int(procs) <= 6   # init, sh, and the pipeline's own processes


def test_no_hang_or_abort_after_the_command_ran(tmp_path: Path) -> None:
    # Predecessor: ECHILD made pid 1 spin forever (release) or abort with 134 (debug).
    t0 = time.monotonic()
    for script, code in (("true", 0), ("exit 3", 3), ("sleep 30 & exit 4", 4),
                         ("(sleep 30 &); exit 5", 5)):
        r = run_spec(spec_for(script))
        assert r.code == code, (script, r)
    assert time.monotonic() - t0 < 10


def test_pid1_forwards_sigterm_to_the_main_process(tmp_path: Path) -> None:
    got = tmp_path / "got"
    ready = tmp_path / "ready"
    script = f"trap 'echo TERM > {got}; exit 3' TERM; touch {ready}; while :; do sleep 0.05; done"
    events = tmp_path / "events"
    spec = spec_for(script)
    spec["status"]["events"] = str(events)
    proc = start(tmp_path, spec)
    try:
        wait_for(ready)
        init_pid = json.loads(events.read_text().splitlines()[1])["pid"]
        os.kill(init_pid, signal.SIGTERM)      # straight to pid 1: it forwards
        assert proc.wait(timeout=10) == 3
    finally:
        proc.kill()
        proc.wait()
    assert got.read_text().strip() == "TERM"


def test_vbdecl_forwards_signals_it_receives(tmp_path: Path) -> None:
    got = tmp_path / "got"
    ready = tmp_path / "ready"
    script = (f"trap 'echo HUP >> {got}' HUP; trap 'echo USR1 >> {got}; exit 0' USR1; "
              f"touch {ready}; while :; do sleep 0.05; done")
    proc = start(tmp_path, spec_for(script))
    try:
        wait_for(ready)
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while not (got.exists() and "HUP" in got.read_text()) and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGUSR1)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()
    assert got.read_text().split() == ["HUP", "USR1"]


def survivors_of_killing(proc: subprocess.Popen[bytes], tree: set[int]) -> list[int]:
    """Kill vbdecl (SIGKILL: no cleanup at all); what of ``tree`` is alive 5 s later."""
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 5
    while any(alive(p) for p in tree) and time.monotonic() < deadline:
        time.sleep(0.01)
    return [p for p in tree if alive(p)]


def test_die_with_parent_reaches_through_pid1(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    events = tmp_path / "events"
    spec = spec_for(f"sleep 60 & sleep 60 & (sleep 60 &); touch {ready}; wait")
    spec["status"]["events"] = str(events)
    proc = start(tmp_path, spec)
    try:
        wait_for(ready)
        init_pid = json.loads(events.read_text().splitlines()[1])["pid"]
        tree = descendants(proc.pid)
        assert init_pid in tree and len(tree) >= 5   # init, sh, 3 sleeps (as root, no holder)
        assert not survivors_of_killing(proc, tree)
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize(("case", "changes"), [
    # the holder and pid 1 become root of a user namespace whose 0 is uid 100000 outside
    ("userns-100000", {"namespaces": {"user": True}, "idmap": {
        "uid": [{"inside": 0, "outside": 100000, "count": 65536}],
        "gid": [{"inside": 0, "outside": 100000, "count": 65536}]}}),
    ("no-init-uid-1000", {"process": {"init": False, "user": 1000}}),
    ("no-pid-ns-gid-1000", {"namespaces": {"pid": False}, "process": {"group": 1000}}),
    # joining a user namespace of another owner (nobody's, made below) clears it too
    ("join-userns-of-nobody", {"namespaces": {"user": {"join": "@USERNS"}, "mount": False},
                               "filesystem": []}),
])
def test_die_with_parent_outlives_a_change_of_ids(tmp_path: Path, case: str,
                                                  changes: dict[str, Any]) -> None:
    """The kernel clears a process's death signal when its uid or gid changes, or it
    joins a user namespace it does not own: vbdecl sets it again after each (a sweep
    and a review found the sandbox outliving a killed vbdecl in these cases)."""
    owner = None
    if case.startswith("join-"):
        owner = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                  "unshare", "-U", "-r", "sleep", "60"])
        changes = json.loads(json.dumps(changes).replace("@USERNS", f"/proc/{owner.pid}/ns/user"))
        deadline = time.monotonic() + 5
        while os.stat(f"/proc/{owner.pid}/ns/user").st_ino == os.stat("/proc/self/ns/user").st_ino:
            assert time.monotonic() < deadline, "unshare -U never ran"
            time.sleep(0.01)
    spec = spec_for("echo ready; exec sleep 60")     # (the ids may not reach tmp_path)
    for key, value in changes.items():
        spec[key] = {**spec[key], **value} if isinstance(spec[key], dict) else value
    proc = start(tmp_path, spec, stdout=subprocess.PIPE)
    tree: set[int] = set()
    try:
        assert proc.stdout is not None
        assert select.select([proc.stdout], [], [], 10)[0], f"{case}: the command never started"
        assert proc.stdout.readline() == b"ready\n"
        tree = descendants(proc.pid)
        assert tree, case
        assert not survivors_of_killing(proc, tree), case
    finally:
        proc.kill()
        proc.wait()
        for p in tree:      # (only after a failure)
            if alive(p):
                os.kill(p, signal.SIGKILL)
        if owner is not None:
            owner.kill()
            owner.wait()


def test_without_die_with_parent_the_tree_survives(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    events = tmp_path / "events"
    spec = spec_for(f"touch {ready}; sleep 60", die_with_parent=False)
    spec["status"]["events"] = str(events)
    proc = start(tmp_path, spec)
    init_pid = 0
    try:
        wait_for(ready)
        init_pid = json.loads(events.read_text().splitlines()[1])["pid"]
        proc.kill()
        proc.wait()
        time.sleep(0.2)
        assert alive(init_pid)
    finally:
        if init_pid and alive(init_pid):
            os.kill(init_pid, signal.SIGKILL)   # pid 1 dies: the kernel ends its namespace
            deadline = time.monotonic() + 5
            while alive(init_pid) and time.monotonic() < deadline:
                time.sleep(0.01)
        # the holder was reparented away from us; nothing of ours is left


def test_new_session_never_races_with_pid1(tmp_path: Path) -> None:
    # Predecessor: pid 1's setpgid(child) could make the child a group leader, so its
    # setsid() failed with EPERM. Here the process calls setsid itself; pid 1 never touches it.
    check = ("import os; assert os.getsid(0) == os.getpid() == os.getpgid(0), "
             "(os.getsid(0), os.getpid(), os.getpgid(0))")
    spec = copy.deepcopy(BASE)
    spec["process"]["command"] = [sys.executable, "-c", check]
    spec["process"]["new_session"] = True
    for _ in range(30):
        r = run_spec(spec)
        assert r.code == 0, r
    spec["process"]["new_session"] = False
    assert run_spec(spec).code != 0   # without it the process stays in vbdecl's session
