"""Resource limits on real cgroups (root).

This machine: cgroup v1 controllers plus a cgroup2 mount with no controllers
(the "hybrid" layout). Each test says which layout it exercised:

- ``hybrid``: v1 controllers + a tracking dir in the real cgroup2 mount
  (cgroup.kill, cpu.stat);
- ``v1only``: the same machine seen without its cgroup2 mount (SIGKILL loop,
  cpuacct for cpu time);
- ``v2real``: the real cgroup2 mount; limits there only if it offers a
  controller (skipped otherwise; the v2 limit code is covered by the fake-tree
  tests in tests/unit/test_cgroup_layout.py).

A payload runs in the cgroup by forking a child that joins (writes "0" into
each cgroup.procs) and then execs.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vbdecl.errors import ActionError
from vbdecl.ops.base import Context
from vbdecl.ops.cgroup import Group, Limit, oom_killed, usage, warnings
from vbdecl.sys import cgroupfs as cg
from vbdecl.sys import laststep
from vbdecl.sys.rlimit import resolve

LAYOUT = cg.current_layout() if os.path.exists("/proc/self/mountinfo") else cg.Layout()
PY = sys.executable


def layouts() -> dict[str, cg.Layout]:
    out = {}
    if LAYOUT.v1 and LAYOUT.unified:
        out["hybrid"] = LAYOUT
    if LAYOUT.v1:
        out["v1only"] = cg.Layout(unified=None, v1=dict(LAYOUT.v1))
    if LAYOUT.mode == "v2":
        out["v2real"] = LAYOUT
    return out


LAYOUTS = layouts()
needs_v1 = pytest.mark.skipif("v1only" not in LAYOUTS, reason="no cgroup v1 hierarchies here")


def _instance() -> str:
    return "vb-" + secrets.token_hex(4)


class Env:
    """A group with limits applied through the ops, torn down at the end."""

    def __init__(self, layout: cg.Layout, limits: dict[str, Any]) -> None:
        full = {"memory": None, "memory_swap": None, "cpu": None, "cpu_weight": None,
                "pids": None, "io_weight": None, "rlimits": {}, "optional": False, **limits}
        self.ctx = Context(name="t", instance=_instance(), state_dir="", runtime_dir="",
                           spec={"limits": full}, extra={"cgroup_layout": layout})
        self.group = Group().apply(self.ctx, {"layout_hint": None})
        self.ctx.records["cgroup"] = self.group
        self.limits: dict[str, Any] = {}
        for name in cg.LIMITS:
            if full[name] is not None:
                self.limits[name] = Limit().apply(self.ctx, {"limit": name, "value": full[name]})
                self.ctx.records[f"cgroup.{name}"] = self.limits[name]     # as the engine keeps them
        self.pids: list[int] = []

    def spawn(self, argv: list[str], rlimits: dict[str, Any] | None = None) -> tuple[int, int]:
        """Fork a child that joins the cgroup, sets rlimits, execs argv. Returns (pid, stdout fd)."""
        ready_r, ready_w = os.pipe()
        out_r, out_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(ready_r)
                os.close(out_r)
                os.dup2(out_w, 1)
                cg.join(self.group, 0)
                if rlimits:
                    plan = laststep.LastStep()
                    plan.rlimits = [(n, soft, hard) for _, n, soft, hard in resolve(rlimits)]
                    assert laststep.exec_in_place(plan) is None
                os.write(ready_w, b"1")
                os.close(ready_w)
                os.execv(argv[0], argv)
            finally:
                os._exit(125)
        os.close(ready_w)
        os.close(out_w)
        self.pids.append(pid)
        ok = os.read(ready_r, 1)
        os.close(ready_r)
        assert ok == b"1", "the child could not join the cgroup"
        return pid, out_r

    def wait(self, pid: int, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got, status = os.waitpid(pid, os.WNOHANG)
            if got:
                self.pids.remove(pid)
                return status
            time.sleep(0.01)
        raise AssertionError(f"payload {pid} did not exit in {timeout}s")

    def destroy(self) -> None:
        for name, rec in reversed(list(self.limits.items())):
            Limit().revert(self.ctx, rec)
            del self.limits[name]
            self.ctx.records.pop(f"cgroup.{name}", None)
        Group().revert(self.ctx, self.group)
        for pid in self.pids:  # killed by the revert; reap them
            os.waitpid(pid, 0)
        self.pids.clear()


@pytest.fixture
def make_env() -> Iterator[Any]:
    envs: list[Env] = []

    def make(layout: cg.Layout, **limits: Any) -> Env:
        env = Env(layout, limits)
        envs.append(env)
        return env

    yield make
    for env in envs:
        env.destroy()


def _read_all(fd: int) -> str:
    chunks = []
    while True:
        b = os.read(fd, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(fd)
    return b"".join(chunks).decode()


def _in_procs(path: str, pid: int) -> bool:
    return str(pid) in Path(path, "cgroup.procs").read_text().split()


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_revert_kills_what_is_left_and_removes_the_dirs(make_env: Any, name: str) -> None:
    env = make_env(LAYOUTS[name], memory=64 << 20, pids=64)
    pid, out = env.spawn(["/bin/sleep", "60"])
    os.close(out)
    for d in env.group["dirs"]:
        assert _in_procs(d["path"], pid), f"{pid} not in {d['path']}"
    if name == "hybrid":
        assert env.group["unified"] and env.group["unified"].startswith(LAYOUT.unified or "-")
    t0 = time.monotonic()
    env.destroy()
    assert time.monotonic() - t0 < 2.0
    for d in env.group["created"]:
        assert not os.path.exists(d), f"{d} left behind"
    assert not Path(f"/proc/{pid}").exists()


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_memory_limit_oom_kills_and_is_reported(make_env: Any, name: str) -> None:
    env = make_env(LAYOUTS[name], memory=32 << 20, memory_swap=0)
    mem_dir = env.group["controllers"]["memory"]
    limit_file = "memory.max" if env.group["unified"] == mem_dir else "memory.limit_in_bytes"
    assert int(Path(mem_dir, limit_file).read_text()) == 32 << 20
    assert not oom_killed(env.group)
    pid, out = env.spawn([PY, "-c", "b = b'x' * (256 << 20); print('survived')"])
    status = env.wait(pid)
    assert _read_all(out) == ""
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert oom_killed(env.group)
    u = usage(env.group)
    assert u["memory"]["oom_kills"] >= 1 and u["memory"]["peak"] <= 32 << 20


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_plain_sigkill_is_not_reported_as_oom(make_env: Any, name: str) -> None:
    env = make_env(LAYOUTS[name], memory=64 << 20)
    pid, out = env.spawn(["/bin/sleep", "60"])
    os.close(out)
    os.kill(pid, signal.SIGKILL)
    env.wait(pid)
    assert not oom_killed(env.group)


FORK_LOOP = """
import os, time
n = 0
err = None
for _ in range(200):
    try:
        pid = os.fork()
    except OSError as e:
        err = e.errno
        break
    if pid == 0:
        os.close(1)
        time.sleep(30)
        os._exit(0)
    n += 1
