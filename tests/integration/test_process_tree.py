"""A live environment's process and what it starts: a restart or a stop of the
process ends its whole tree (background jobs, double-forked setsid daemons), never
`vbdecl exec`'s commands nor the init; a natural exit leaves what it started
running, still counted as the process's, so the next restart ends it.

Before, only the process itself was signalled: a web server's workers kept the port
and its new process failed with "address already in use"."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import testops
from testmanifests import BASE_ENTRIES

from vbdecl.engine import store

# one process each: a background job, a daemon (double fork, setsid), the process
TREE = "sleep {n}1 & (setsid sh -c 'sleep {n}2 &' &); exec sleep {n}0"
# a daemon that ignores SIGTERM, and its children (which do not)
STUBBORN = "(setsid sh -c 'trap \\\"\\\" TERM; while :; do sleep {n}2; done' &); exec sleep {n}0"


def _manifest(path: Path, name: str, script: str, extra: str = "") -> None:
    entries = "".join(f"    - {{{e}}}\n" for e in BASE_ENTRIES)
    path.write_text(f"""\
apiVersion: vbdecl/v1
kind: Environment
metadata:
  name: {name}
spec:
  filesystem:
{entries}    - {{type: proc, target: /proc}}
    - {{type: dev, target: /dev}}
  process:
    command: ["/bin/sh", "-c", "{script}"]
{extra}""")


def _cli(sd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vbdecl", "--state-dir", str(sd), *args],
                          env={**{k: v for k, v in os.environ.items() if not k.startswith("VBDECL_") or k == "VBDECL_CACHE_DIR"}, **env},
                          capture_output=True, text=True, timeout=120)


def _ok(out: subprocess.CompletedProcess[str]) -> None:
    assert out.returncode == 0, (out.args, out.stdout, out.stderr)


def _record(sd: Path, name: str, rid: str) -> dict[str, Any]:
    record: dict[str, Any] = store.load(name, sd)["resources"][rid]["record"]
    return record


def _stat(pid: str) -> tuple[str, int, int]:
    """(state, ppid, start time) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return fields[0], int(fields[1]), int(fields[19])


def _inside(sd: Path, name: str) -> dict[tuple[int, int], tuple[str, int]]:
    """The live processes in the environment's pid namespace, but its init:
    {(host pid, start time): (command line, parent's host pid)}."""
    init = _record(sd, name, "env")["pid"]
    ns = os.stat(f"/proc/{init}/ns/pid").st_ino
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == init:
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/pid").st_ino != ns:
                continue
            state, ppid, started = _stat(entry)
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except (OSError, IndexError, ValueError):
            continue        # gone meanwhile
        if state != "Z":
            out[(int(entry), started)] = (cmd, ppid)
    return out


def _commands(sd: Path, name: str) -> list[str]:
    """The command lines of :func:`_inside` but vbdecl's (supervisors, exec's)."""
    return sorted(cmd for cmd, _ in _inside(sd, name).values() if "vbdecl" not in cmd)


def _wait(check: Callable[[], bool], what: str, timeout: float = 10.0,
          show: Callable[[], object] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f": {show()}" if show else ""))
        time.sleep(0.02)


def _run(body: Callable[[Path], None], tmp: Path) -> None:
    testops.in_private_mount_ns(testops.with_cleanup(body), tmp)


