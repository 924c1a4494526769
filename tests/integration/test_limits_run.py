"""Limits end to end through the CLI on this machine's real cgroups (hybrid: v1
controllers + cgroup2 tracking dir): ``vbdecl run`` with memory/pids/rlimits,
and a live environment (``apply``, in-place update, ``status --json``, ``destroy``)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from testmanifests import head

from vbdecl.sys import cgroupfs as cg

VBDECL = str(Path(sys.executable).parent / "vbdecl")
PY3 = "/usr/bin/python3"

MANIFEST = head('{name}') + """\
    - {{type: proc, target: /proc}}
    - {{type: dev, target: /dev}}
  limits:
{limits}
{extra}
"""

pytestmark = pytest.mark.skipif(cg.current_layout().mode == "none", reason="no cgroups")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return dict(os.environ, VBDECL_CACHE_DIR=str(tmp_path / "cache"),
                VBDECL_STATE_DIR=str(tmp_path / "state"))


def vbdecl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VBDECL, *args], capture_output=True, text=True, env=env, timeout=60)


def manifest(tmp_path: Path, limits: str, extra: str = "", name: str = "limits") -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(MANIFEST.format(name=name, limits=limits, extra=extra))
    return str(path)


def _applied(env: dict[str, str], tmp_path: Path, limits: str, name: str,
             command: str = '["/bin/sleep", "120"]') -> tuple[str, set[str]]:
    """A live environment applied from a manifest with ``limits`` running ``command``
    (YAML): its manifest's path, and the environments' cgroups from before it."""
    m = manifest(tmp_path, limits, f"  process:\n    command: {command}", name=name)
    before = _ours()
    r = vbdecl(env, "apply", m, "-y")
    assert r.returncode == 0, r.stdout + r.stderr
    return m, before


def _memory_cgroup(pid: int) -> str:
    return next(line.split(":", 2)[2] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()
                if line.split(":", 2)[1] == "memory")


def _ours() -> set[str]:
    out = set()
    for top in Path("/sys/fs/cgroup").iterdir():
        if (top / "vbdecl").is_dir():
            out |= {str(p) for p in (top / "vbdecl").iterdir() if p.is_dir()}
    return out


@pytest.mark.skipif(not os.path.exists(PY3), reason="needs /usr/bin/python3")
def test_run_oom_is_reported_as_oom(env: dict[str, str], tmp_path: Path) -> None:
    m = manifest(tmp_path, "    memory: 32Mi\n    memory_swap: 0")
    before = _ours()
    r = vbdecl(env, "run", m, "--", PY3, "-c", "b = b'x' * (256 << 20); print('survived')")
    assert r.returncode == 137, r.stderr
    assert "survived" not in r.stdout
    assert "out of memory" in r.stderr and "OOM killer" in r.stderr and "32Mi" in r.stderr
    assert _ours() == before


@pytest.mark.skipif(not os.path.exists(PY3), reason="needs /usr/bin/python3")
def test_vb_tells_of_oom_in_the_name_it_was_called_by(env: dict[str, str], tmp_path: Path) -> None:
    """Through a link named bwrap vb speaks as "bwrap: ", as for its other messages."""
    vb = Path(VBDECL).with_name("vb")
    link = tmp_path / "bwrap"
    link.symlink_to(vb)
    hog = [PY3, "-c", "b = b'x' * (256 << 20); print('survived')"]
    for tool, prefix in ((link, "bwrap: "), (vb, "vb: ")):
        r = subprocess.run([tool, "--ro-bind", "/", "/", "--limit-memory", "32Mi", *hog],
                           capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 137, r.stderr
        assert r.stderr.startswith(f"{prefix}out of memory: the kernel's OOM killer killed 1 process "), r.stderr
        assert "--limit-memory 32Mi" in r.stderr and "vbdecl" not in r.stderr


@pytest.mark.skipif((cg.current_layout().place("memory") or (0, ""))[0] != 1,
                    reason="the run's own processes leave a cgroup v1 memory cgroup only")
@pytest.mark.parametrize("front", ["run", "vb"])
def test_a_runs_oom_takes_the_workload_not_its_pid_1(env: dict[str, str], tmp_path: Path, front: str) -> None:
    """A limits review: in a 32Mi limit, hogs in the background made the OOM killer take
    the run's pid 1 (a Python process, the largest there), and the run ended 137 with no
    output, where `init: false` finished. pid 1 and the holder go back to vbdecl's own
    memory cgroup once the process is in the environment's: only hogs are picked."""
    script = ("for i in 1 2 3 4 5 6; do (head -c 12M /dev/zero | tail -c 13M >/dev/null) & done; "
              "wait; echo all done; cat /proc/1/cgroup")
    if front == "run":
        m = manifest(tmp_path, "    memory: 32Mi\n    memory_swap: 0")
        argv = [VBDECL, "run", m, "--", "/bin/sh", "-c", script]
    else:
        argv = [str(Path(VBDECL).with_name("vb")), "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-pid",
                "--limit-memory", "32Mi", "/bin/sh", "-c", script]
    before = _ours()
    r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "all done" in r.stdout and "out of memory" in r.stderr, r.stdout + r.stderr
    init_memory = next(line.split(":", 2)[2] for line in r.stdout.splitlines() if ":memory:" in line)
    assert "/vbdecl/" not in init_memory, r.stdout
    assert _ours() == before


def test_run_plain_sigkill_is_not_called_oom(env: dict[str, str], tmp_path: Path) -> None:
    m = manifest(tmp_path, "    memory: 32Mi")
    r = vbdecl(env, "run", m, "--", "/bin/sh", "-c", "kill -9 $$")
    assert r.returncode == 137
    assert "out of memory" not in r.stderr


