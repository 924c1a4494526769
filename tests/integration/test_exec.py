"""Live environments: env.namespaces + proc.main ops, vbdecl exec, vbdecl logs, teardown.

The ops are driven directly (Context + op registry) and the state file the
engine would write is written by hand, so these tests do not depend on the
engine; ``vbdecl exec`` and ``vbdecl logs`` run as the real CLI.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_init_confined import may_lower_oom_score

from vbdecl.ops import op_for
from vbdecl.ops.base import Context

VBDECL = str(Path(sys.executable).parent / "vbdecl")

SPEC: dict[str, Any] = {
    "rootfs": None, "hostname": "livebox",
    "namespaces": {"user": False, "pid": True, "mount": True, "uts": True, "ipc": True,
                   "net": True, "cgroup": False},
    "idmap": None, "filesystem": [], "limits": {"rlimits": {}}, "network": {"mode": "isolated"},
    "process": {"command": ["/bin/sh", "-c", "echo started; echo err >&2; exec sleep 600"], "cwd": "/",
                "env": {"LIVE_VAR": "yes"}, "clear_env": False, "unset_env": [], "argv0": None,
                "user": 0, "group": 0, "init": True, "die_with_parent": True, "new_session": False,
                "inherit_fds": [], "tty": "auto"},
    "security": {"no_new_privs": True, "capabilities": None, "seccomp": "default", "landlock": None,
                 "disable_userns": False},
    "status": {"lock_file": None, "events": None},
}


class Live:
    def __init__(self, state: Path, spec: dict[str, Any]) -> None:
        self.state = state
        self.name = "live-" + os.urandom(3).hex()
        self.env_dir = state / "envs" / self.name
        self.env_dir.mkdir(parents=True)
        self.instance = "vb-" + os.urandom(4).hex()
        self.ctx = Context(name=self.name, instance=self.instance, state_dir=str(self.env_dir),
                           runtime_dir=str(state / "run" / self.instance), spec=spec)
        self.spec = spec
        self.env: dict[str, Any] | None = None
        self.proc: dict[str, Any] | None = None

    def up(self) -> None:
        self.env = op_for("env.namespaces").apply(
            self.ctx, {k: self.spec[k] for k in ("namespaces", "idmap", "hostname")})
        self.ctx.records["env"] = self.env
        self.proc = op_for("proc.main").apply(self.ctx, {
            "process": self.spec["process"], "security": self.spec["security"],
            "limits.rlimits": {}, "status": self.spec["status"]})
        (self.env_dir / "state.json").write_text(json.dumps({
            "format": 1, "name": self.name, "instance": self.instance, "serial": 1, "plan": {"spec": self.spec},
            "resources": {"env": {"kind": "env.namespaces", "record": self.env},
                          "process": {"kind": "proc.main", "record": self.proc}}}))

    def down(self) -> None:
        if self.proc is not None:
            op_for("proc.main").revert(self.ctx, self.proc)
            self.proc = None
        if self.env is not None:
            op_for("env.namespaces").revert(self.ctx, self.env)
            self.env = None

    def vbdecl(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run([VBDECL, "--state-dir", str(self.state), *args],
                              capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    env = Live(tmp_path / "state", copy.deepcopy(SPEC))
    try:
        env.up()
        yield env
    finally:
        env.down()


def wait_log(path: Path, text: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        data = path.read_text() if path.exists() else ""
        if text in data or time.monotonic() > deadline:
            return data
        time.sleep(0.01)


def test_live_environment_holds_pins_and_logs(live: Live) -> None:
    assert live.env is not None and live.proc is not None
    pid = live.env["pid"]
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "vbdecl-init"
    assert _cmdline(pid) == f"vbdecl-init: {live.name} (instance {live.instance})"
    # it only reaps: a process of the environment that gets into it (ptrace) gains nothing
    assert _capabilities(pid) == (0, 0, 0)
    mountinfo = Path("/proc/self/mountinfo").read_text()
    for key, path in live.env["pins"].items():
        assert f" {path} " in mountinfo
        fname = {"mount": "mnt"}.get(key, key)
        assert os.stat(path).st_ino == os.stat(f"/proc/{pid}/ns/{fname}").st_ino
    log = live.env_dir / "logs" / "process.log"
    assert "started" in wait_log(log, "err") and "err" in log.read_text()
    # the process lives in the environment's pid namespace, under its supervisor, a child
    # of its init, which is in the root cgroups (the environment's limits are for the process;
    # the caller's cgroup may be a systemd unit or a CI job)
    sup = _ppid(live.proc["pid"])
    assert Path(f"/proc/{sup}/comm").read_text().strip() == "vbdecl-supervis"   # (15 characters)
    assert _cmdline(sup) == f"vbdecl-supervise: {live.name} process (instance {live.instance})"
    assert _ppid(sup) == pid
    assert all(line.endswith(":/") for line in Path(f"/proc/{sup}/cgroup").read_text().splitlines())
    out = live.vbdecl("logs", live.name)
    assert out.returncode == 0 and out.stdout.splitlines() == ["started", "err"]
    out = live.vbdecl("--json", "logs", live.name)      # (--json: every command that reports)
    assert [json.loads(line) for line in out.stdout.splitlines()] == [
        {"event": "log", "line": "started"}, {"event": "log", "line": "err"}]
    out = live.vbdecl("--json", "exec", live.name, "--", "/no/such/command")
    assert out.returncode == 127 and "error: " in out.stderr
    assert json.loads(out.stdout.splitlines()[-1])["error"]["exit_code"] == 127


def _cmdline(pid: int) -> str:
    """What ps shows of ``pid`` (a live environment's process: not the apply's)."""
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()


def _capabilities(pid: int) -> tuple[int, int, int]:
    """CapPrm, CapEff, CapInh of a live init, once it has dropped them: an init forked
    into a pid namespace does so right after the apply learnt its pid."""
    deadline = time.monotonic() + 5
    while True:
        status = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        caps = int(status["CapPrm"], 16), int(status["CapEff"], 16), int(status["CapInh"], 16)
        if caps == (0, 0, 0) or time.monotonic() > deadline:
            return caps
        time.sleep(0.01)


def test_a_live_init_without_a_pid_namespace_keeps_no_capabilities(tmp_path: Path) -> None:
    """There the first child itself is the init (no fork into a pid namespace)."""
    spec = copy.deepcopy(SPEC)
    spec["namespaces"]["pid"] = False
    env = Live(tmp_path / "state", spec)
    try:
        env.env = op_for("env.namespaces").apply(
            env.ctx, {k: spec[k] for k in ("namespaces", "idmap", "hostname")})
        pid = env.env["pid"]
        assert Path(f"/proc/{pid}/comm").read_text().strip() == "vbdecl-init"
        assert _cmdline(pid) == f"vbdecl-init: {env.name} (instance {env.instance})"
        assert _capabilities(pid) == (0, 0, 0)
        status = Path(f"/proc/{pid}/status").read_text()
        assert "NoNewPrivs:\t1\n" in status and "CapBnd:\t0000000000000000\n" in status
        spared = "-1000\n" if may_lower_oom_score() else "0\n"
        assert Path(f"/proc/{pid}/oom_score_adj").read_text() == spared
    finally:
        env.down()


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_logs_follow_ends_when_the_process_exits_and_status_shows_its_code(tmp_path: Path) -> None:
    """`logs -f` ends (exit 0) once the process has exited and its output is printed,
    as `docker logs -f` does, while the environment stays; `status` says how it ended."""
    spec = copy.deepcopy(SPEC)
    spec["process"]["command"] = ["/bin/sh", "-c", "echo one; sleep 0.5; echo two; exit 3"]
    env = Live(tmp_path / "state", spec)
    env.up()
    try:
        assert env.proc is not None
        before = time.time()
        follow = subprocess.run([VBDECL, "--state-dir", str(env.state), "logs", "-f", env.name],
                                capture_output=True, text=True, timeout=20)
        assert (follow.returncode, follow.stdout) == (0, "one\ntwo\n"), follow.stderr
        assert env.env is not None and Path(f"/proc/{env.env['pid']}").exists()   # still up
        out = env.vbdecl("--json", "status", env.name)
        assert out.returncode == 0, out.stderr
        proc = next(r for r in json.loads(out.stdout)["resources"] if r["id"] == "process")
        assert (proc["status"], proc["exit_code"]) == ("exited", 3)
        assert before - 1 < proc["exited_at"] <= time.time()
        text = env.vbdecl("status", env.name).stdout
        assert "exited with code 3 at " in text, text
        # killed by a signal: 128 + N, and the signal
        env.down()
        spec["process"]["command"] = ["/bin/sh", "-c", "kill -KILL $$"]
        env = Live(tmp_path / "state2", spec)
        env.up()
        assert env.vbdecl("logs", "-f", env.name).returncode == 0
        text = env.vbdecl("status", env.name).stdout
        assert "killed by SIGKILL (code 137) at " in text, text
        # its supervisor killed first (root inside may, without a user namespace): no one
        # recorded the code, which status says instead of a bare "exited"
        env.down()
        spec["process"]["command"] = ["/bin/sh", "-c", "kill -KILL $PPID; exec sleep 30"]
        env = Live(tmp_path / "state3", spec)
        env.up()
        deadline = time.monotonic() + 15     # (still running: its end will go unrecorded)
        while "ok; its supervisor was killed: no one will record how it ends" not in \
                (text := env.vbdecl("status", env.name).stdout):
            assert time.monotonic() < deadline, text
            time.sleep(0.1)
        assert env.proc is not None
        os.kill(env.proc["pid"], signal.SIGTERM)
        assert env.vbdecl("logs", "-f", env.name).returncode == 0
        deadline = time.monotonic() + 15
        while "exited, with a code no one recorded (its supervisor was killed first)" not in \
                (text := env.vbdecl("status", env.name).stdout):
            assert time.monotonic() < deadline, text
            time.sleep(0.1)
        proc = next(r for r in json.loads(env.vbdecl("--json", "status", env.name).stdout)["resources"]
                    if r["id"] == "process")
        assert proc["supervisor_gone"] is True and "exit_code" not in proc
    finally:
        env.down()


def test_exec_sees_the_same_namespaces_mounts_env_and_cwd(live: Live) -> None:
    assert live.env is not None
    pid = live.env["pid"]
    script = ("for n in mnt pid net uts ipc; do stat -L -c %i /proc/self/ns/$n; done; "
              "hostname; echo $LIVE_VAR; pwd; echo $$; cat /proc/self/mountinfo | wc -l")
    out = live.vbdecl("exec", live.name, "--", "/bin/sh", "-c", script)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split()
    want = [os.stat(f"/proc/{pid}/ns/{n}").st_ino for n in ("mnt", "pid", "net", "uts", "ipc")]
    assert [int(x) for x in lines[:5]] == want
    assert lines[5:8] == ["livebox", "yes", "/"]
    assert int(lines[8]) > 2          # a pid inside the environment's pid namespace
    with open(f"/proc/{pid}/mountinfo") as f:
        assert int(lines[9]) == len(f.read().splitlines())


def test_exec_exit_codes_and_cwd(live: Live) -> None:
    assert live.vbdecl("exec", live.name, "--", "/bin/sh", "-c", "exit 42").returncode == 42
    r = live.vbdecl("exec", live.name, "--", "no-such-cmd-vbdecl")
    assert r.returncode == 127 and "command not found" in r.stderr
    assert "or fix the command after --" in r.stderr
    r = live.vbdecl("exec", "--cwd", "/usr", live.name, "--", "/bin/pwd")
    assert r.returncode == 0 and r.stdout.strip() == "/usr"
    r = live.vbdecl("exec", "--cwd", "/no-such-dir", live.name, "--", "/bin/pwd")
    assert r.returncode == 125 and "cannot change to /no-such-dir (--cwd): No such file" in r.stderr, r.stderr
    assert "give --cwd a directory" in r.stderr and "process.cwd" not in r.stderr
    r = live.vbdecl("exec", "no-such-env", "--", "true")
    assert r.returncode == 125 and "environment 'no-such-env' does not exist" in r.stderr


def test_destroy_stops_everything(tmp_path: Path) -> None:
    env = Live(tmp_path / "state", copy.deepcopy(SPEC))
    env.up()
    assert env.env is not None and env.proc is not None
    init_pid, proc_pid, pins = env.env["pid"], env.proc["pid"], list(env.env["pins"].values())
    env.down()
    for pid in (init_pid, proc_pid):
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    mountinfo = Path("/proc/self/mountinfo").read_text()
    assert not any(p in mountinfo for p in pins)
    assert not (tmp_path / "state" / "run" / env.instance).exists()
    # idempotent
    op_for("env.namespaces").revert(env.ctx, {"pid": init_pid, "start_time": 1, "pins": {},
                                              "runtime_dir": str(tmp_path / "nothing")})
    r = env.vbdecl("exec", env.name, "--", "true")
    assert r.returncode == 125 and "not running" in r.stderr


def test_live_lock_file_held_by_the_init(tmp_path: Path) -> None:
    import fcntl

    spec = copy.deepcopy(SPEC)
    lock = tmp_path / "live.lock"
    spec["status"]["lock_file"] = str(lock)
    env = Live(tmp_path / "state", spec)
    env.up()
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    finally:
        env.down()
    fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def test_logs_follow_until_the_environment_stops(tmp_path: Path) -> None:
    import threading

    spec = copy.deepcopy(SPEC)
    spec["process"]["command"] = ["/bin/sh", "-c", "i=0; while :; do echo line$i; i=$((i+1)); sleep 0.05; done"]
    env = Live(tmp_path / "state", spec)
    env.up()
    lines: list[str] = []
    follower = subprocess.Popen([VBDECL, "--state-dir", str(env.state), "logs", "-f", env.name],
                                stdout=subprocess.PIPE, text=True)
    reader = threading.Thread(target=lambda: lines.extend(follower.stdout or []))
    reader.start()
    try:
        deadline = time.monotonic() + 10
        while len(lines) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(lines) >= 5 and lines[0] == "line0\n"
    finally:
        env.down()
    assert follower.wait(timeout=10) == 0
    reader.join()
    numbers = [int(x[4:]) for x in lines]
    assert numbers == list(range(len(numbers)))     # in order, nothing lost or repeated


def test_exec_without_command_runs_a_shell(live: Live) -> None:
    r = subprocess.run([VBDECL, "--state-dir", str(live.state), "exec", live.name],
                       input="echo shell $$; exit 5\n", capture_output=True, text=True, timeout=30)
    assert r.returncode == 5 and r.stdout.startswith("shell ")


def test_live_process_events(tmp_path: Path) -> None:
    spec = copy.deepcopy(SPEC)
    events = tmp_path / "events.jsonl"
    spec["status"]["events"] = str(events)
    spec["process"]["command"] = ["/bin/sh", "-c",
                                  "trap 'exit 7' TERM; echo ready; while :; do sleep 0.05; done"]
    env = Live(tmp_path / "state", spec)
    env.up()
    try:
        assert "ready" in wait_log(env.env_dir / "logs" / "process.log", "ready")
        assert env.proc is not None and env.env is not None
        proc_pid, init_pid = env.proc["pid"], env.env["pid"]
        first = [json.loads(x) for x in events.read_text().splitlines()]
        assert [e["event"] for e in first] == ["runtime_init_warnings", "spawned", "setup_finished"]
        assert first[1]["pid"] == proc_pid
        assert first[1]["ns"]["pid"] == os.stat(f"/proc/{init_pid}/ns/pid").st_ino
    finally:
        env.down()        # SIGTERM to the process: it exits 7
    evs = [json.loads(x) for x in events.read_text().splitlines()]
    assert [e["event"] for e in evs] == ["runtime_init_warnings", "spawned", "setup_finished", "exited"]
    assert evs[3]["pid"] == proc_pid and evs[3]["exit_code"] == 7
    assert evs[3]["ns"] == evs[1]["ns"]


@contextlib.contextmanager
def applied(tmp_path: Path, spec_tail: str = "") -> Iterator[tuple[str, Any]]:
    """A live environment applied through the CLI from a manifest with a root of its
    own (testmanifests.head) and ``spec_tail``; yields its name and a CLI runner."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from testmanifests import head

    name = "jx-" + os.urandom(3).hex()
    manifest = tmp_path / "m.yaml"
    manifest.write_text(head(name, template=False) + "  process: {command: [sleep, '300']}\n" + spec_tail)
    sd = str(tmp_path / "state")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([VBDECL, "--state-dir", sd, *args], capture_output=True, text=True, timeout=60)

    out = cli("apply", "-y", str(manifest))
    assert out.returncode == 0, out
    try:
        yield name, cli
    finally:
        assert cli("destroy", "-y", name).returncode == 0


