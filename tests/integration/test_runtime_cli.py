"""``vbdecl run FILE [-- CMD...]`` end to end: manifest -> cached plan -> sandbox -> exit status.

Every test uses a private plan cache (VBDECL_CACHE_DIR) and state dir.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from testmanifests import head

REPO = Path(__file__).resolve().parents[2]
VBDECL = str(Path(sys.executable).parent / "vbdecl")
HELLO = str(REPO / "manifests" / "hello.yaml")

MINIMAL = head('{name}') + """\
    - {{type: proc, target: /proc}}
    - {{type: dev, target: /dev}}
{extra}
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return dict(os.environ, VBDECL_CACHE_DIR=str(tmp_path / "cache"),
                VBDECL_STATE_DIR=str(tmp_path / "state"))


def vbdecl(env: dict[str, str], *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VBDECL, *args], capture_output=True, text=True, env=env, timeout=60,
                          **kw)  # type: ignore[call-overload]


def manifest(tmp_path: Path, extra: str = "", name: str = "clitest") -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(MINIMAL.format(name=name, extra=extra))
    return str(path)


def test_make_run_hello(env: dict[str, str]) -> None:
    r = vbdecl(env, "run", HELLO)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "Hello from a vbdecl sandbox!\n"


def test_the_build_manifest_fails_without_a_tree_to_build(env: dict[str, str], tmp_path: Path) -> None:
    """A UX review: manifests/build.yaml said "build ok" where /src/vbdecl was missing."""
    build = REPO / "manifests" / "build.yaml"
    r = vbdecl(env, "run", str(build))
    assert (r.returncode, r.stdout) == (0, "build ok\n"), r.stderr
    (tmp_path / "m").mkdir()
    elsewhere = tmp_path / "m" / "build.yaml"      # its tree (lower: [..]) is tmp_path
    elsewhere.write_bytes(build.read_bytes())
    r = vbdecl(env, "run", str(elsewhere))
    assert r.returncode != 0 and "build ok" not in r.stdout and "/src/vbdecl" in r.stderr, r


def test_run_command_override_and_exit_codes(env: dict[str, str], tmp_path: Path) -> None:
    m = manifest(tmp_path)
    r = vbdecl(env, "run", m, "--", "/bin/sh", "-c", "echo $$; exit 7")
    assert (r.returncode, r.stdout) == (7, "2\n")
    r = vbdecl(env, "run", m, "--", "/bin/sh", "-c", "kill -USR1 $$")
    assert r.returncode == 128 + 10
    r = vbdecl(env, "run", m, "--", "nonexistent-tool")
    assert r.returncode == 127
    assert "command not found: nonexistent-tool" in r.stderr
    assert "or fix the command after --" in r.stderr     # (not process.command: it was not used)
    r = vbdecl(env, "run", m, "--", "/proc/self/status")
    assert r.returncode == 126 and "cannot execute" in r.stderr
    assert "is a directory" not in r.stderr
    r = vbdecl(env, "run", m, "--", "/usr")      # (a new-user review: say it is a directory)
    assert r.returncode == 126 and "hint: /usr is a directory: name the program to run" in r.stderr
    r = vbdecl(env, "run", str(tmp_path / "missing.yaml"))
    assert r.returncode == 125 and "missing.yaml" in r.stderr


def test_pwd_is_the_process_cwd_not_the_callers(env: dict[str, str], tmp_path: Path) -> None:
    show = ["--", "/usr/bin/printenv", "PWD"]     # not a shell: it would fix PWD itself
    m = manifest(tmp_path)
    r = vbdecl(env, "run", m, *show, cwd=tmp_path)
    assert (r.returncode, r.stdout) == (0, "/\n"), r.stderr
    m = manifest(tmp_path, "    - {type: dir, target: /work}\n  process: {cwd: /work}", name="pwd2")
    r = vbdecl(env, "run", m, *show, cwd=tmp_path)
    assert (r.returncode, r.stdout) == (0, "/work\n"), r.stderr
    m = manifest(tmp_path, "  process: {env: {PWD: /declared}}", name="pwd3")
    r = vbdecl(env, "run", m, *show, cwd=tmp_path)
    assert (r.returncode, r.stdout) == (0, "/declared\n"), r.stderr
    m = manifest(tmp_path, "  process: {unset_env: [PWD]}", name="pwd4")
    r = vbdecl(env, "run", m, *show, cwd=tmp_path)
    assert (r.returncode, r.stdout) == (1, ""), r.stderr          # unset, as asked


def test_the_callers_locale_reaches_the_process_as_given(env: dict[str, str], tmp_path: Path) -> None:
    """Python coerces a C locale to C.UTF-8 in its own environment (PEP 538); the
    process sees what the caller had: LC_CTYPE=C, or no LC_CTYPE at all."""
    m = manifest(tmp_path)
    base = {k: v for k, v in env.items() if not k.startswith("LC_") and k not in ("LANG", "LANGUAGE")}
    r = vbdecl(dict(base, LC_CTYPE="C"), "run", m, "--", "/usr/bin/printenv", "LC_CTYPE")
    assert (r.returncode, r.stdout) == (0, "C\n"), r.stderr
    r = vbdecl(dict(base, LANG="C"), "run", m, "--", "/usr/bin/printenv", "LC_CTYPE")
    assert (r.returncode, r.stdout) == (1, ""), r.stderr


def test_default_shell_must_exist(env: dict[str, str], tmp_path: Path) -> None:
    # A root with no /bin/sh and no process.command: 127 with a clear message.
    path = tmp_path / "empty.yaml"
    path.write_text("apiVersion: vbdecl/v1\nkind: Environment\nmetadata: {name: empty}\n"
                    "spec:\n  filesystem:\n    - {type: tmpfs, target: /tmp}\n")
    r = vbdecl(env, "run", str(path))
    assert r.returncode == 127
    assert "/bin/sh does not exist" in r.stderr