@pytest.mark.skipif(not os.path.exists(PY3), reason="needs /usr/bin/python3")
def test_run_fork_loop_stops_at_pids(env: dict[str, str], tmp_path: Path) -> None:
    m = manifest(tmp_path, "    pids: 8")
    script = ("import os, time\nn = 0\nerr = None\nfor _ in range(100):\n"
              "    try:\n        pid = os.fork()\n    except OSError as e:\n"
              "        err = e.errno\n        break\n"
              "    if pid == 0:\n        os.close(1)\n        time.sleep(20)\n        os._exit(0)\n"
              "    n += 1\nprint(n, err, open('/sys/fs/cgroup/pids.max').read().strip() "
              "if os.path.exists('/sys/fs/cgroup/pids.max') else '-', flush=True)\n")
    r = vbdecl(env, "run", m, "--", PY3, "-c", script)
    assert r.returncode == 0, r.stderr
    n, err, _ = r.stdout.split()
    assert err == "11" and 0 < int(n) < 8      # EAGAIN; vbdecl's init counts too


def test_run_rlimits_nofile_enforced(env: dict[str, str], tmp_path: Path) -> None:
    m = manifest(tmp_path, "    pids: 32\n    rlimits: {nofile: [64, 128], core: 0}")
    r = vbdecl(env, "run", m, "--", "/bin/sh", "-c",
               "ulimit -Sn; ulimit -Hn; ulimit -c; exec 3</dev/null; ulimit -n 200 || echo refused")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["64", "128", "0", "refused"]


def test_live_update_in_place_and_status_usage(env: dict[str, str], tmp_path: Path) -> None:
    limits = "    memory: 64Mi\n    cpu: 0.5\n    cpu_weight: 100"
    m, before = _applied(env, tmp_path, limits, "h6live")
    try:
        st = json.loads(vbdecl(env, "status", "h6live", "--json").stdout)
        group = next(x for x in st["resources"] if x["id"] == "cgroup")
        instance = st["instance"]
        assert group["status"] == "ok"
        usage = group["usage"]
        assert usage["memory"]["limit"] == 64 << 20 and usage["memory"]["current"] > 0
        assert usage["memory"]["peak"] >= usage["memory"]["current"]
        assert usage["cpu"]["limit"] == 0.5 and usage["cpu"]["usage_usec"] > 0
        assert all(x["status"] == "ok" for x in st["resources"] if x["kind"] == "cgroup.limit")
        mem_dir = group["record"]["controllers"]["memory"]
        procs = Path(mem_dir, "cgroup.procs").read_text()
        assert procs.split()
        # no drift right after apply
        p = vbdecl(env, "plan", m, "--detailed-exitcode")
        assert p.returncode == 0, p.stdout

        # change one limit and add another (a controller the group did not have yet)
        Path(m).write_text(Path(m).read_text().replace("memory: 64Mi", "memory: 128Mi\n    pids: 48"))
        p = vbdecl(env, "plan", m)
        assert "~ cgroup.memory" in p.stdout and "+ cgroup.pids" in p.stdout, p.stdout
        assert "-/+" not in p.stdout
        r = vbdecl(env, "apply", m, "-y")
        assert r.returncode == 0, r.stdout + r.stderr
        # in place: same instance, same cgroup, same processes; the kernel shows the new limits
        st = json.loads(vbdecl(env, "status", "h6live", "--json").stdout)
        assert st["instance"] == instance
        assert Path(mem_dir, "cgroup.procs").read_text() == procs
        assert int(Path(mem_dir, "memory.limit_in_bytes" if "/memory/" in mem_dir
                        else "memory.max").read_text()) == 128 << 20
        pids_rec = next(x for x in st["resources"] if x["id"] == "cgroup.pids")["record"]
        assert Path(pids_rec["dir"], "pids.max").read_text().strip() == "48"
        # the init too, which stays out of the v1 memory cgroup only
        init = str(_process_ids(env, "h6live")[0][0])
        in_memory = init in procs.split()
        assert in_memory == (not mem_dir.startswith(tuple(cg.current_layout().v1.values())))
        assert sorted(Path(pids_rec["dir"], "cgroup.procs").read_text().split()) == \
            sorted({*procs.split(), init})
        group = next(x for x in st["resources"] if x["id"] == "cgroup")
        assert group["usage"]["memory"]["limit"] == 128 << 20
    finally:
        d = vbdecl(env, "destroy", "h6live", "-y")
    assert d.returncode == 0, d.stdout + d.stderr
    assert _ours() == before


def _layout_without(ctrl: str) -> str:
    real = cg.current_layout()
    sub = cg.V1_SUBSYS[ctrl]
    return json.dumps({"unified": real.unified,
                       "v1": {k: v for k, v in real.v1.items() if k != sub},
                       "v2_controllers": sorted(real.v2_controllers - {ctrl})})


def test_run_missing_controller_error_or_optional_warning_event(env: dict[str, str],
                                                                tmp_path: Path) -> None:
    """This machine's layout with the pids controller hidden (VBDECL_CGROUP_LAYOUT)."""
    hidden = dict(env, VBDECL_CGROUP_LAYOUT=_layout_without("pids"))
    before = _ours()
    m = manifest(tmp_path, "    memory: 64Mi\n    pids: 8")
    r = vbdecl(hidden, "run", m, "--", "/bin/echo", "ran")
    assert r.returncode == 125 and "ran" not in r.stdout
    assert "cgroup" in r.stderr and "pids controller" in r.stderr and "hint:" in r.stderr
    assert _ours() == before
    events = tmp_path / "events.jsonl"
    m = manifest(tmp_path, "    memory: 64Mi\n    pids: 8\n    optional: true",
                 f"  status: {{events: {events}}}", name="optional")
    r = vbdecl(hidden, "run", m, "--", "/bin/sh", "-c", "cat /proc/self/cgroup")
    assert r.returncode == 0, r.stderr
    assert "memory:/vbdecl/vb-" in r.stdout and "pids:/\n" in r.stdout   # memory yes, pids not
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    assert lines[0]["event"] == "runtime_init_warnings"
    warnings = lines[0]
    assert any("limits.pids not enforced" in w for w in warnings["warnings"]), warnings
    assert _ours() == before