print(n, err, flush=True)
"""


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_fork_loop_stops_at_pids(make_env: Any, name: str) -> None:
    env = make_env(LAYOUTS[name], pids=8)
    pids_dir = env.group["controllers"]["pids"]
    assert Path(pids_dir, "pids.max").read_text().strip() == "8"
    pid, out = env.spawn([PY, "-c", FORK_LOOP])
    status = env.wait(pid)
    n, err = _read_all(out).split()
    assert os.waitstatus_to_exitcode(status) == 0
    # the payload itself is one of the 8; it forked 7, then EAGAIN
    assert int(n) == 7 and err == "11"
    assert int(Path(pids_dir, "pids.current").read_text()) == 7
    assert int(Path(pids_dir, "pids.events").read_text().split()[1]) >= 1
    # the sleeping children are still inside: destroy kills them (fixture teardown)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_busy_loop_under_cpu_02_gets_a_fifth_of_a_core(make_env: Any, name: str) -> None:
    env = make_env(LAYOUTS[name], cpu=0.2)
    _pid, out = env.spawn([PY, "-c", "while True: pass"])
    os.close(out)
    time.sleep(0.3)  # interpreter start-up
    u0, t0 = usage(env.group)["cpu"]["usage_usec"], time.monotonic()
    time.sleep(1.0)
    u1, t1 = usage(env.group)["cpu"]["usage_usec"], time.monotonic()
    share = (u1 - u0) / 1e6 / (t1 - t0)
    # a fifth of a core; tolerant of scheduler granularity (100 ms periods) and a busy machine
    assert 0.05 < share < 0.3, f"busy loop got {share:.2f} of a core under cpu: 0.2"
    cpu_dir = env.group["controllers"]["cpu"]
    if env.group["unified"] != cpu_dir:
        assert cg.read_kv(os.path.join(cpu_dir, "cpu.stat"))["nr_throttled"] > 0


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_live_update_changes_limits_in_place(make_env: Any, name: str) -> None:
    env = make_env(LAYOUTS[name], memory=64 << 20, memory_swap=0, pids=16, cpu=0.5, cpu_weight=100)
    pid, out = env.spawn(["/bin/sleep", "60"])
    os.close(out)
    ctx, lim = env.ctx, Limit()
    groups_before = list(env.group["created"])
    for name_, value in (("pids", 32), ("cpu", 1.5), ("cpu_weight", 300)):
        env.limits[name_] = ctx.records[f"cgroup.{name_}"] = \
            lim.update(ctx, {"limit": name_, "value": value}, env.limits[name_])
        ctx.spec["limits"][name_] = value
        assert lim.probe(ctx, {"limit": name_, "value": value}, env.limits[name_]) == \
            env.limits[name_]
    # memory up and down again: v1 keeps memory <= memory+swap at every step
    for value in (128 << 20, 32 << 20):
        ctx.spec["limits"]["memory"] = value
        env.limits["memory"] = ctx.records["cgroup.memory"] = \
            lim.update(ctx, {"limit": "memory", "value": value}, env.limits["memory"])
        assert lim.probe(ctx, {"limit": "memory", "value": value}, env.limits["memory"])["value"] == value
    pids_dir = env.group["controllers"]["pids"]
    assert Path(pids_dir, "pids.max").read_text().strip() == "32"
    mem_dir = env.group["controllers"]["memory"]
    if env.group["unified"] != mem_dir:
        assert int(Path(mem_dir, "memory.limit_in_bytes").read_text()) == 32 << 20
        assert int(Path(mem_dir, "memory.memsw.limit_in_bytes").read_text()) == 32 << 20
        assert Path(env.group["controllers"]["cpu"], "cpu.cfs_quota_us").read_text().strip() == "150000"
    # same cgroup, same process: in place
    assert env.group["created"] == groups_before
    assert all(_in_procs(d["path"], pid) for d in env.group["dirs"])


@needs_v1
def test_v1only_rlimit_nofile_enforced_in_payload(make_env: Any) -> None:
    env = make_env(LAYOUTS["v1only"], pids=16)
    script = ("import os\nfds = []\ntry:\n    while True:\n        fds.append(os.open('/dev/null', 0))\n"
              "except OSError as e:\n    print(len(fds), e.errno)\n"
              "for fd in fds:\n    os.close(fd)\n"
              "print([l for l in open('/proc/self/limits') if l.startswith('Max open files')][0])")
    pid, out = env.spawn([PY, "-c", script], rlimits={"nofile": [16, 16]})
    env.wait(pid)
    first, limits_line = _read_all(out).splitlines()[:2]
    opened, err = first.split()
    assert err == "24"  # EMFILE
    assert int(opened) < 16
    assert limits_line.split()[3:5] == ["16", "16"]


def test_missing_controller_is_an_error_or_with_optional_a_warning() -> None:
    # This machine's layout without its pids hierarchy (nothing is created for the error case).
    v1 = {k: v for k, v in LAYOUT.v1.items() if k != "pids"}
    layout = cg.Layout(unified=LAYOUT.unified, v1=v1,
                       v2_controllers=LAYOUT.v2_controllers - {"pids"})
    limits = {"memory": 64 << 20, "pids": 8, "optional": False}
    ctx = Context(name="t", instance=_instance(), state_dir="", runtime_dir="",
                  spec={"limits": limits}, extra={"cgroup_layout": layout})
    with pytest.raises(ActionError) as err:
        Group().apply(ctx, {"layout_hint": None})
    assert err.value.where == "cgroup" and "pids" in str(err.value)
    assert err.value.hint
    limits["optional"] = True
    if not v1 and not layout.unified:
        pytest.skip("no cgroup hierarchy at all")
    rec = Group().apply(ctx, {"layout_hint": None})
    try:
        assert [w for w in warnings(rec) if "limits.pids not enforced" in w]
        assert "pids" not in rec["controllers"]
        ctx.records["cgroup"] = rec
        assert Limit().apply(ctx, {"limit": "pids", "value": 8})["skipped"]
    finally:
        Group().revert(ctx, rec)


def test_env_pid_is_moved_in_and_killed_on_revert() -> None:
    if not LAYOUTS:
        pytest.skip("no cgroup hierarchy")
    pid = os.fork()
    if pid == 0:
        try:
            time.sleep(60)
        finally:
            os._exit(0)
    ctx = Context(name="t", instance=_instance(), state_dir="", runtime_dir="",
                  spec={"limits": {"pids": 32, "optional": False}}, env_pid=pid,
                  extra={"cgroup_layout": LAYOUT})
    try:
        rec = Group().apply(ctx, {"layout_hint": None})
        for d in rec["dirs"]:
            assert _in_procs(d["path"], pid)
        Group().revert(ctx, rec)
        assert not any(os.path.exists(d) for d in rec["created"])
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


@pytest.mark.skipif(not LAYOUT.unified, reason="no cgroup2 mount")
def test_v2real_group_kill_and_cpu_time_without_controllers() -> None:
    """The v2 group code on the REAL cgroup2 mount (no controllers needed):
    join, cpu.stat accounting, cgroup.kill of a forking payload, rmdir."""
    layout = cg.Layout(unified=LAYOUT.unified, v1={}, v2_controllers=LAYOUT.v2_controllers)
    env = Env(layout, {})
    try:
        assert env.group["unified"] and env.group["dirs"][0]["version"] == 2
        _pid, out = env.spawn([PY, "-c", FORK_LOOP.replace("range(200)", "range(5)")
                              + "\nwhile True: pass"])
        line = b""
        while not line.endswith(b"\n"):  # print() may write in pieces (PYTHONUNBUFFERED)
            chunk = os.read(out, 100)
            assert chunk, "payload exited early"
            line += chunk
        os.close(out)
        assert line.split()[0] == b"5"
        assert len(Path(env.group["unified"], "cgroup.procs").read_text().split()) == 6
        deadline = time.monotonic() + 3.0
        while usage(env.group)["cpu"]["usage_usec"] < 50_000 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert usage(env.group)["cpu"]["usage_usec"] >= 50_000
    finally:
        env.destroy()
    assert not os.path.exists(env.group["unified"])


@pytest.mark.skipif(not (LAYOUT.unified and {"memory", "pids"} & LAYOUT.v2_controllers),
                    reason="the real cgroup2 mount offers no memory/pids controller here (bound "
                           "to v1); the v2 limit code is tested on a fake tree in "
                           "tests/unit/test_cgroup_layout.py")
def test_v2real_limits_on_real_cgroup2(make_env: Any) -> None:
    layout = cg.Layout(unified=LAYOUT.unified, v1={}, v2_controllers=LAYOUT.v2_controllers)
    limits = {k: v for k, v in (("memory", 64 << 20), ("pids", 8))
              if cg.LIMIT_CONTROLLER[k] in layout.v2_controllers}
    env = make_env(layout, **limits)
    for k, v in limits.items():
        assert cg.probe_limit(env.group, k) == v


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_concurrent_environments_share_the_parent_safely(name: str) -> None:
    """Two threads create and remove environments at once: the shared ``vbdecl`` parent
    may vanish under one of them (retried), and no instance dir is ever left behind."""
    import threading

    layout = LAYOUTS[name]
    parents = [os.path.join(m, cg.PARENT) for m in {*layout.v1.values(), layout.unified} if m]
    existed = {p for p in parents if os.path.isdir(p)}
    errors: list[BaseException] = []
    made: list[dict[str, Any]] = []

    def worker() -> None:
        try:
            for _ in range(25):
                rec = cg.create_group(layout, _instance(), ["memory", "pids"])
                made.append(rec)
                cg.set_limit(rec, "pids", 8, {"pids": 8})
                cg.remove_group(rec)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors, errors
        assert len(made) == 50
        for rec in made:
            assert not any(os.path.exists(p) for p in rec["created"])
    finally:
        # A parent made by an environment that finished before the other one is kept by
        # design (only its creator removes it); it must be empty.
        for p in parents:
            if p not in existed and os.path.isdir(p):
                assert not [e for e in os.scandir(p) if e.is_dir()], f"{p} not empty"
                os.rmdir(p)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_limit_added_to_a_live_group_brings_its_controller_in(make_env: Any, name: str) -> None:
    env = make_env(LAYOUTS[name], memory=64 << 20)
    assert "pids" not in env.group["controllers"]
    pid, out = env.spawn(["/bin/sleep", "60"])
    os.close(out)
    env.ctx.spec["limits"]["pids"] = 8
    rec = Limit().apply(env.ctx, {"limit": "pids", "value": 8})
    env.limits["pids"] = rec
    assert Path(rec["dir"], "pids.max").read_text().strip() == "8"
    assert _in_procs(rec["dir"], pid)
    rec = Limit().update(env.ctx, {"limit": "pids", "value": 9}, rec)
    env.limits["pids"] = rec
    assert Path(rec["dir"], "pids.max").read_text().strip() == "9"
    if rec["extension"]["created"]:
        Limit().revert(env.ctx, rec)
        del env.limits["pids"]
        assert not os.path.exists(rec["dir"])
        assert Path(f"/proc/{pid}").exists()  # moved out, not killed


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_revert_from_inside_the_group_does_not_kill_the_caller(name: str) -> None:
    """A helper that joined the group and then tears it down survives (it steps out first)."""
    layout = LAYOUTS[name]
    rec = cg.create_group(layout, _instance(), ["pids"])
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            cg.join(rec, 0)
            cg.remove_group(rec)
            code = 0 if not any(os.path.exists(p) for p in rec["created"]) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    try:
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    finally:
        cg.remove_group(rec)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_probe_without_a_record_finds_the_group_by_instance(name: str) -> None:
    """Recovery of an apply killed inside the ``cgroup`` step (no record journaled):
    probe(params, None) reports this instance's directories, and only them, in every
    hierarchy; revert removes them and the ``vbdecl`` parents."""
    layout = LAYOUTS[name]
    limits = {"memory": 64 << 20, "cpu": 0.25, "pids": 32, "rlimits": {}, "optional": False}
    ctx = Context(name="t", instance=_instance(), state_dir="", runtime_dir="",
                  spec={"limits": limits}, extra={"cgroup_layout": layout})
    other = Context(name="u", instance=_instance(), state_dir="", runtime_dir="",
                    spec={"limits": limits}, extra={"cgroup_layout": layout})
    landed = Group().apply(ctx, {"layout_hint": None})      # ... and vbdecl dies here
    theirs = Group().apply(other, {"layout_hint": None})
    pid = 0
    try:
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(ready_r)
                cg.join(landed, 0)
                os.close(ready_w)                            # joined: the parent goes on
                os.execv("/bin/sleep", ["/bin/sleep", "60"])
            finally:
                os._exit(125)
        os.close(ready_w)
        os.read(ready_r, 1)
        os.close(ready_r)
        assert any(str(pid) in Path(p, "cgroup.procs").read_text().split() for p in landed["created"])
        found = Group().probe(Context(name="t", instance=ctx.instance, state_dir="", runtime_dir="",
                                      extra={"cgroup_layout": layout}), {"layout_hint": None}, None)
        assert found is not None
        assert sorted(found["created"]) == sorted(landed["created"])
        assert found["unified"] == landed["unified"]
        assert {c: p for c, p in found["controllers"].items() if c != "cpuacct"} == \
            {c: p for c, p in landed["controllers"].items() if c != "cpuacct"}
        Group().revert(ctx, found)
        os.waitpid(pid, 0)                                   # killed by the revert
        pid = 0
        assert not any(os.path.exists(p) for p in landed["created"])
        assert all(os.path.exists(p) for p in theirs["created"])   # never another instance's
        assert Group().probe(ctx, {"layout_hint": None}, None) is None
    finally:
        cg.remove_group(theirs)
        cg.remove_group(landed)
        if pid:
            os.waitpid(pid, 0)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_limit_probe_without_a_record_finds_what_the_step_wrote(make_env: Any, name: str) -> None:
    """A limit added to a live group whose apply died before its record was journaled:
    probe(params, None) finds the value (and on v1 the directory made for the controller);
    revert sets it back and removes that directory, leaving the process alive."""
    env = make_env(LAYOUTS[name], memory=64 << 20)
    pid, out = env.spawn(["/bin/sleep", "60"])
    os.close(out)
    env.ctx.spec["limits"]["pids"] = 8
    landed = Limit().apply(env.ctx, {"limit": "pids", "value": 8})   # ... and vbdecl dies here
    env.limits["pids"] = landed      # the fixture's teardown reverts it again (idempotent)
    found = Limit().probe(env.ctx, {"limit": "pids", "value": 8}, None)
    assert found is not None and found["dir"] == landed["dir"] and found["value"] == 8
    assert bool(found.get("extension")) == bool(landed.get("extension"))
    Limit().revert(env.ctx, found)
    if landed["extension"]["created"]:
        assert not os.path.exists(landed["dir"])
        assert Limit().probe(env.ctx, {"limit": "pids", "value": 8}, None) is None
    else:
        assert cg.read_limit(landed["version"], "pids", landed["dir"]) is None
    assert Path(f"/proc/{pid}").exists()
    # a limit on a controller the group already has: the value goes back to unlimited
    found = Limit().probe(env.ctx, {"limit": "memory", "value": 64 << 20}, None)
    assert found is not None and found["value"] == 64 << 20