def test_exec_json_error_from_inside_an_environment_with_its_own_root(tmp_path: Path) -> None:
    """A review: `vbdecl --json exec ENV -- no-such-command` in an environment with a root
    of its own ended in a traceback (ModuleNotFoundError: vbdecl.cli.main): exec reports
    once it has entered the environment's mounts, where vbdecl's files are out of sight."""
    with applied(tmp_path) as (name, cli):
        for args in (("--json", "exec", name, "--", "no-such-cmd-vbdecl"), ("exec", "--json", name, "--", "/x")):
            out = cli(*args)
            assert out.returncode == 127 and "Traceback" not in out.stderr, out
            assert json.loads(out.stdout.splitlines()[-1])["error"]["exit_code"] == 127


def test_a_seccomp_profile_file_is_read_on_the_host_by_apply_and_exec(tmp_path: Path) -> None:
    """A review: `security.seccomp: {profile: FILE}` worked with run, but apply (and exec)
    read the file inside the environment's root, where the host path is not."""
    (tmp_path / "p.json").write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}))
    with applied(tmp_path, "  security: {seccomp: {profile: ./p.json}}\n") as (name, cli):
        out = cli("exec", name, "--", "mkdir", "/made-here")
        assert out.returncode == 1 and "Operation not permitted" in out.stderr, out
        out = cli("exec", name, "--", "true")
        assert out.returncode == 0, out


def test_disable_userns_holds_for_a_live_process_and_exec(tmp_path: Path) -> None:
    """A security review: security.disable_userns worked for vbdecl run, but every apply
    failed: the live process wrote the sysctl inside the environment's root, whose /proc
    is read-only (a proc entry) or missing. The live process and exec now set it through
    the host's /proc, for the environment's user namespace."""
    with applied(tmp_path, "  namespaces: {user: true}\n  security: {disable_userns: true}\n") as (name, cli):
        out = cli("exec", name, "--", "/bin/sh", "-c", "unshare -U true; echo $?")
        assert out.returncode == 0 and out.stdout.strip() == "1", out
        assert "No space left on device" in out.stderr