def test_run_killed_inside_the_cgroup_action_leaks_no_cgroup(env: dict[str, str], tmp_path: Path) -> None:
    """`vbdecl run` killed after the cgroup was made but before the janitor heard of its
    record (VBDECL_TEST_CRASH_BEFORE_DONE): the janitor's probe(params, None) finds the
    directories by the instance id, and removes them."""
    import time

    m = manifest(tmp_path, "    memory: 64Mi\n    cpu: 0.25\n    pids: 32")
    before = _ours()
    r = vbdecl(dict(env, VBDECL_TEST_CRASH_BEFORE_DONE="cgroup"), "run", m, "--", "/bin/true")
    assert r.returncode == -9, r.stderr
    deadline = time.monotonic() + 10
    while _ours() != before and time.monotonic() < deadline:
        time.sleep(0.05)
    left = _ours() - before
    for path in sorted(left, reverse=True):      # never leak into the next tests
        os.rmdir(path)
    assert not left


@pytest.mark.skipif(not os.path.exists(PY3), reason="needs /usr/bin/python3")
def test_oom_is_told_by_the_command_it_happened_under(env: dict[str, str], tmp_path: Path) -> None:
    """An `exec` whose command the OOM killer took says so (its exit status, 137, cannot);
    later commands on the environment (another exec, destroy) do not report that old kill
    as if it were theirs: destroy used to print it, minutes later."""
    _, before = _applied(env, tmp_path, "    memory: 32Mi\n    memory_swap: 0", "oomlive")
    try:
        hog = vbdecl(env, "exec", "oomlive", "--", PY3, "-c", "b = b'x' * (256 << 20); print('survived')")
        later = vbdecl(env, "exec", "oomlive", "--", "/bin/true")
        st = json.loads(vbdecl(env, "status", "oomlive", "--json").stdout)
    finally:
        d = vbdecl(env, "destroy", "oomlive", "-y")
    assert d.returncode == 0, d.stdout + d.stderr
    assert "out of memory" not in d.stdout + d.stderr, d.stderr
    assert _ours() == before
    assert hog.returncode == 137 and "survived" not in hog.stdout, hog.stderr
    assert "vbdecl: oomlive: out of memory: the kernel's OOM killer killed 1 process of this " \
           "environment while the command ran (limits.memory 32Mi)" in hog.stderr, hog.stderr
    assert later.returncode == 0 and "out of memory" not in later.stderr, later.stderr
    group = next(x for x in st["resources"] if x["id"] == "cgroup")
    assert group["usage"]["memory"]["oom_kills"] == 1      # still known, where asked for


def _cgroups_by_controller(pid: int) -> dict[str, str]:
    """{controllers: path} of a process (v1 hierarchies and the cgroup2 line)."""
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    return {line.split(":")[1]: line.split(":", 2)[2] for line in lines}