def _restart(tmp: Path) -> None:
    sd, m, name = tmp / "state", tmp / "tree.yaml", "tree"
    _manifest(m, name, TREE.format(n=3000))
    _ok(_cli(sd, "apply", str(m), "-y"))
    _wait(lambda: _commands(sd, name) == ["sleep 30000", "sleep 30001", "sleep 30002"], "the first tree",
          show=lambda: _inside(sd, name))
    parents = {cmd: ppid for cmd, ppid in _inside(sd, name).values()}
    # the daemon was reparented to the process's supervisor, not to the init
    assert parents["sleep 30002"] == parents["sleep 30000"] != _record(sd, name, "env")["pid"], parents
    # exec's commands: one that runs on, and a daemon of its own (reparented to the init)
    _ok(_cli(sd, "exec", name, "--", "sh", "-c", "(setsid sleep 30003 >/dev/null 2>&1 &)"))
    session = subprocess.Popen([sys.executable, "-m", "vbdecl", "--state-dir", str(sd), "exec", name,
                                "--", "sleep", "30004"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: "sleep 30004" in _commands(sd, name), "the exec session")
        before = set(_inside(sd, name))
        # a changed process: a restart (-/+ process)
        _manifest(m, name, TREE.format(n=3100))
        _ok(_cli(sd, "apply", str(m), "-y"))
        _wait(lambda: "sleep 31002" in _commands(sd, name), "the new daemon")
        now = _inside(sd, name)
        old = {cmd for key, (cmd, _) in now.items() if key in before}
        assert old == {"sleep 30003", "sleep 30004"}, sorted(old)     # exec's, and only those
        assert [c for c in _commands(sd, name) if c.startswith("sleep 31")] == \
            ["sleep 31000", "sleep 31001", "sleep 31002"]
        # a rollback is a restart too
        _ok(_cli(sd, "rollback", name, "--to", "1", "-y"))
        _wait(lambda: "sleep 30002" in _commands(sd, name), "the daemon of the rolled back process")
        assert not [c for c in _commands(sd, name) if c.startswith("sleep 31")], _commands(sd, name)
        assert session.poll() is None       # the exec session lives on
    finally:
        _ok(_cli(sd, "destroy", name, "-y"))
        session.wait(timeout=30)


def test_a_restart_ends_the_process_tree_but_not_exec_sessions(tmp_path: Path) -> None:
    _run(_restart, tmp_path)


def _exits(tmp: Path) -> None:
    sd, m, name = tmp / "state", tmp / "exits.yaml", "exits"
    _manifest(m, name, "(setsid sleep 32002 &); sleep 32001 & exit 3")
    _ok(_cli(sd, "apply", str(m), "-y"))
    try:
        def status() -> dict[str, Any]:
            out = _cli(sd, "--json", "status", name)
            _ok(out)
            found: dict[str, Any] = next(r for r in json.loads(out.stdout)["resources"] if r["id"] == "process")
            return found

        _wait(lambda: status()["status"] == "exited", "the process's exit")
        # what it started runs on, and is still the process's
        assert _commands(sd, name) == ["sleep 32001", "sleep 32002"]
        st, text = status(), _cli(sd, "status", name).stdout
        left = {k for k, (cmd, _) in _inside(sd, name).items() if cmd.startswith("sleep")}
        # the next apply starts the process again, and ends what the last one left first
        first = _record(sd, name, "process")["pid"]
        _ok(_cli(sd, "apply", str(m), "-y"))
        _wait(lambda: status()["status"] == "exited" and status()["record"]["pid"] != first, "the second process")
        assert not left & set(_inside(sd, name)), (left, _inside(sd, name))
        assert _commands(sd, name) == ["sleep 32001", "sleep 32002"]
        # status told of them
        assert (st["exit_code"], st.get("left_running")) == (3, 2), st
        assert "2 processes it started still run (a restart or a destroy ends them)" in text, text
    finally:
        _ok(_cli(sd, "destroy", name, "-y"))


def test_a_natural_exit_leaves_its_daemons_to_the_next_restart(tmp_path: Path) -> None:
    _run(_exits, tmp_path)


def _killed_mid_stop(tmp: Path) -> None:
    """vbdecl killed while it waits for a daemon that ignores SIGTERM (the process
    itself gone already): recovery's rollback starts the old process again, and the
    daemon may not outlive it."""
    sd, m, name = tmp / "state", tmp / "stubborn.yaml", "stubborn"
    _manifest(m, name, STUBBORN.format(n=3300))
    _ok(_cli(sd, "apply", str(m), "-y"))
    try:
        _wait(lambda: "sleep 33002" in _commands(sd, name), "the daemon")
        shell = next(k for k, (cmd, _) in _inside(sd, name).items() if cmd.startswith("sh -c trap"))
        _manifest(m, name, STUBBORN.format(n=3400))
        apply = subprocess.Popen([sys.executable, "-m", "vbdecl", "--state-dir", str(sd), "apply", str(m), "-y"],
                                 env={k: v for k, v in os.environ.items() if not k.startswith("VBDECL_") or k == "VBDECL_CACHE_DIR"},
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            # the process got its SIGTERM; the daemon's shell ignores it, and the apply waits
            _wait(lambda: "sleep 33000" not in _commands(sd, name), "the process's end")
            time.sleep(0.2)
            in_the_middle = apply.poll() is None
        finally:
            apply.send_signal(signal.SIGKILL)
            apply.wait()
        _ok(_cli(sd, "recover", name))
        assert shell not in _inside(sd, name), _inside(sd, name)
        _wait(lambda: "sleep 33000" in _commands(sd, name), "the old process started again")
        assert [c for c in _commands(sd, name) if c.startswith("sh -c trap")] == \
            ["sh -c trap \"\" TERM; while :; do sleep 33002; done"]
        assert in_the_middle        # (killed while it waited, not after)
    finally:
        _ok(_cli(sd, "destroy", name, "-y"))


def test_vbdecl_killed_in_the_middle_of_a_restart_leaves_no_process_behind(tmp_path: Path) -> None:
    _run(_killed_mid_stop, tmp_path)


def _supervisor_found(tmp: Path) -> None:
    """A review: the supervisor was found as the parent of the live process, so once the
    process had exited (its daemon left running) there was none, and limits added then
    moved the supervisor into every cgroup of the environment, memory included. The
    process's record names it (pid and start time)."""
    from types import SimpleNamespace

    from vbdecl.ops.cgroup import _supervisor

    sd, m, name = tmp / "state", tmp / "supfound.yaml", "supfound"
    _manifest(m, name, "(setsid sleep 3501 >/dev/null 2>&1 &); exit 0")
    _ok(_cli(sd, "apply", str(m), "-y"))
    try:
        _wait(lambda: _commands(sd, name) == ["sleep 3501"], "the daemon")
        rec = _record(sd, name, "process")
        _wait(lambda: not Path(f"/proc/{rec['pid']}").exists() or _stat(str(rec["pid"]))[2] != rec["start_time"],
              "the process's exit")
        records = {rid: r["record"] for rid, r in store.load(name, sd)["resources"].items()}
        assert _supervisor(SimpleNamespace(records=records)) == rec["supervisor"]["pid"]
        # one that is gone (or whose pid is another process's now) is none
        gone = {**records, "process": {**rec, "supervisor": {**rec["supervisor"], "start_time": 1}}}
        assert _supervisor(SimpleNamespace(records=gone)) is None
    finally:
        _ok(_cli(sd, "destroy", name, "-y"))


def test_the_supervisor_of_a_process_that_exited_is_still_known(tmp_path: Path) -> None:
    _run(_supervisor_found, tmp_path)


def _killed_before_the_record(tmp: Path) -> None:
    """A review: a restart's apply killed after the new process started and before it
    was on record (the runtime dir's process.json) left it running, tracked by nobody,
    and recovery started the old one beside it. It runs only once it is on record now."""
    sd, m, name = tmp / "state", tmp / "unrecorded.yaml", "unrecorded"
    _manifest(m, name, "exec sleep 3600")
    _ok(_cli(sd, "apply", str(m), "-y"))
    try:
        _wait(lambda: _commands(sd, name) == ["sleep 3600"], "the process")
        _manifest(m, name, "exec sleep 3601")
        out = _cli(sd, "apply", str(m), "-y", VBDECL_TEST_CRASH_AT="process-started")
        assert out.returncode == -9, (out.stdout, out.stderr)
        time.sleep(0.3)
        assert "sleep 3601" not in _commands(sd, name), _inside(sd, name)
        _ok(_cli(sd, "recover", name))
        _wait(lambda: _commands(sd, name) == ["sleep 3600"], "the old process, alone",
              show=lambda: _inside(sd, name))
    finally:
        _ok(_cli(sd, "destroy", name, "-y"))


def test_an_apply_killed_before_the_process_is_on_record_leaves_none_running(tmp_path: Path) -> None:
    _run(_killed_before_the_record, tmp_path)