def test_events_fd_and_cached_run_imports(env: dict[str, str], tmp_path: Path) -> None:
    m = manifest(tmp_path)
    assert vbdecl(env, "run", m, "--", "/bin/true").returncode == 0   # compiles, fills the cache
    code = ("import json, os, sys\n"
            "r, w = os.pipe()\n"
            "from vbdecl.cli.fast import main\n"
            f"rc = main(['run', '--events-fd', str(w), {m!r}, '--', '/bin/true'])\n"
            "os.close(w)\n"
            "events = os.read(r, 65536).decode()\n"
            "print(json.dumps({'rc': rc, 'events': events, 'modules': sorted(sys.modules)}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True).stdout
    data = json.loads(out.splitlines()[-1])
    assert data["rc"] == 0
    assert [json.loads(x)["event"] for x in data["events"].splitlines()] == [
        "runtime_init_warnings", "spawned", "setup_finished", "exited"]
    heavy = [m for m in data["modules"]
             if m.split(".")[0] in ("pydantic", "ruamel", "rich", "pyroute2", "typer", "click")]
    assert heavy == []
    assert "argparse" not in data["modules"] and "vbdecl.model.manifest" not in data["modules"]


def test_a_command_that_cannot_be_run_still_gets_its_exited_event(env: dict[str, str], tmp_path: Path) -> None:
    """A review: a run whose command was not found wrote `spawned` to status.events, and
    never `exited`; a reader waiting for it waited for good."""
    events = tmp_path / "events.jsonl"
    m = manifest(tmp_path, f"  status:\n    events: {events}")
    for command, code in (("/nonexistent", 127), ("/proc/version", 126)):
        events.unlink(missing_ok=True)
        r = vbdecl(env, "run", m, "--", command)
        assert r.returncode == code, r.stderr
        said = [json.loads(line) for line in events.read_text().splitlines()]
        assert [e["event"] for e in said] == ["runtime_init_warnings", "spawned", "exited"], said
        assert said[-1]["exit_code"] == code and said[-1]["pid"] == said[1]["pid"]


def _cgroup_dirs() -> set[str]:
    found = set()
    for top in Path("/sys/fs/cgroup").iterdir():
        try:     # a run of another test worker may remove vbdecl/ as we list it
            found |= {str(p) for p in (top / "vbdecl").iterdir() if p.is_dir()}
        except (FileNotFoundError, NotADirectoryError):
            pass
    return found


def test_run_executes_host_actions_and_reverts_them(env: dict[str, str], tmp_path: Path) -> None:
    m = manifest(tmp_path, "  limits: {pids: 32}")
    r = vbdecl(env, "run", m, "--", "/bin/sh", "-c", "grep pids /proc/self/cgroup")
    assert r.returncode == 0, r.stderr
    assert "/vbdecl/vb-" in r.stdout
    instance = r.stdout.strip().rsplit("/", 1)[1]
    assert not any(instance in d for d in _cgroup_dirs())     # removed after the run


def test_host_action_failure_is_rolled_back(env: dict[str, str], tmp_path: Path) -> None:
    m = manifest(tmp_path, "  limits: {pids: 32, memory: 64Mi}")
    before = _cgroup_dirs()
    r = vbdecl(dict(env, VBDECL_FAULT="cgroup.pids"), "run", m, "--", "/bin/echo", "never")
    assert r.returncode == 125
    assert "cgroup.pids" in r.stderr and "never" not in r.stdout
    assert _cgroup_dirs() == before


def _wait_until(cond: object, timeout: float = 10.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("die_with_parent", [True, False])
def test_sigkilled_run_leaks_no_host_objects(env: dict[str, str], tmp_path: Path,
                                             die_with_parent: bool) -> None:
    import signal
    import time

    ready = tmp_path / "ready"
    stop = tmp_path / "stop"
    extra = (f"    - {{type: bind, source: {tmp_path}, target: {tmp_path}}}\n"
             f"  limits: {{pids: 32}}\n"
             f"  process:\n    die_with_parent: {str(die_with_parent).lower()}")
    m = manifest(tmp_path, extra)
    before = _cgroup_dirs()
    proc = subprocess.Popen([VBDECL, "run", m, "--", "/bin/sh", "-c",
                             f"touch {ready}; while [ ! -e {stop} ]; do sleep 0.05; done"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert _wait_until(ready.exists)
        mine = _cgroup_dirs() - before
        assert len({Path(d).name for d in mine}) == 1     # one instance (in each hierarchy used)
        proc.send_signal(signal.SIGKILL)     # no cleanup code of vbdecl runs
        proc.wait()
        if not die_with_parent:
            time.sleep(0.5)
            assert _cgroup_dirs() - before == mine   # the sandbox still runs in its cgroup
            stop.touch()
        assert _wait_until(lambda: not (_cgroup_dirs() & mine))
    finally:
        stop.touch()
        proc.kill()
        proc.wait()
        _wait_until(lambda: not (_cgroup_dirs() - before))



def test_a_failed_revert_of_a_run_is_tried_again_by_its_janitor(env: dict[str, str], tmp_path: Path) -> None:
    """A review: a run's revert that failed was reported to the janitor as done, so
    its cgroup stayed (and the hint said to run recover, which found nothing).
    Another: the failure made the run exit 125, "vbdecl failed before the process
    started", after the process had run; its code is the run's, the failure is told."""
    before = _cgroup_dirs()
    m = manifest(tmp_path, "  limits: {pids: 32}")
    for fault in ("cgroup:revert", "cgroup.pids:revert"):
        for code in (0, 3):
            r = vbdecl({**env, "VBDECL_FAULT": fault}, "run", m, "--", "/bin/sh", "-c", f"echo ran; exit {code}")
            assert (r.returncode, r.stdout) == (code, "ran\n"), r.stderr
            assert f"error: {fault.split(':')[0]}: injected revert fault" in r.stderr, r.stderr
            assert "recover" not in r.stderr.replace("vbdecl recover cannot", ""), r.stderr
            assert "hint: vbdecl's janitor reverted it again once the sandbox was gone: nothing of " \
                   "the run is left on the host" in r.stderr, r.stderr
            assert _cgroup_dirs() == before


def test_vbdecl_fault_fails_a_run_at_the_action_it_names(env: dict[str, str], tmp_path: Path) -> None:
    """A review: VBDECL_FAULT was ignored by `vbdecl run` for every action but cgroup.*
    (the child builds the root in one go), and an id not in the plan was ignored
    silently. The run fails at the named step as a real failure there would (exit 125,
    the process never runs, its host actions torn down); an unknown id is a warning."""
    before = _cgroup_dirs()
    m = manifest(tmp_path, "    - {type: tmpfs, target: /tmp}\n  limits: {pids: 32}")
    for fault in ("env", "rootfs", "mount[/proc]", "mount[/tmp]", "net.loopback", "process",
                  "cgroup.pids"):
        r = vbdecl({**env, "VBDECL_FAULT": f"nope,{fault}"}, "run", m, "--", "/bin/sh", "-c", "echo ran")
        assert (r.returncode, r.stdout) == (125, ""), (fault, r.stderr)
        assert f"error: {fault}: injected fault (VBDECL_FAULT)" in r.stderr, r.stderr
        assert "VBDECL_FAULT names nope: not an action of clitest's plan" in r.stderr, r.stderr
        assert _cgroup_dirs() == before
    r = vbdecl({**env, "VBDECL_FAULT": "mount[/nope],mount[/tmp]:revert"}, "run", m, "--", "/bin/sh", "-c",
               "echo ran")
    assert (r.returncode, r.stdout) == (0, "ran\n"), r.stderr
    assert "warning: VBDECL_FAULT names mount[/nope]: not an action of clitest's plan" in r.stderr
    assert "VBDECL_FAULT names mount[/tmp]:revert: a run does not revert that action" in r.stderr
    assert "error" not in r.stderr, r.stderr


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _tree(pid: int) -> set[int]:
    """``pid`` and its descendants."""
    out, todo = {pid}, [pid]
    while todo:
        cur = todo.pop()
        try:
            for task in os.listdir(f"/proc/{cur}/task"):
                kids = {int(k) for k in Path(f"/proc/{cur}/task/{task}/children").read_text().split()}
                todo += list(kids - out)
                out |= kids
        except OSError:
            pass
    return out


def test_die_with_parent_when_the_caller_of_vbdecl_dies(env: dict[str, str], tmp_path: Path) -> None:
    """die_with_parent (the default): when the program that started `vbdecl run` dies, the
    sandbox dies with it, and vbdecl itself tears down what it set up (its cgroup here)
    and reports the exit. vbdecl used to go on running, orphaned, with the sandbox."""
    from vbdecl.sys.proc import cgroup_paths

    out = tmp_path / "out"
    out.mkdir()
    events = tmp_path / "events"
    m = manifest(tmp_path, f"""\
    - {{type: bind, source: {out}, target: /out}}
  limits: {{pids: 64}}
  status: {{events: {events}}}
  process:
    command: [/bin/sh, -c, "sleep 60 & touch /out/ready; wait"]""")
    caller = subprocess.Popen(["/bin/sh", "-c", f"{VBDECL} run {m} >/dev/null 2>&1 & echo $!; wait"],
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert caller.stdout is not None
        vbdecl_pid = int(caller.stdout.readline())
        deadline = time.monotonic() + 10
        while not (out / "ready").exists():
            assert time.monotonic() < deadline, "the sandbox never started"
            time.sleep(0.01)
        tree = _tree(vbdecl_pid)
        assert len(tree) >= 4       # vbdecl, its init, sh, sleep
        groups = {path for pid in tree - {vbdecl_pid} for path in cgroup_paths(pid)
                  if "/vbdecl/" in path}
        assert groups
    finally:
        caller.kill()
        caller.wait()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in tree) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not [p for p in tree if _alive(p)]
    # vbdecl tore the run down itself (no janitor writes events): it saw the exit, and the
    # cgroup is gone
    assert [json.loads(line)["event"] for line in events.read_text().splitlines()][-1] == "exited"
    assert not [g for g in groups if Path(g).exists()]


def test_a_program_whose_interpreter_is_missing_is_126_and_says_why(env: dict[str, str],
                                                                    tmp_path: Path) -> None:
    """execve says ENOENT for a file that exists when its #! interpreter (or an ELF file's
    dynamic loader) is not in the root: not "command not found" (127), but 126 with the
    interpreter named; vb keeps bubblewrap's words."""
    progs = tmp_path / "progs"
    progs.mkdir()
    (progs / "script").write_text("#!/no/such/interp\necho hi\n")
    (progs / "script").chmod(0o755)
    m = tmp_path / "m.yaml"
    m.write_text(head("interp", template=False) + f"    - {{type: ro-bind, source: {progs}, target: /p}}\n")
    r = vbdecl(env, "run", str(m), "--", "/p/script")
    assert r.returncode == 126, r.stderr
    assert "cannot execute /p/script: No such file or directory" in r.stderr
    assert "its interpreter /no/such/interp (the #! line) is not in the environment's root" in r.stderr
    vb = subprocess.run([str(Path(VBDECL).with_name("vb")), "--ro-bind", str(progs), "/p", "/p/script"],
                        capture_output=True, text=True, timeout=60)
    assert (vb.returncode, vb.stderr) == (1, "vb: execvp /p/script: No such file or directory\n")



def test_run_with_json_ends_a_failure_with_its_json_error_line(env: dict[str, str], tmp_path: Path) -> None:
    """--json on every command that reports something: run and exec printed their
    errors as text only (a contract review)."""
    r = vbdecl(env, "--json", "run", manifest(tmp_path), "--", "/no/such/command")
    assert r.returncode == 127 and "error: " in r.stderr
    last = json.loads(r.stdout.splitlines()[-1])
    assert last["event"] == "error" and last["error"]["exit_code"] == 127
    assert "/no/such/command" in last["error"]["message"]
    r = vbdecl(env, "--json", "exec", "no-such-env-vbt", "--", "true")
    assert r.returncode == 125 and json.loads(r.stdout.splitlines()[-1])["event"] == "error"
    # a run whose process ran (exit 3) and whose teardown failed: the JSON says 3 too
    r = vbdecl({**env, "VBDECL_FAULT": "cgroup.pids:revert"}, "--json", "run",
               manifest(tmp_path, "  limits: {pids: 32}"), "--", "/bin/sh", "-c", "exit 3")
    assert r.returncode == 3 and json.loads(r.stdout.splitlines()[-1])["error"]["exit_code"] == 3, r.stderr
    # several teardown failures: still one error line, each failure in its problems
    r = vbdecl({**env, "VBDECL_FAULT": "cgroup.pids:revert,cgroup.memory:revert"}, "--json", "run",
               manifest(tmp_path, "  limits: {pids: 32, memory: 64Mi}"), "--", "/bin/sh", "-c", "exit 3")
    errors = [json.loads(line) for line in r.stdout.splitlines() if line.startswith('{"event": "error"')]
    assert r.returncode == 3 and len(errors) == 1, r.stdout + r.stderr
    assert {p["where"] for p in errors[0]["error"]["problems"]} == {"cgroup.pids", "cgroup.memory"}, errors
    assert r.stderr.count("error: ") == 2, r.stderr


def test_a_failed_entry_says_why_in_words_not_pythons(env: dict[str, str], tmp_path: Path) -> None:
    m = tmp_path / "m.yaml"
    m.write_text(head("rofs", template=False) + "    - {type: tmpfs, target: /usr/no-such-dir}\n")
    r = vbdecl(env, "run", str(m), "--", "/bin/true")
    assert r.returncode == 125
    assert "mount[/usr/no-such-dir]: tmpfs /usr/no-such-dir: Read-only file system (EROFS)" in r.stderr
    assert "[Errno" not in r.stderr and "hint: the target's parent is read-only" in r.stderr


def test_a_refused_overlay_says_which_step_failed_and_the_usual_causes(env: dict[str, str],
                                                                       tmp_path: Path) -> None:
    """An overlay whose work directory is on another filesystem than its upper: the
    error said ``creating a overlay mount: fsconfig(None=None): Invalid argument``
    (a review), with no hint. (The other filesystem is a tmpfs mounted in a mount
    namespace of the test's own: the host's mounts stay as they are.)"""
    for d in ("lower", "upper", "other"):
        (tmp_path / d).mkdir()
    m = tmp_path / "m.yaml"
    m.write_text(head("ovlrefused", template=False) + (
        f"    - {{type: overlay, target: /srv, lower: [{tmp_path}/lower], upper: {tmp_path}/upper,"
        f" work: {tmp_path}/other/work}}\n"))
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                        'mount -t tmpfs tmpfs "$1" && shift && exec "$@"', "sh", str(tmp_path / "other"),
                        VBDECL, "run", str(m), "--", "/bin/true"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 125, r.stderr
    assert "None" not in r.stderr and "a overlay" not in r.stderr
    assert "mount[/srv]: overlay /srv: creating an overlay mount: the kernel refused its options" in r.stderr
    assert "(EINVAL)" in r.stderr
    assert "hint: overlayfs refused these layers: the upper and work directories must be on the same " \
        "filesystem" in r.stderr and "kernel log" in r.stderr


def test_vb_mqueue_without_its_own_ipc_namespace_hints_at_unshare_ipc(env: dict[str, str]) -> None:
    """In a user namespace mqueue mounts only in an ipc namespace it owns: `vbdecl run`
    said so, vb printed the bare EPERM (a review). vb gives its hint in its options."""
    vb = str(Path(VBDECL).parent / "vb")
    base = ["--unshare-user", "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib",
            "--symlink", "usr/lib64", "/lib64", "--mqueue", "/dev/mqueue"]
    r = subprocess.run([vb, *base, "/usr/bin/true"], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert lines[0].startswith("vb: mount[/dev/mqueue]: mqueue /dev/mqueue: creating a")
    assert "the kernel refused its options" in lines[0] and "(EPERM)" in lines[0]
    assert lines[1:] == ["vb: hint: mounting mqueue needs the sandbox's own ipc namespace: add --unshare-ipc"]
    r = subprocess.run([vb, "--unshare-ipc", *base, "/usr/bin/true"], capture_output=True, text=True,
                       env=env, timeout=60)
    assert (r.returncode, r.stderr) == (0, "")


def test_joining_a_user_namespace_where_the_ids_are_not_mapped_hints_at_process_user(
        env: dict[str, str], tmp_path: Path) -> None:
    """Joining a user namespace that does not map 0, with no process.user: the error was
    the bare "setresgid(0, 0, 0): Invalid argument" (a review); a namespace vbdecl makes
    is checked against idmap before, a joined one cannot be."""
    holder = subprocess.Popen(["unshare", "--user", "--map-user=1000", "--map-group=1000",
                               "sleep", "60"])
    try:
        ns = f"/proc/{holder.pid}/ns/user"
        assert _wait_until(lambda: Path(f"/proc/{holder.pid}/uid_map").read_text().split()[:1] == ["1000"])
        m = tmp_path / "m.yaml"
        m.write_text(head("joinunmapped", template=False) + f"  namespaces: {{user: {{join: {ns}}}}}\n")
        r = vbdecl(env, "run", str(m), "--", "/bin/true")
        assert r.returncode == 125
        assert "error: setresgid(0, 0, 0): Invalid argument (EINVAL)\n" in r.stderr
        assert f"hint: gid 0 is not mapped in the joined user namespace ({ns}): set process.user and " \
            f"process.group to ids mapped there (/proc/{holder.pid}/gid_map lists them" in r.stderr
        m.write_text(m.read_text() + "  process: {user: 1000, group: 1000}\n")
        r = vbdecl(env, "run", str(m), "--", "/bin/true")
        assert r.returncode == 0, r.stderr
    finally:
        holder.kill()
        holder.wait()


def _listing(d: Path) -> list[tuple[str, str]]:
    """What is under ``d``: paths with their kind and mode."""
    return sorted((str(p.relative_to(d)), f"{p.lstat().st_mode:o}") for p in [d, *d.rglob("*")])


def test_the_hosts_device_nodes_of_a_dev_entry_cannot_be_changed(env: dict[str, str], tmp_path: Path) -> None:
    """A security review: /dev/null, /dev/full and the others are binds of the host's
    own nodes (and /dev/console of the caller's terminal), which root inside could
    chmod, chown and touch on the host. Their mounts are read-only now; reading and
    writing them works as before."""
    nodes = [Path("/dev") / n for n in ("null", "zero", "full", "tty")]
    before = [(p.stat().st_mode, p.stat().st_uid, p.stat().st_mtime_ns) for p in nodes]
    script = ("echo x > /dev/null && head -c 4 /dev/zero | wc -c && for n in null zero full tty; do "
              "chmod 600 /dev/$n || chown 1:1 /dev/$n || touch -d 2001-01-01 /dev/$n || echo refused; done")
    try:
        r = vbdecl(env, "run", manifest(tmp_path), "--", "/bin/sh", "-c", script)
        assert (r.returncode, r.stdout) == (0, "4\n" + "refused\n" * 4), r.stderr
        assert [(p.stat().st_mode, p.stat().st_uid, p.stat().st_mtime_ns) for p in nodes] == before
    finally:     # (should the run have changed them: as they were)
        for p, (mode, uid, mtime) in zip(nodes, before, strict=True):
            st = p.stat()
            if (st.st_mode, st.st_uid, st.st_mtime_ns) != (mode, uid, mtime):
                os.chown(p, uid, st.st_gid)
                p.chmod(mode & 0o7777)
                os.utime(p, ns=(st.st_atime_ns, mtime))


@pytest.mark.parametrize("entry", ["bind", "file", "overlay", "bind-through-an-alias"])
def test_a_link_the_sandbox_put_in_its_writable_bind_does_not_redirect_a_source(
        env: dict[str, str], tmp_path: Path, entry: str) -> None:
    """A security review: a sandbox replaced, in its writable bind, the source of a
    later bind (or of a file entry, an overlay's upper directory) with a link to a
    host directory the manifest does not give it (the host's /etc): the next run
    bound it read-write (or copied the file in). Below a directory the sandbox may
    write, no link is followed, whatever the path's spelling (a second review went
    through a link of root's to the same directory)."""
    shared, secret, lower = tmp_path / "shared", tmp_path / "secret", tmp_path / "lower"
    for d in (shared / "data", shared / "upper", shared / "work", secret, lower):
        d.mkdir(parents=True)
    (shared / "app.conf").write_text("conf\n")
    (secret / "key").write_text("secret\n")
    (tmp_path / "alias").symlink_to(tmp_path)
    extra = f"    - {{type: bind, source: {shared}, target: /shared}}\n" + {
        "bind": f"    - {{type: bind, source: {shared}/data, target: /data}}\n",
        "bind-through-an-alias": f"    - {{type: ro-bind, source: {tmp_path}/alias/shared/data, target: /data}}\n",
        "file": f"    - {{type: file, target: /conf, source: {shared}/app.conf}}\n",
        "overlay": f"    - {{type: overlay, lower: [{lower}], upper: {shared}/upper, work: {shared}/work, "
                   "target: /data}\n"}[entry]
    m = manifest(tmp_path, extra)
    plant = {"file": f"rm /shared/app.conf && ln -s {secret}/key /shared/app.conf",
             "overlay": f"rm -r /shared/upper && ln -s {secret} /shared/upper"}.get(
                 entry, f"rmdir /shared/data && ln -s {secret} /shared/data")
    r = vbdecl(env, "run", m, "--", "/bin/sh", "-c", plant)
    assert r.returncode == 0, r.stderr
    r = vbdecl(env, "run", m, "--", "/bin/sh", "-c", "cat /data/key /conf 2>/dev/null")
    assert (r.returncode, r.stdout) == (125, ""), r.stdout
    assert "is in a directory the sandbox may write" in r.stderr, r.stderr
    assert list(secret.iterdir()) == [secret / "key"]


def test_a_link_the_sandbox_put_in_its_writable_bind_does_not_widen_a_landlock_rule(
        env: dict[str, str], tmp_path: Path) -> None:
    """A security review: with read: [/data/pub] and /data writable, a run replaced
    /data/pub with a link to /, and the next run's rule granted reading all of the
    root (a bound secret included). Below a writable bind no link is followed to a
    rule's path: that run fails."""
    data, secret = tmp_path / "data", tmp_path / "secret"
    (data / "pub").mkdir(parents=True)
    secret.mkdir()
    (secret / "key").write_text("secret\n")
    m = manifest(tmp_path, f"""\
    - {{type: bind, source: {data}, target: /data}}
    - {{type: ro-bind, source: {secret}, target: /secret}}
  security:
    landlock: {{execute: [/usr], read: [/usr, /proc, /dev, /data/pub], read_write: [/data]}}
""")
    r = vbdecl(env, "run", m, "--", "/bin/sh", "-c", "cat /secret/key; rmdir /data/pub && ln -s / /data/pub")
    assert (r.returncode, r.stdout) == (0, ""), r.stderr
    r = vbdecl(env, "run", m, "--", "/bin/sh", "-c", "cat /secret/key")
    assert (r.returncode, r.stdout) == (125, ""), r.stdout
    assert "security.landlock.read[3]: '/data/pub' inside the environment" in r.stderr \
        and "follows no symlink below" in r.stderr


def test_a_writable_binds_subdirectory_bound_again_does_not_widen_a_landlock_rule(
        env: dict[str, str], tmp_path: Path) -> None:
    """A review of the rule above: a subdirectory of the writable bind, bound again
    read-only elsewhere, was not fenced inside the environment, and a link planted
    through the writable bind turned the rule read: [/sub/pub] into /."""
    data, secret = tmp_path / "data", tmp_path / "secret"
    (data / "sub" / "pub").mkdir(parents=True)
    secret.mkdir()
    (secret / "key").write_text("secret\n")
    m = manifest(tmp_path, f"""\
    - {{type: bind, source: {data}, target: /data}}
    - {{type: ro-bind, source: {data}/sub, target: /sub}}
    - {{type: ro-bind, source: {secret}, target: /secret}}
  security:
    landlock: {{execute: [/usr], read: [/usr, /proc, /dev, /sub/pub], read_write: [/data]}}
""")
    r = vbdecl(env, "run", m, "--", "/bin/sh", "-c", "rmdir /data/sub/pub && ln -s / /data/sub/pub")
    assert r.returncode == 0, r.stderr
    r = vbdecl(env, "run", m, "--", "/bin/sh", "-c", "cat /secret/key")
    assert (r.returncode, r.stdout) == (125, ""), r.stdout
    assert "security.landlock.read[3]: '/sub/pub' inside the environment" in r.stderr \
        and "follows no symlink below" in r.stderr


def test_a_rootfs_below_a_writable_bind_is_reached_through_no_link(env: dict[str, str], tmp_path: Path) -> None:
    """A review: the rootfs was opened following links, so one the sandbox could put
    in its writable bind (here the test puts it there) chose the next run's root."""
    shared, elsewhere = tmp_path / "shared", tmp_path / "elsewhere"
    shared.mkdir()
    elsewhere.mkdir()
    (shared / "root").symlink_to(elsewhere)
    m = tmp_path / "rootfs.yaml"
    m.write_text(f"""\
apiVersion: vbdecl/v1
kind: Environment
metadata:
  name: rootfs-link
spec:
  rootfs: {shared}/root
  filesystem:
    - {{type: bind, source: {shared}, target: /mnt}}
""")
    r = vbdecl(env, "run", str(m), "--", "/bin/true")
    assert r.returncode == 125 and "is in a directory the sandbox may write" in r.stderr, r.stderr
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("key", ["lock_file", "events"])
def test_a_status_file_is_not_opened_through_a_symlink(env: dict[str, str], tmp_path: Path, key: str) -> None:
    """status.lock_file (truncated, then the pid written) and status.events (appended
    to) may be in a directory the sandbox writes: a link it put there named any host
    file, which vbdecl, as root, truncated or appended to."""
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    (tmp_path / "status").symlink_to(victim)
    m = manifest(tmp_path, f"  status:\n    {key}: {tmp_path}/status\n")
    r = vbdecl(env, "run", m, "--", "/bin/true")
    assert r.returncode == 125 and "not a symlink" in r.stderr, r.stderr
    assert victim.read_text() == "keep me\n"


THROUGH_A_BIND = """\
    - {{type: bind, source: {data}, target: /data}}
    - {{type: dir, target: /data/sub/deeper}}
    - {{type: file, target: /data/f, content: "x"}}
    - {{type: symlink, target: /data/l, points_to: /nowhere}}
    - {{type: tmpfs, target: /data/t}}
    - {{type: ro-bind, source: /etc/hostname, target: /data/a/h}}
    - {{type: chmod, target: /data, mode: "0700"}}
    - {{type: dir, target: /data/keep, mode: "0711"}}
"""


@pytest.mark.parametrize("fails", [False, True], ids=["ran", "failed-setup"])
def test_a_run_leaves_the_host_as_it_found_it(env: dict[str, str], tmp_path: Path, fails: bool) -> None:
    """What a run's root makes through a bind (directories, files, links, mount
    points, modes) is the host's: `vbdecl run` left it all there (an apply's
    destroy removes it). Now it is undone once the sandbox is gone, or when the
    setup fails; what the process itself wrote stays. vb leaves it, as bubblewrap."""
    data = tmp_path / "data"
    (data / "keep").mkdir(parents=True)
    data.chmod(0o755)
    (data / "keep").chmod(0o755)
    before = _listing(data)
    extra = THROUGH_A_BIND.format(data=data)
    if fails:
        extra += "    - {type: bind, source: /nonexistent-vbdecl-test, target: /data/zz/nope}\n"
    m = manifest(tmp_path, extra)
    r = vbdecl(env, "run", m, "--", "/bin/sh", "-c", "ls /data/sub /data/t >/dev/null && echo out > /data/out")
    assert r.returncode == (125 if fails else 0), r.stderr
    after = [entry for entry in _listing(data) if entry[0] != "out"]
    assert after == before
    assert (data / "out").exists() != fails

    r = subprocess.run([str(Path(VBDECL).with_name("vb")), "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib64",
                        "/lib64", "--symlink", "usr/lib", "/lib", "--bind", str(data), "/data",
                        "--dir", "/data/vb-made", "/usr/bin/true"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and (data / "vb-made").is_dir(), r.stderr


def test_a_run_undoes_its_changes_under_a_bind_it_made_read_only(env: dict[str, str], tmp_path: Path) -> None:
    """The undo works through the run's root, where a remount-ro after the entries
    (as in MANIFEST.md's example) had made the bind read-only: the mode stayed
    changed, with a warning, and the directories and files stayed without one."""
    data = tmp_path / "data"
    (data / "keep").mkdir(parents=True)
    data.chmod(0o755)
    (data / "keep").chmod(0o755)
    before = _listing(data)
    m = manifest(tmp_path, THROUGH_A_BIND.format(data=data) + "    - {type: remount-ro, target: /data}\n")
    r = vbdecl(env, "run", m, "--", "/bin/sh", "-c", "ls /data/sub >/dev/null && ! touch /data/out 2>/dev/null")
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    assert _listing(data) == before


@pytest.mark.parametrize("die_with_parent", [True, False])
def test_a_sigkilled_run_still_leaves_the_host_as_it_found_it(env: dict[str, str], tmp_path: Path,
                                                              die_with_parent: bool) -> None:
    """The undo of what the root made in a bound directory is a janitor's: a SIGKILL
    of vbdecl (no cleanup code of its own runs) left all of it. It waits for the
    sandbox, which may outlive vbdecl."""
    import signal

    data = tmp_path / "data"
    (data / "keep").mkdir(parents=True)
    data.chmod(0o755)
    (data / "keep").chmod(0o755)
    before = _listing(data)
    ready, stop = tmp_path / "ready", tmp_path / "stop"
    extra = (THROUGH_A_BIND.format(data=data)
             + f"    - {{type: bind, source: {tmp_path}, target: {tmp_path}}}\n"
             + f"  process:\n    die_with_parent: {str(die_with_parent).lower()}")
    proc = subprocess.Popen([VBDECL, "run", manifest(tmp_path, extra), "--", "/bin/sh", "-c",
                             f"touch {ready}; while [ ! -e {stop} ]; do sleep 0.05; done"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert _wait_until(ready.exists)
        assert (data / "f").exists() and (data / "sub" / "deeper").is_dir()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if not die_with_parent:
            time.sleep(0.5)
            assert (data / "f").exists()      # the sandbox runs on, with its root
            stop.touch()
        assert _wait_until(lambda: _listing_now(data) == before), _listing(data)
    finally:
        stop.touch()
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("after", ["dir", "chmod"])
def test_a_run_killed_while_its_root_is_built_leaves_the_host_as_it_found_it(
        env: dict[str, str], tmp_path: Path, after: str) -> None:
    """The build told vbdecl what it changed once it was done, and vbdecl told the
    janitor: a SIGKILL in between (vbdecl and the sandbox with it) left what the build
    had made so far. pid 1 now tells the janitor itself, entry by entry. The test
    hook kills the run's process group once the entry ``after`` is built."""
    import signal

    import vbdecl as api

    data = tmp_path / "data"
    (data / "keep").mkdir(parents=True)
    data.chmod(0o755)
    (data / "keep").chmod(0o755)
    before = _listing(data)
    m = manifest(tmp_path, THROUGH_A_BIND.format(data=data))
    entries = api.compile_plan(m)["spec"]["filesystem"]
    index = next(i for i, e in enumerate(entries) if e["type"] == after and e["target"].startswith("/data"))
    r = subprocess.run([VBDECL, "run", m, "--", "/bin/true"], capture_output=True, text=True, timeout=60,
                       env=dict(env, VBDECL_TEST_CRASH_AT=f"root-entry:{index}"), start_new_session=True)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert _wait_until(lambda: _listing_now(data) == before), (_listing(data), r.stderr, entries[index])


def _listing_now(d: Path) -> list[tuple[str, str]] | None:
    """_listing, or None while something goes away under it (the janitor at work)."""
    try:
        return _listing(d)
    except FileNotFoundError:
        return None


def test_a_run_in_a_host_directory_as_root_removes_what_it_made_there(env: dict[str, str],
                                                                      tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    m = tmp_path / "rootfs.yaml"
    m.write_text(Path(manifest(tmp_path)).read_text().replace("spec:\n", f"spec:\n  rootfs: {root}\n", 1))
    r = vbdecl(env, "run", str(m), "--", "/bin/sh", "-c", "ls / >/dev/null")
    assert r.returncode == 0, r.stderr
    assert list(root.iterdir()) == []


# what a manifest makes in a directory anyone may write (bound at /shared), and how
# its process (uid 65534) swaps links in for it, to root's files in /victim
SWAPPED_ENTRIES = """\
    - {{type: bind, source: {shared}, target: /shared}}
    - {{type: bind, source: {victim}, target: /victim}}
    - {{type: chmod, target: /shared/sub, mode: "0700"}}
    - {{type: dir, target: /shared/cfg}}
    - {{type: file, target: /shared/cfg/app.conf, content: "x"}}"""
SWAP = ("mv /shared/sub /shared/sub.old && ln -s /victim/secret /shared/sub && "
        "mv /shared/cfg /shared/cfg.old && ln -s /victim /shared/cfg")


def _shared_and_victim(tmp_path: Path) -> tuple[Path, Path]:
    """A directory anyone may write, with a sub directory, and one of root's files."""
    shared, victim = tmp_path / "shared", tmp_path / "victim"
    (shared / "sub").mkdir(parents=True)
    victim.mkdir()
    shared.chmod(0o777)
    (shared / "sub").chmod(0o755)
    (victim / "secret").write_text("s")
    (victim / "secret").chmod(0o600)
    (victim / "app.conf").write_text("root's")
    return shared, victim


def test_a_runs_undo_follows_no_link_its_process_swapped_in(env: dict[str, str], tmp_path: Path) -> None:
    """A review's finding: the undo ran as root and followed what the process (here
    uid 65534) put in place of what the root made, so it chmodded and deleted root's
    files elsewhere. It now touches only the objects it made, through no link."""
    shared, victim = _shared_and_victim(tmp_path)
    m = manifest(tmp_path, SWAPPED_ENTRIES.format(shared=shared, victim=victim)
                 + "\n  process: {user: 65534, group: 65534}")
    r = vbdecl(env, "run", m, "--", "/bin/sh", "-c", SWAP)
    assert r.returncode == 0, r.stderr
    assert (victim / "secret").stat().st_mode & 0o7777 == 0o600
    assert (victim / "app.conf").read_text() == "root's"
    assert (shared / "sub").is_symlink() and (shared / "cfg").is_symlink()    # the process's own


def test_a_runs_undo_leaves_what_a_later_bind_put_over_its_entries(env: dict[str, str], tmp_path: Path) -> None:
    """A review's finding: entries made on the root's tmpfs and then covered by a bind
    were taken for the bound directory's, and the undo removed the host's files of
    the same names (a notes.txt of any size among them) and set its mode."""
    home = tmp_path / "home"
    (home / ".cache").mkdir(parents=True)
    (home / ".config").symlink_to("/nowhere")
    (home / "notes.txt").write_text("precious")
    home.chmod(0o700)
    before = _listing(home)
    m = manifest(tmp_path, f"""\
    - {{type: dir, target: /home/u/.cache}}
    - {{type: symlink, target: /home/u/.config, points_to: /elsewhere}}
    - {{type: file, target: /home/u/notes.txt, content: "made"}}
    - {{type: chmod, target: /home/u, mode: "0711"}}
    - {{type: bind, source: {home}, target: /home/u}}
    - {{type: dir, target: /home/u/work}}""")
    r = vbdecl(env, "run", m, "--", "/bin/true")
    assert r.returncode == 0, r.stderr
    assert _listing(home) == before and (home / "notes.txt").read_text() == "precious"


def test_a_runs_undo_counts_a_dev_entrys_device_nodes_as_the_hosts(env: dict[str, str], tmp_path: Path) -> None:
    """A review's finding: the host's devtmpfs, whose nodes a dev entry binds, counted as
    a filesystem made for the root, so what a run made in a bound /dev directory stayed."""
    bound = Path(f"/dev/vbdecl-test-{os.getpid()}")
    bound.mkdir()
    try:
        m = manifest(tmp_path, f"""\
    - {{type: bind, source: {bound}, target: /x}}
    - {{type: dir, target: /x/made}}""")
        r = vbdecl(env, "run", m, "--", "/bin/true")
        assert r.returncode == 0, r.stderr
        assert list(bound.iterdir()) == []
    finally:
        for p in bound.iterdir():
            p.rmdir()
        bound.rmdir()


@pytest.mark.parametrize("entry", ['{type: file, target: /work/etc/app.conf, content: "x=1"}',
                                   '{type: chmod, target: /work/etc/app.conf, mode: "0644"}',
                                   '{type: dir, target: /work/etc/app.conf, mode: "0755"}'],
                         ids=["file", "chmod", "dir"])
def test_an_entry_does_not_write_or_chmod_through_a_link_in_its_place(env: dict[str, str], tmp_path: Path,
                                                                      entry: str) -> None:
    """A review's finding: a process (uid 65534) that put a link where a file entry goes,
    in a bound directory, got the next run's root to write and chmod the file the link
    led to (root's, in another bound directory). The entry now fails and says why."""
    work, state = tmp_path / "work", tmp_path / "state-dir"
    (work / "etc").mkdir(parents=True)
    state.mkdir()
    (state / "important").write_text("root's")
    (state / "important").chmod(0o600)
    (state / "private").mkdir(mode=0o700)
    to = "/state/private" if "dir" in entry else "/state/important"
    (work / "etc" / "app.conf").symlink_to(to)
    m = manifest(tmp_path, f"""\
    - {{type: bind, source: {work}, target: /work}}
    - {{type: bind, source: {state}, target: /state}}
    - {entry}""")
    r = vbdecl(env, "run", m, "--", "/bin/true")
    assert r.returncode == 125
    assert f"/work/etc/app.conf is a symlink (to {to})" in r.stderr, r.stderr
    assert (state / "important").read_text() == "root's"
    assert (state / "important").stat().st_mode & 0o7777 == 0o600
    assert (state / "private").stat().st_mode & 0o7777 == 0o700


def _apply_swap_destroy(env: dict[str, str], m: str, name: str, shared: Path) -> None:
    """Apply ``m``, wait until its process has swapped its links in (it touches
    ``shared/done``), destroy it."""
    r = vbdecl(env, "apply", "-y", m)
    try:
        assert r.returncode == 0, r.stderr
        deadline = time.monotonic() + 20
        while not (shared / "done").exists():
            assert time.monotonic() < deadline, "the process never swapped its links in"
            time.sleep(0.05)
    finally:
        r = vbdecl(env, "destroy", "-y", name)
    assert r.returncode == 0, r.stderr


def test_a_destroy_follows_no_link_the_environments_process_swapped_in(env: dict[str, str],
                                                                      tmp_path: Path) -> None:
    """The same finding for a live environment: its process (uid 65534) swapped links in
    for what the apply made in a bound directory, and the destroy, as root, chmodded
    and deleted root's files the links led to."""
    shared, victim = _shared_and_victim(tmp_path)
    swap = f"{SWAP} && touch /shared/done && sleep 60"
    m = manifest(tmp_path, SWAPPED_ENTRIES.format(shared=shared, victim=victim)
                 + f'\n  process: {{user: 65534, group: 65534, command: [/bin/sh, -c, "{swap}"]}}',
                 name="swapper")
    _apply_swap_destroy(env, m, "swapper", shared)
    assert (victim / "secret").stat().st_mode & 0o7777 == 0o600
    assert (victim / "app.conf").read_text() == "root's"


def _sleeping(arg: str) -> list[int]:
    """pids of the `sleep ARG` processes alive (ARG unique to one test)."""
    out = []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and (p / "cmdline").read_bytes() == b"sleep\0" + arg.encode() + b"\0":
                out.append(int(p.name))
        except OSError:
            pass
    return out


def test_destroy_without_a_pid_namespace_ends_every_process_of_the_environment(env: dict[str, str],
                                                                              tmp_path: Path) -> None:
    """A limits review's finding: with namespaces.pid false and no limits (no cgroup), the
    background processes of the process and of an exec outlived the destroy (reparented
    outside, nothing tracked them). The destroy now ends every process in the
    environment's mount namespace."""
    arg = f"{7000 + os.getpid() % 1000}.{time.monotonic_ns() % 1000}"
    m = manifest(tmp_path, f"""\
  namespaces: {{pid: false}}
  process: {{command: [/bin/sh, -c, "sleep {arg} & sleep {arg}"]}}""", name="nopidns")
    r = vbdecl(env, "apply", "-y", m)
    try:
        assert r.returncode == 0, r.stderr
        r = vbdecl(env, "exec", "nopidns", "--", "/bin/sh", "-c", f"sleep {arg} >/dev/null 2>&1 &")
        assert r.returncode == 0, r.stderr
        deadline = time.monotonic() + 10
        while len(_sleeping(arg)) < 3:
            assert time.monotonic() < deadline, _sleeping(arg)
            time.sleep(0.05)
    finally:
        d = vbdecl(env, "destroy", "-y", "nopidns")
    assert d.returncode == 0, d.stderr
    deadline = time.monotonic() + 5
    while _sleeping(arg):
        assert time.monotonic() < deadline, f"left running: {_sleeping(arg)}"
        time.sleep(0.05)


def test_destroy_without_a_pid_namespace_spares_a_joined_mount_namespace(env: dict[str, str],
                                                                        tmp_path: Path) -> None:
    """A review of the fix above: it killed every process in the init's mount namespace,
    a joined one too (here, a sleeper of ours). Only one the environment made."""
    arg = f"{8000 + os.getpid() % 1000}.{time.monotonic_ns() % 1000}"
    sleeper = subprocess.Popen(["unshare", "-m", "sleep", arg])
    try:
        deadline = time.monotonic() + 10
        while not _sleeping(arg):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        (target,) = _sleeping(arg)
        m = tmp_path / "joinedmnt.yaml"
        m.write_text("apiVersion: vbdecl/v1\nkind: Environment\nmetadata: {name: joinedmnt}\nspec:\n"
                     f"  namespaces: {{pid: false, mount: {{join: /proc/{target}/ns/mnt}}}}\n"
                     '  process: {command: [/bin/sleep, "60"]}\n')
        r = vbdecl(env, "apply", "-y", str(m))
        assert r.returncode == 0, r.stderr
        d = vbdecl(env, "destroy", "-y", "joinedmnt")
        assert d.returncode == 0, d.stderr
        assert sleeper.poll() is None and _sleeping(arg) == [target]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_an_entry_does_not_go_through_a_link_the_process_put_on_its_way(env: dict[str, str],
                                                                         tmp_path: Path) -> None:
    """A review of the fix above: a link one directory up still led a later run's root
    to overwrite and chmod root's files in another bound directory. As root, vbdecl now
    follows only root's links inside the root."""
    shared, victim = _shared_and_victim(tmp_path)
    (victim / "app.conf").chmod(0o600)
    m = manifest(tmp_path, f"""\
    - {{type: bind, source: {shared}, target: /shared}}
    - {{type: bind, source: {victim}, target: /victim}}
    - {{type: file, target: /shared/etc/app.conf, content: "x"}}
  process: {{user: 65534, group: 65534}}""")
    r = vbdecl(env, "run", m, "--", "/bin/sh", "-c", "mv /shared/etc /shared/etc.old && ln -s /victim /shared/etc")
    assert r.returncode == 0, r.stderr
    r = vbdecl(env, "run", m, "--", "/bin/true")
    assert r.returncode == 125
    assert "the symlink 'etc' on the way belongs to uid 65534, and vbdecl, as root, follows only root's" \
        in r.stderr, r.stderr
    assert (victim / "app.conf").read_text() == "root's"
    assert (victim / "app.conf").stat().st_mode & 0o7777 == 0o600


def test_a_destroy_does_not_go_through_a_link_the_process_put_on_the_way(env: dict[str, str],
                                                                        tmp_path: Path) -> None:
    """The same review, for a live environment: its process swapped a directory the apply
    made for a link to another bound directory, and the destroy removed root's link and
    empty file of the same names there."""
    shared, victim = _shared_and_victim(tmp_path)
    (victim / "l").symlink_to("/nowhere")
    (victim / "lockfile").touch()
    swap = "mv /shared/d /shared/d.old && ln -s /victim /shared/d && touch /shared/done && sleep 60"
    m = manifest(tmp_path, f"""\
    - {{type: bind, source: {shared}, target: /shared}}
    - {{type: bind, source: {victim}, target: /victim}}
    - {{type: symlink, target: /shared/d/l, points_to: /nowhere}}
    - {{type: ro-bind, source: /etc/hostname, target: /shared/d/lockfile}}
  process: {{user: 65534, group: 65534, command: [/bin/sh, -c, "{swap}"]}}""", name="swapper2")
    _apply_swap_destroy(env, m, "swapper2", shared)
    assert (victim / "l").is_symlink() and (victim / "lockfile").exists()


def test_a_joined_mount_namespace_need_not_show_vbdecls_files(env: dict[str, str], tmp_path: Path) -> None:
    """A review's side finding: a run, or a live environment's init, that joins a mount
    namespace where vbdecl's own files are not (covered here by a tmpfs) imported what
    it needed there: ImportError (a run said only that; an apply's init died)."""
    import vbdecl as package_module

    package = Path(package_module.__file__).parent
    holder = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c",
                               f"mount -t tmpfs none {package} && exec sleep 120"])
    try:
        ns = Path(f"/proc/{holder.pid}/ns/mnt")
        deadline = time.monotonic() + 10
        while ns.stat().st_ino == Path("/proc/self/ns/mnt").stat().st_ino or \
                Path(f"/proc/{holder.pid}/comm").read_text().strip() != "sleep":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        m = tmp_path / "joins.yaml"
        m.write_text("apiVersion: vbdecl/v1\nkind: Environment\nmetadata: {name: joinsmnt}\nspec:\n"
                     f"  namespaces: {{mount: {{join: {ns}}}}}\n"
                     '  process: {command: [/bin/sleep, "60"]}\n')
        r = vbdecl(env, "run", str(m), "--", "/bin/echo", "ran")
        assert (r.returncode, r.stdout) == (0, "ran\n"), r.stderr
        # with host actions (limits) or id maps to write, the holder waits for a "go"
        # and loaded its setup code once in (sealed there since: a review of the seal)
        joined = f"  namespaces: {{mount: {{join: {ns}}}}}\n"
        for instead in ("  limits: {memory: 256Mi}\n" + joined, f"  namespaces: {{user: true, mount: {{join: {ns}}}}}\n"):
            other = tmp_path / "joins2.yaml"
            other.write_text(m.read_text().replace(joined, instead))
            r = vbdecl(env, "run", str(other), "--", "/bin/echo", "ran")
            assert (r.returncode, r.stdout) == (0, "ran\n"), other.read_text() + r.stderr
        r = vbdecl(env, "apply", "-y", str(m))
        try:
            assert r.returncode == 0, r.stderr
            r = vbdecl(env, "exec", "joinsmnt", "--", "/bin/echo", "in")
            assert (r.returncode, r.stdout) == (0, "in\n"), r.stderr
        finally:
            assert vbdecl(env, "destroy", "-y", "joinsmnt").returncode == 0
    finally:
        holder.kill()
        holder.wait()


def test_a_run_writes_no_host_file_a_later_bind_shows_where_its_own_file_was(env: dict[str, str],
                                                                             tmp_path: Path) -> None:
    """A review of the run's refusal of a file entry over a host's file: it went by path,
    so `file /data/x`, then a bind of a host directory on /data, then `file /data/x`
    again wrote the host's x for good. It goes by identity: the file this build made."""
    hd = tmp_path / "hd"
    hd.mkdir()
    (hd / "x").write_text("the host's\n")
    (hd / "x").chmod(0o640)
    m = manifest(tmp_path, f"""\
    - {{type: file, target: /data/x, content: "A"}}
    - {{type: bind, source: {hd}, target: /data}}
    - {{type: file, target: /data/x, content: "B"}}""")
    r = vbdecl(env, "run", m, "--", "/bin/true")
    assert r.returncode == 125 and "file /data/x: a file of the host's is there" in r.stderr, r.stderr
    assert (hd / "x").read_text() == "the host's\n" and (hd / "x").stat().st_mode & 0o7777 == 0o640
    # a file this run made, written again by a later entry, is its own to write
    m = manifest(tmp_path, f"""\
    - {{type: bind, source: {hd}, target: /data}}
    - {{type: file, target: /data/y, content: "A"}}
    - {{type: file, target: /data/y, content: "B"}}""")
    r = vbdecl(env, "run", m, "--", "/bin/cat", "/data/y")
    assert (r.returncode, r.stdout) == (0, "B"), r.stderr
    assert sorted(p.name for p in hd.iterdir()) == ["x"]


@pytest.mark.parametrize("key", ["events", "lock_file"])
def test_status_files_are_not_reached_through_a_link_the_sandbox_could_make(
        env: dict[str, str], tmp_path: Path, key: str) -> None:
    """A review: status.events (appended) and status.lock_file (truncated) below the
    source of a writable bind were opened through a directory on the way that an
    earlier sandbox had replaced with a link, into a host directory of its choice.
    No link below such a source is followed to them now; one above it still is."""
    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    data.mkdir()
    elsewhere.mkdir()
    (data / "st").symlink_to(elsewhere)         # what `ln -s` in the sandbox's /data made
    mount = f"    - {{type: bind, source: {data}, target: /data}}"
    m = manifest(tmp_path, f"{mount}\n  status: {{{key}: {data}/st/file}}", name=f"st-{key.replace('_', '')}")
    r = vbdecl(env, "run", m, "--", "/bin/true")
    assert r.returncode == 125, r.stderr
    assert "symlink 'st'" in r.stderr and "may write" in r.stderr, r.stderr
    assert list(elsewhere.iterdir()) == []
    # a link above the source is the host's own, and is followed
    (data / "st").unlink()
    (data / "st").mkdir()
    (tmp_path / "alias").symlink_to(data)
    m = manifest(tmp_path, f"{mount}\n  status: {{{key}: {tmp_path}/alias/st/file}}",
                 name=f"st-{key.replace('_', '')}")
    r = vbdecl(env, "run", m, "--", "/bin/true")
    assert r.returncode == 0, r.stderr
    assert (data / "st" / "file").exists()