def test_exec_puts_only_the_command_in_the_cgroup(env: dict[str, str], tmp_path: Path) -> None:
    """`vbdecl exec` waits from outside the environment's cgroups (it counted against
    pids and memory) while its command runs inside; a destroy that kills the command
    is told, not a bare 137 (and a command killed otherwise is not)."""
    _, before = _applied(env, tmp_path, "    memory: 64Mi\n    pids: 16", "execcg")
    ex = None
    try:
        # killed while the environment lives (its own /proc inside): no such news
        k = vbdecl(env, "exec", "execcg", "--", "/bin/sh", "-c", "kill -KILL $$")
        assert k.returncode == 137 and "stopped" not in k.stderr, k.stderr
        init = _process_ids(env, "execcg")[0][0]
        ex = subprocess.Popen([VBDECL, "exec", "execcg", "--", "/bin/sleep", "60"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        children = Path(f"/proc/{ex.pid}/task/{ex.pid}/children")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            kids = children.read_text().split()
            if kids and Path(f"/proc/{kids[0]}/cmdline").read_bytes().startswith(b"/bin/sleep"):
                break
            time.sleep(0.02)
        command = int(kids[0])
        # the declared process's (the init's but for a v1 memory cgroup, which it stays out of)
        env_groups = _cgroups_by_controller(_process_ids(env, "execcg")[1][0])
        assert _cgroups_by_controller(init)["pids"] == env_groups["pids"]
        limited = [k for k in env_groups if "memory" in k.split(",") or "pids" in k.split(",")]
        assert limited
        for k in limited:
            assert _cgroups_by_controller(command)[k] == env_groups[k], k
            assert _cgroups_by_controller(ex.pid)[k] != env_groups[k], k
    finally:
        d = vbdecl(env, "destroy", "execcg", "-y")
        if ex is not None:
            try:
                err = ex.communicate(timeout=30)[1]
            finally:
                ex.kill()   # by its pid (a no-op once reaped)
    assert d.returncode == 0, d.stdout + d.stderr
    assert ex.returncode == 137, (ex.returncode, err)
    assert "error: execcg stopped while the command ran, which was killed with it" in err, err
    assert _ours() == before


def _process_ids(env: dict[str, str], name: str) -> list[tuple[int, int]]:
    """(pid, start time) of the environment's init and of its declared process."""
    st = json.loads(vbdecl(env, "status", name, "--json").stdout)
    recs = {x["id"]: x["record"] for x in st["resources"]}
    return [(int(recs[i]["pid"]), int(recs[i]["start_time"])) for i in ("env", "process")]


def _running(pid: int, started: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z" and int(fields[19]) == started


def _in_vbdecl_cgroup(pid: int) -> bool:
    return "/vbdecl/" in Path(f"/proc/{pid}/cgroup").read_text()


def _cgroups(pid: int) -> str:
    return Path(f"/proc/{pid}/cgroup").read_text()


def _zombie_child(pid: int) -> bool:
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        if Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return True
    return False


def test_live_environment_outlives_its_limits(env: dict[str, str], tmp_path: Path) -> None:
    """Removing the last limit, or a failed or killed update that added limits, takes the
    cgroup away and leaves the environment running (it was killed with its cgroup before)."""
    # the process leaves a zombie behind (its shell execs sleep, which never reaps it)
    extra = '  process:\n    command: ["/bin/sh", "-c", "/bin/true & exec /bin/sleep 120"]'
    m = manifest(tmp_path, "    pids: 64", extra, name="outlive")
    unlimited = Path(m).read_text().replace("  limits:\n    pids: 64\n", "")
    assert "limits" not in unlimited
    Path(m).write_text(unlimited)
    before = _ours()
    r = vbdecl(env, "apply", m, "-y")
    assert r.returncode == 0, r.stdout + r.stderr
    try:
        ids = _process_ids(env, "outlive")
        home = {pid: _cgroups(pid) for pid, _ in ids}
        deadline = time.monotonic() + 5
        while not _zombie_child(ids[1][0]):
            assert time.monotonic() < deadline, "no zombie"
            time.sleep(0.01)
        limited = manifest(tmp_path, "    pids: 64", extra, name="outlive")
        # an update adding limits whose last step fails: rolled back, the environment stays
        r = vbdecl(dict(env, VBDECL_FAULT="cgroup.pids"), "apply", limited, "-y")
        assert r.returncode != 0 and "injected fault" in r.stderr, r.stdout + r.stderr
        assert all(_running(*i) for i in ids)
        assert {pid: _cgroups(pid) for pid, _ in ids} == home   # back where they were
        assert _ours() == before
        # killed inside the cgroup step (processes moved in, nothing journaled): recovery
        # undoes it, the environment stays
        r = vbdecl(dict(env, VBDECL_TEST_CRASH_BEFORE_DONE="cgroup"), "apply", limited, "-y")
        assert r.returncode == -9, r.stdout + r.stderr
        assert _ours() != before
        r = vbdecl(env, "recover", "outlive")
        assert r.returncode == 0, r.stdout + r.stderr
        assert all(_running(*i) for i in ids)
        assert {pid: _cgroups(pid) for pid, _ in ids} == home   # back where they were
        assert _ours() == before
        # the limits land: the same processes move in
        r = vbdecl(env, "apply", limited, "-y")
        assert r.returncode == 0, r.stdout + r.stderr
        assert _process_ids(env, "outlive") == ids
        assert all(_in_vbdecl_cgroup(pid) for pid, _ in ids)
        # the last limit removed: the cgroup goes, the processes stay
        Path(m).write_text(unlimited)
        r = vbdecl(env, "apply", m, "-y")
        assert r.returncode == 0, r.stdout + r.stderr
        assert all(_running(*i) for i in ids)
        assert {pid: _cgroups(pid) for pid, _ in ids} == home   # back where they were
        assert _ours() == before
    finally:
        d = vbdecl(env, "destroy", "outlive", "-y")
    assert d.returncode == 0, d.stdout + d.stderr
    assert not any(_running(*i) for i in ids)
    assert _ours() == before


@pytest.mark.skipif(not os.path.exists(PY3), reason="needs /usr/bin/python3")
def test_a_limit_added_to_a_live_environment_shows_in_status_and_exec(env: dict[str, str],
                                                                       tmp_path: Path) -> None:
    """A limits review's finding: a memory limit (and cpu_weight) added to a live
    environment lives in the limit's record, as an extension of the group; `status`
    showed "memory None" and exec's OOM report was missing."""
    m, before = _applied(env, tmp_path, "    pids: 40", "h6add")
    try:
        text = vbdecl(env, "status", "h6add").stdout
        assert "memory None" not in text and "cpu None" not in text, text
        Path(m).write_text(Path(m).read_text().replace("pids: 40", "pids: 40\n    memory: 32Mi\n"
                                                                   "    memory_swap: 0\n    cpu_weight: 50"))
        r = vbdecl(env, "apply", m, "-y")
        assert r.returncode == 0, r.stdout + r.stderr
        st = json.loads(vbdecl(env, "status", "h6add", "--json").stdout)
        usage = next(x for x in st["resources"] if x["id"] == "cgroup")["usage"]
        assert usage["memory"]["limit"] == 32 << 20 and usage["cpu"]["weight"] == 50
        text = vbdecl(env, "status", "h6add").stdout
        assert "/32Mi" in text and "(weight 50)" in text, text
        # the init stays out of a v1 memory cgroup brought in, the process goes in
        (init_pid, _), (proc_pid, _) = _process_ids(env, "h6add")
        mem_dir = next(x for x in st["resources"] if x["id"] == "cgroup.memory")["record"]["dir"]
        procs = Path(mem_dir, "cgroup.procs").read_text().split()
        assert str(proc_pid) in procs
        assert (str(init_pid) in procs) == (not mem_dir.startswith(tuple(cg.current_layout().v1.values())))
        r = vbdecl(env, "exec", "h6add", "--", PY3, "-c", "b = b'x' * (256 << 20); print('survived')")
        assert r.returncode == 137 and "survived" not in r.stdout, r.stderr
        assert "out of memory" in r.stderr and "32Mi" in r.stderr, r.stderr
        # memory and memory_swap share the memory controller brought in: one may go alone
        Path(m).write_text(Path(m).read_text().replace("    memory_swap: 0\n", ""))
        r = vbdecl(env, "apply", m, "-y")
        assert r.returncode == 0 and "- cgroup.memory_swap" in r.stdout, r.stdout + r.stderr
        st = json.loads(vbdecl(env, "status", "h6add", "--json").stdout)
        usage = next(x for x in st["resources"] if x["id"] == "cgroup")["usage"]
        assert usage["memory"]["limit"] == 32 << 20
        assert vbdecl(env, "plan", m, "--detailed-exitcode").returncode == 0
        # without the memory limit the processes go back to the memory cgroup they came
        # from (ours), not the hierarchy's root (the review's finding)
        init = next(x for x in st["resources"] if x["kind"] == "env.namespaces")["record"]["pid"]
        Path(m).write_text(Path(m).read_text().replace("    memory: 32Mi\n", ""))
        r = vbdecl(env, "apply", m, "-y")
        assert r.returncode == 0 and "- cgroup.memory" in r.stdout, r.stdout + r.stderr
        assert _memory_cgroup(init) == _memory_cgroup(os.getpid())
    finally:
        d = vbdecl(env, "destroy", "h6add", "-y")
    assert d.returncode == 0, d.stdout + d.stderr
    assert _ours() == before


def test_a_pids_limit_too_small_to_start_says_so(env: dict[str, str], tmp_path: Path) -> None:
    """A limits review's finding: `pids: 1` failed a run with "BlockingIOError: [Errno 11]"
    and no hint (an apply's process said "[Errno 11] Resource temporarily unavailable").
    A UX review: then with "fork failed (EAGAIN)", naming no key: now refused up front."""
    m = manifest(tmp_path, "    pids: 1")
    r = vbdecl(env, "run", m, "--", "/bin/true")
    assert r.returncode == 125
    assert re.search(rf"error: {re.escape(m)}:\d+:\d+: limits.pids 1 is too few for vbdecl run",
                     r.stderr), r.stderr
    assert "hint: set limits.pids to 2 or more" in r.stderr and "Errno" not in r.stderr


@pytest.mark.skipif(not os.path.exists(PY3), reason="needs /usr/bin/python3")
def test_status_tells_a_process_the_oom_killer_took(env: dict[str, str], tmp_path: Path) -> None:
    """A limits review's finding: status said only "exited with code 137 (signal 9)"."""
    extra = f'  process:\n    command: ["{PY3}", "-c", "b = bytearray(256 << 20)"]'  # (memset: touched)
    m = manifest(tmp_path, "    memory: 32Mi\n    memory_swap: 0", extra, name="h6oom")
    r = vbdecl(env, "apply", m, "-y")
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        deadline = time.monotonic() + 20
        while "(code " not in (text := vbdecl(env, "status", "h6oom").stdout):
            assert time.monotonic() < deadline, text
            time.sleep(0.1)
        assert ("killed by SIGKILL (code 137), likely out of memory (1 OOM kill in its memory cgroup "
                "while it ran)") in text, text
        st = json.loads(vbdecl(env, "status", "h6oom", "--json").stdout)
        assert next(x for x in st["resources"] if x["id"] == "process")["oom_kills"] == 1
    finally:
        assert vbdecl(env, "destroy", "h6oom", "-y").returncode == 0


@pytest.mark.skipif(not os.path.exists(PY3), reason="needs /usr/bin/python3")
def test_status_blames_no_oom_kill_from_before_the_process_ended(env: dict[str, str], tmp_path: Path) -> None:
    """status said "likely out of memory" for any SIGKILL of the process once the memory
    cgroup had ever had an OOM kill (the group's lifetime count): here an exec's, before
    the process that was then killed by hand started. The supervisor counts the kills
    while the process ran."""
    swap = "\n    memory_swap: 0" if cg.detect()["swap_accounting"] else ""
    m, _ = _applied(env, tmp_path, "    memory: 32Mi" + swap, "h6oomold")
    try:
        ex = vbdecl(env, "exec", "h6oomold", "--", PY3, "-c", "b = bytearray(256 << 20)")
        assert ex.returncode == 137 and "out of memory" in ex.stderr, ex.stderr
        Path(m).write_text(Path(m).read_text().replace('"120"', '"121"'))   # a new process
        r = vbdecl(env, "apply", m, "-y")
        assert r.returncode == 0 and "-/+ process" in r.stdout, r.stdout + r.stderr
        (_, _), (pid, started) = _process_ids(env, "h6oomold")
        assert _running(pid, started)
        os.kill(pid, 9)     # (the environment's process, which this test started)
        deadline = time.monotonic() + 20
        while "(code " not in (text := vbdecl(env, "status", "h6oomold").stdout):
            assert time.monotonic() < deadline, text
            time.sleep(0.1)
        assert "killed by SIGKILL (code 137)" in text and "out of memory" not in text, text
        st = json.loads(vbdecl(env, "status", "h6oomold", "--json").stdout)
        by_id = {x["id"]: x for x in st["resources"]}
        assert by_id["process"]["oom_kills"] == 0, by_id["process"]
        assert by_id["cgroup"]["usage"]["memory"]["oom_kills"] == 1, by_id["cgroup"]
    finally:
        assert vbdecl(env, "destroy", "h6oomold", "-y").returncode == 0


@pytest.mark.skipif((cg.current_layout().place("memory") or (0, ""))[0] != 1,
                    reason="the init stays out of a cgroup v1 memory cgroup only")
def test_an_oom_in_a_live_environment_takes_the_process_not_the_init(env: dict[str, str],
                                                                     tmp_path: Path) -> None:
    """A review's finding: in a small memory limit the OOM killer took the live
    environment's init (its Python's memory counted in its OOM score, not charged to
    the cgroup; where it may not set oom_score_adj -1000), and the environment ended
    with it. On cgroup v1 the init stays out of the memory cgroup (in the others):
    only the process can be picked; the init lives on and status tells of the kill."""
    swap = "\n    memory_swap: 0" if cg.detect()["swap_accounting"] else ""
    m, before = _applied(env, tmp_path, "    memory: 16Mi" + swap, "h2oomlive",
                         command='["/usr/bin/tail", "/dev/zero"]')   # (one endless line)
    try:
        (init, init_started), _ = _process_ids(env, "h2oomlive")
        deadline = time.monotonic() + 20
        while True:
            st = json.loads(vbdecl(env, "status", "h2oomlive", "--json").stdout)
            by_id = {x["id"]: x for x in st["resources"]}
            if by_id["process"]["status"] != "ok":
                break
            assert time.monotonic() < deadline, by_id["process"]
            time.sleep(0.1)
        group = by_id["cgroup"]
        assert group["usage"]["memory"]["oom_kills"] >= 1, group
        assert _running(init, init_started), "the OOM killer took the init"
        assert by_id["env"]["status"] == "ok", by_id["env"]
        text = vbdecl(env, "status", "h2oomlive").stdout
        assert "killed by SIGKILL (code 137), likely out of memory" in text, text
        mem_dir = group["record"]["controllers"]["memory"]
        assert str(init) not in Path(mem_dir, "cgroup.procs").read_text().split()
        # the environment lives on, and an exec's command is in the memory cgroup
        ex = vbdecl(env, "exec", "h2oomlive", "--", "/bin/cat", "/proc/self/cgroup")
        assert ex.returncode == 0, ex.stderr
        seen = dict(line.split(":", 2)[1:] for line in ex.stdout.splitlines())
        assert seen["memory"].startswith("/vbdecl/") and mem_dir.endswith(seen["memory"]), seen
        # an init in the memory cgroup (by hand, or as a vbdecl before this one put it) is
        # drift, and an apply moves it out again
        Path(mem_dir, "cgroup.procs").write_text(str(init))
        r = vbdecl(env, "plan", "--detailed-exitcode", m)
        assert r.returncode == 2 and "cgroup" in r.stdout, r.stdout + r.stderr
        r = vbdecl(env, "apply", m, "-y")
        assert r.returncode == 0, r.stdout + r.stderr
        assert str(init) not in Path(mem_dir, "cgroup.procs").read_text().split()
        assert _running(init, init_started)
    finally:
        d = vbdecl(env, "destroy", "h2oomlive", "-y")
    assert d.returncode == 0, d.stdout + d.stderr
    assert not _running(init, init_started)
    assert _ours() == before


def _memory_files(mem_dir: str) -> tuple[int, int | str]:
    """(memory limit, memory+swap limit on v1 or the swap limit on cgroup2) in bytes."""
    v1 = Path(mem_dir, "memory.limit_in_bytes").exists()
    mem = Path(mem_dir, "memory.limit_in_bytes" if v1 else "memory.max").read_text().strip()
    swap = Path(mem_dir, "memory.memsw.limit_in_bytes" if v1 else "memory.swap.max").read_text().strip()
    return int(mem), int(swap) if swap.isdigit() else swap


@pytest.mark.skipif(not cg.detect()["swap_accounting"], reason="needs swap accounting")
def test_a_rolled_back_update_sets_memory_and_swap_back_exactly(env: dict[str, str],
                                                               tmp_path: Path) -> None:
    """A review's finding: an update that changed limits.memory and limits.memory_swap,
    rolled back in-process (a later action failed), left v1's memory.memsw.limit_in_bytes
    at the new manifest's memory + swap: the undo of each wrote the old value with the
    new manifest's other one. Back to the old pair exactly, up and down, in an order the
    kernel takes (memsw >= memory at every write)."""
    m, before = _applied(env, tmp_path, "    memory: 64Mi\n    memory_swap: 0", "h2swap")
    v1_text = Path(m).read_text()
    v2_text = v1_text.replace("memory_swap: 0", "memory_swap: 32Mi").replace("memory: 64Mi", "memory: 96Mi")
    try:
        st = json.loads(vbdecl(env, "status", "h2swap", "--json").stdout)
        mem_dir = next(x for x in st["resources"] if x["id"] == "cgroup")["record"]["controllers"]["memory"]
        v1 = Path(mem_dir, "memory.limit_in_bytes").exists()
        first = _memory_files(mem_dir)
        assert first == ((64 << 20, 64 << 20) if v1 else (64 << 20, 0))
        # up (64Mi + 0 -> 96Mi + 32Mi) and down (96Mi + 32Mi -> 48Mi + 8Mi), a new limit failing last
        for old_text, new_text, want in (
                (v1_text, v2_text, first),
                (v2_text, v2_text.replace("96Mi", "48Mi").replace("32Mi", "8Mi"),
                 (96 << 20, 128 << 20) if v1 else (96 << 20, 32 << 20))):
            Path(m).write_text(old_text)
            r = vbdecl(env, "apply", m, "-y")
            assert r.returncode == 0, r.stdout + r.stderr
            assert _memory_files(mem_dir) == want
            Path(m).write_text(new_text.replace("  limits:\n", "  limits:\n    pids: 40\n"))
            r = vbdecl(dict(env, VBDECL_FAULT="cgroup.pids"), "apply", m, "-y")
            assert r.returncode == 1 and "cgroup.pids: injected fault" in r.stderr, r.stdout + r.stderr
            assert "~ cgroup.memory" in r.stdout and "~ cgroup.memory_swap" in r.stdout, r.stdout
            assert _memory_files(mem_dir) == want, "the rollback left the limits changed"
            Path(m).write_text(old_text)
            p = vbdecl(env, "plan", m, "--detailed-exitcode")
            assert p.returncode == 0, p.stdout + p.stderr
    finally:
        d = vbdecl(env, "destroy", "h2swap", "-y")
    assert d.returncode == 0, d.stdout + d.stderr
    assert _ours() == before


def test_processes_moved_out_of_the_cgroup_by_hand_are_drift_apply_repairs(env: dict[str, str],
                                                                           tmp_path: Path) -> None:
    """A limits review's finding: the environment's processes moved out of its memory
    cgroup by hand escaped the limit (exec's too, which joins the init's cgroups), and
    plan and status saw nothing."""
    extra = '  process:\n    command: ["/bin/sleep", "120"]'
    m = manifest(tmp_path, "    memory: 64Mi\n    pids: 40", extra, name="h6moved")
    r = vbdecl(env, "apply", m, "-y")
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        st = json.loads(vbdecl(env, "status", "h6moved", "--json").stdout)
        mem_dir = next(x for x in st["resources"] if x["id"] == "cgroup")["record"]["controllers"]["memory"]
        procs = Path(mem_dir, "cgroup.procs").read_text().split()
        ours = Path("/sys/fs/cgroup/memory" + _memory_cgroup(os.getpid()), "cgroup.procs")
        for pid in procs:
            ours.write_text(pid)
        assert Path(mem_dir, "cgroup.procs").read_text().split() == []
        p = vbdecl(env, "plan", m, "--detailed-exitcode")
        assert p.returncode == 2 and "~ cgroup" in p.stdout, p.stdout + p.stderr
        r = vbdecl(env, "apply", m, "-y")
        assert r.returncode == 0, r.stdout + r.stderr
        assert sorted(Path(mem_dir, "cgroup.procs").read_text().split()) == sorted(procs)
        assert vbdecl(env, "plan", m, "--detailed-exitcode").returncode == 0
    finally:
        assert vbdecl(env, "destroy", "h6moved", "-y").returncode == 0


def test_a_live_environments_own_cgroup_namespace_is_rooted_at_its_cgroup(env: dict[str, str],
                                                                         tmp_path: Path) -> None:
    """A limits review's finding: with namespaces.cgroup and limits, the process and exec
    of a live environment saw host paths (`4:memory:/../../vbdecl/vb-...`): the init made
    the namespace before the cgroup action moved it in. A run's processes see `/`."""
    extra = ('  namespaces: {cgroup: true}\n'
             '  process:\n    command: ["/bin/sh", "-c", "cat /proc/self/cgroup; exec sleep 120"]')
    m = manifest(tmp_path, "    memory: 64Mi\n    pids: 40", extra, name="h6cgns")
    r = vbdecl(env, "apply", m, "-y")
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        ex = vbdecl(env, "exec", "h6cgns", "--", "/bin/cat", "/proc/self/cgroup")
        assert ex.returncode == 0, ex.stderr
        deadline = time.monotonic() + 10
        while not (logged := vbdecl(env, "logs", "h6cgns").stdout):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for seen in (ex.stdout, logged):
            paths = [line.split(":", 2)[2] for line in seen.splitlines()]
            assert paths and all(p == "/" for p in paths), seen
    finally:
        assert vbdecl(env, "destroy", "h6cgns", "-y").returncode == 0


def test_a_pids_limit_added_beside_memory_on_pure_v1_holds_exec_and_a_restart(env: dict[str, str],
                                                                              tmp_path: Path) -> None:
    """A review: on pure cgroup v1 (no cgroup2 tracking directory) a limit of another
    controller added to a live environment with limits.memory took its processes from
    the memory directory, which the init stays out of: the init was not moved into the
    new pids cgroup, and exec's commands and a restarted process (which join the init's
    cgroups) escaped the new limit."""
    real = cg.current_layout()
    if "pids" not in real.v1 or "memory" not in real.v1:
        pytest.skip("needs v1 memory and pids hierarchies")
    v1 = dict(env, VBDECL_CGROUP_LAYOUT=json.dumps({"unified": None, "v1": real.v1, "v2_controllers": []}))
    extra = '  process:\n    command: ["/bin/sleep", "3700"]'
    m = manifest(tmp_path, "    memory: 64Mi", extra, name="h7v1pids")
    before = _ours()
    r = vbdecl(v1, "apply", m, "-y")
    assert r.returncode == 0, r.stdout + r.stderr
    try:
        Path(m).write_text(Path(m).read_text().replace("memory: 64Mi", "memory: 64Mi\n    pids: 50"))
        r = vbdecl(v1, "apply", m, "-y")
        assert r.returncode == 0, r.stdout + r.stderr
        st = json.loads(vbdecl(v1, "status", "h7v1pids", "--json").stdout)
        pids_dir = next(x for x in st["resources"] if x["id"] == "cgroup.pids")["record"]["dir"]
        pids_cgroup = "/" + os.path.relpath(pids_dir, real.v1["pids"])     # (as /proc/PID/cgroup shows it)
        (init, _), (proc, _) = _process_ids(v1, "h7v1pids")
        assert _cgroups_by_controller(init)["pids"] == pids_cgroup, _cgroups(init)
        assert _cgroups_by_controller(proc)["pids"] == pids_cgroup, _cgroups(proc)
        r = vbdecl(v1, "exec", "h7v1pids", "--", "/bin/cat", "/proc/self/cgroup")
        assert r.returncode == 0, r.stderr
        assert f"pids:{pids_cgroup}\n" in r.stdout, (pids_cgroup, r.stdout)
        # a restarted process
        Path(m).write_text(Path(m).read_text().replace("3700", "3701"))
        r = vbdecl(v1, "apply", m, "-y")
        assert r.returncode == 0, r.stdout + r.stderr
        _, (proc, _) = _process_ids(v1, "h7v1pids")
        assert _cgroups_by_controller(proc)["pids"] == pids_cgroup, _cgroups(proc)
    finally:
        d = vbdecl(v1, "destroy", "h7v1pids", "-y")
    assert d.returncode == 0, d.stdout + d.stderr
    assert _ours() == before


def test_exec_during_an_apply_adding_memory_joins_it_and_drift_sees_every_process(
        env: dict[str, str], tmp_path: Path) -> None:
    """A review: exec reads the committed state without the lock, so one that started
    while an apply adding limits.memory was between its cgroup step and its commit
    found no memory cgroup and joined only the init's (which the init is kept out of):
    it escaped the new limit. It finds the cgroup by the instance now. And an exec's
    command moved out of the memory cgroup by hand is drift (only the declared process
    was checked)."""
    real = cg.current_layout()
    if real.place("memory") is None or real.place("memory")[0] != 1:
        pytest.skip("needs a v1 memory hierarchy")
    m, before = _applied(env, tmp_path, "    pids: 40", "h7execmem", command='["/bin/sleep", "3800"]')
    session = None
    try:
        instance = json.loads(vbdecl(env, "status", "h7execmem", "--json").stdout)["instance"]
        memory_cgroup = f"/vbdecl/{instance}"
        Path(m).write_text(Path(m).read_text().replace("pids: 40", "pids: 40\n    memory: 64Mi"))
        # killed once the memory limit landed, before its record (nor any commit)
        r = vbdecl(dict(env, VBDECL_TEST_CRASH_BEFORE_DONE="cgroup.memory"), "apply", m, "-y")
        assert r.returncode == -9, r.stdout + r.stderr
        assert Path(real.v1["memory"], "vbdecl", instance).is_dir()
        r = vbdecl(env, "exec", "h7execmem", "--", "/bin/cat", "/proc/self/cgroup")
        assert r.returncode == 0, r.stderr
        assert _memory_line(r.stdout) == memory_cgroup, r.stdout
        r = vbdecl(env, "apply", m, "-y")      # (recovers first, then lands the limit)
        assert r.returncode == 0, r.stdout + r.stderr
        assert vbdecl(env, "plan", m, "--detailed-exitcode").returncode == 0
        # the group's own memory cgroup (made with the environment: its drift is the
        # group's; that of a limit added later is not probed)
        assert vbdecl(env, "destroy", "h7execmem", "-y").returncode == 0
        r = vbdecl(env, "apply", m, "-y")
        assert r.returncode == 0, r.stdout + r.stderr
        instance = json.loads(vbdecl(env, "status", "h7execmem", "--json").stdout)["instance"]
        memory_cgroup = f"/vbdecl/{instance}"
        session = subprocess.Popen([VBDECL, "exec", "h7execmem", "--", "/bin/sleep", "3801"], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        command = None
        while command is None:
            assert time.monotonic() < deadline, "no exec'd command"
            kids = Path(f"/proc/{session.pid}/task/{session.pid}/children").read_text().split()
            if kids and Path(f"/proc/{kids[0]}/cmdline").read_bytes().startswith(b"/bin/sleep"):
                command = int(kids[0])
            time.sleep(0.02)
        assert _memory_cgroup(command) == memory_cgroup
        Path(real.v1["memory"] + _memory_cgroup(os.getpid()), "cgroup.procs").write_text(str(command))
        p = vbdecl(env, "plan", m, "--detailed-exitcode")
        assert p.returncode == 2 and "~ cgroup" in p.stdout, p.stdout + p.stderr
        r = vbdecl(env, "apply", m, "-y")
        assert r.returncode == 0, r.stdout + r.stderr
        assert _memory_cgroup(command) == memory_cgroup
    finally:
        d = vbdecl(env, "destroy", "h7execmem", "-y")
        if session is not None:
            session.wait(timeout=30)
    assert d.returncode == 0, d.stdout + d.stderr
    assert _ours() == before


def _memory_line(text: str) -> str:
    return next(line.split(":", 2)[2] for line in text.splitlines() if line.split(":", 2)[1] == "memory")


@pytest.mark.skipif(not os.path.exists(PY3), reason="needs /usr/bin/python3")
def test_plan_warns_of_a_limit_below_what_the_environment_uses(env: dict[str, str], tmp_path: Path) -> None:
    """A day-2 review lowered limits.memory under the environment's usage: plan said `~`,
    apply failed with EBUSY and rolled back. Plan (and apply) say so first; the same for
    a pids limit under the processes running."""
    hold = f"{PY3} -c 'import time; b = bytearray(48 << 20); time.sleep(120)' &"
    command = f'["/bin/sh", "-c", "{hold} for i in 1 2 3 4 5; do /bin/sleep 120 & done; wait"]'
    m, _ = _applied(env, tmp_path, "    memory: 128Mi\n    pids: 64", "h6under", command=command)
    try:
        deadline = time.monotonic() + 20
        while True:
            st = json.loads(vbdecl(env, "status", "h6under", "--json").stdout)
            used = next(x for x in st["resources"] if x["id"] == "cgroup")["usage"]["memory"]["current"]
            if used > 40 << 20:
                break
            assert time.monotonic() < deadline, used
            time.sleep(0.1)
        Path(m).write_text(Path(m).read_text().replace("memory: 128Mi", "memory: 16Mi")
                           .replace("pids: 64", "pids: 5"))
        r = vbdecl(env, "plan", m)
        assert r.returncode == 0, r.stderr
        assert "warning: h6under: limits.memory 16Mi is below what the environment uses now (" in r.stderr
        assert "the apply fails and rolls back" in r.stderr
        assert "warning: h6under: limits.pids 5 is below the " in r.stderr, r.stderr
        # an environment that is replaced starts with nothing in use
        replaced = Path(m).read_text().replace("  limits:", "  namespaces: {ipc: false}\n  limits:")
        Path(m).write_text(replaced)
        r = vbdecl(env, "plan", m)
        assert "-/+ env" in r.stdout and "limits.memory" not in r.stderr, r.stdout + r.stderr
        Path(m).write_text(Path(m).read_text().replace("memory: 16Mi", "memory: 128Mi")
                           .replace("pids: 5", "pids: 64").replace("  namespaces: {ipc: false}\n", ""))
        r = vbdecl(env, "plan", m)
        assert "warning" not in r.stderr, r.stderr
    finally:
        assert vbdecl(env, "destroy", "h6under", "-y").returncode == 0


def _child_named(parent: int, name: str) -> int | None:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            comm, _, rest = stat[stat.index("(") + 1:].rpartition(")")
            if comm == name and int(rest.split()[1]) == parent:
                return int(entry)
    return None


def test_the_cgroups_of_a_run_killed_with_its_janitor_are_swept(env: dict[str, str], tmp_path: Path) -> None:
    """A crash review: a SIGKILL of `vbdecl run` and of its janitor at once (`pkill -9`, an
    OOM kill) left the run's cgroup directories, which nothing found again (`recover` said
    there was nothing to do). The run's mark (runtime/runmarks.py) lets `recover` and the
    next run's end find them."""
    import signal

    m = manifest(tmp_path, "    memory: 64Mi\n    pids: 32")
    before = _ours()
    run_root = Path(env["VBDECL_STATE_DIR"]) / "run"
    for sweeper in ("recover", "next run"):
        proc = subprocess.Popen([VBDECL, "run", m, "--", "/bin/sleep", "30"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 20
            janitor = None
            while time.monotonic() < deadline and (janitor is None or _ours() == before):
                janitor = janitor or _child_named(proc.pid, "vbdecl-janitor")
                time.sleep(0.02)
            assert janitor is not None and _ours() != before, sweeper
            assert [p.name for p in run_root.iterdir() if p.name.endswith(".run")], sweeper
            os.kill(janitor, signal.SIGKILL)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            while _ours() != before and time.monotonic() < deadline:   # (its pid 1 dies with it)
                groups = _ours() - before
                if all(not (Path(g) / "cgroup.procs").read_text().strip() for g in groups):
                    break
                time.sleep(0.05)
            assert _ours() != before, f"{sweeper}: the groups went without a sweep"
            if sweeper == "recover":
                r = vbdecl(env, "recover")
                assert r.returncode == 0 and "removed the cgroups of 1 killed run: vb-" in r.stdout, r
            else:
                r = vbdecl(env, "run", m, "--", "/bin/true")
                assert r.returncode == 0, r.stderr
            assert _ours() == before, sweeper
            assert not run_root.exists() or not list(run_root.iterdir()), sweeper
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            left = _ours() - before
            for path in sorted(left, reverse=True):      # never leak into the next tests
                os.rmdir(path)
