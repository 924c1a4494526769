"""Crash recovery inside a step: SIGKILL after an action's side effect, before its
``done`` entry is journaled (``VBDECL_TEST_CRASH_BEFORE_DONE=<id>``, or
``<id>:revert`` for its revert; vbdecl/engine/faults.py). The journal then holds an intent without a record,
and recovery must find what the step made through ``probe(params, None)``
(docs/plan-format.md, "Records"): nothing may be left behind.

test_reliability_crash.py kills right after journal entries only, so it never
sees this window: that is how a ``kill -9`` in the middle of the ``cgroup``
action leaked ``<hierarchy>/vbdecl/<instance>`` directories for good.

CI runs every host-scope action and a few environment-scope ones; all 29 with
VBDECL_FULL=1.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from test_reliability_support import (
    FULL,
    FULL_IDS,
    FullEnv,
    assert_clean,
    check,
    cleanup_envs,  # noqa: F401  (autouse fixture)
    host,
)

HOST_SCOPE = ["env", "cgroup", "cgroup.memory", "cgroup.cpu", "cgroup.pids", "net.loopback",
              "net.bridge[BRIDGE]", "net.veth", "net.address", "net.guard", "net.route", "nat.masquerade",
              "nat.port[PORT/tcp]", "process"]
APPLY_IDS = FULL_IDS if FULL else [*HOST_SCOPE, "rootfs", "mount[/usr]", "mount[/srv]", "net.dns"]
DESTROY_IDS = FULL_IDS if FULL else ["process", "nat.port[PORT/tcp]", "nat.masquerade",
                                     "net.guard", "net.address", "net.bridge[BRIDGE]", "cgroup", "env"]
# Steps whose probe(params, None) has nothing to find: lo is up only inside the
# environment's network namespace and the rootfs mount lives in its mount namespace;
# both die with the environment, which is always new with them.
NOTHING_TO_FIND = {"net.loopback", "rootfs"}


def _entries(env: FullEnv) -> list[dict[str, object]]:
    p = env.state / "envs" / env.name / "journal.jsonl"
    return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []


def _in_flight(env: FullEnv) -> list[str]:
    """Ids with an intent and no done in the open transaction."""
    entries = _entries(env)
    start = max(i for i, e in enumerate(entries) if e["t"] == "begin")
    intents = {e["seq"]: e["id"] for e in entries[start:] if e["t"] == "intent"}
    done = {e["seq"] for e in entries[start:] if e["t"] == "done"}
    return [rid for seq, rid in intents.items() if seq not in done]


def _probe_in_flight(env: FullEnv, rid: str) -> object:
    """What recovery's probe(params, None) reports for the in-flight step ``rid``: the
    session replays the open transaction (as recovery does) and asks the op."""
    from vbdecl.engine import journal, paths
    from vbdecl.engine.executor import Engine, _op
    from vbdecl.ops.net import release

    engine = Engine(env.state)
    with engine.session(env.name, recover=False, create=False) as s:
        entries = journal.open_transaction(journal.read(paths.journal_file(env.name, engine.state_dir)))
        assert entries is not None
        s.instance = entries[0]["instance"]
        s._load_context(entries[0]["plan"])
        s._replay(entries)
        intent = next(e for e in entries if e["t"] == "intent" and e["id"] == rid)
        ctx = s._ctx()
        try:
            return _op(intent["kind"]).probe(ctx, intent["params"], None)
        finally:
            release(ctx)


def _shared_net_files(env: FullEnv) -> list[str]:
    """The state root's shared network files: gone once no lease or bridge user is left."""
    return sorted(p.name for p in env.state.glob("net.*.json"))


@pytest.mark.parametrize("aid", APPLY_IDS)
def test_sigkill_in_flight_during_apply(tmp_path: Path, aid: str) -> None:
    env = FullEnv(tmp_path)
    rid = env.real_id(aid)
    before = host()
    out = env.apply(env={"VBDECL_TEST_CRASH_BEFORE_DONE": rid})
    assert out.returncode == -signal.SIGKILL, (rid, out.returncode, out.stderr)
    assert env.journal_open()
    assert _in_flight(env) == [rid]          # the hook fired inside that step
    found = _probe_in_flight(env, rid)      # what recovery's probe(params, None) sees
    assert (found is None) == (aid in NOTHING_TO_FIND), (rid, found)
    if aid.startswith("nat.port"):      # (its hairpin too, with its digest: a review)
        assert found is not None and {"hairpin", "hairpin_sha256"} <= set(found), found
    check(env.recover(), 0, f"recover after a kill inside {rid}")
    assert not env.journal_open()
    assert env.state_json() is None
    assert _shared_net_files(env) == []
    assert_clean(before, f"recover after a kill inside {rid} of apply")


def test_destroy_after_a_killed_first_apply_rolls_it_back_and_says_so(tmp_path: Path) -> None:
    """A crash review: destroy after a first apply killed half-way recovered it (rolled
    back: nothing left), then said the environment does not exist, with exit 1."""
    env = FullEnv(tmp_path)
    before = host()
    out = env.apply(env={"VBDECL_TEST_CRASH_BEFORE_DONE": env.real_id("net.address")})
    assert out.returncode == -signal.SIGKILL, out.stderr
    out = env.destroy()
    check(out, 0, "destroy after a killed first apply")
    assert f"{env.name}: nothing left to destroy (the interrupted apply that made it was rolled back)" \
        in out.stdout, out.stdout + out.stderr
    assert env.state_json() is None and not env.journal_open()
    out = env.apply(env={"VBDECL_TEST_CRASH_BEFORE_DONE": env.real_id("net.address")})
    assert out.returncode == -signal.SIGKILL, out.stderr
    out = env.cli("destroy", env.name, "-y", "--json")       # (the result names it too)
    check(out, 0, "destroy --json after a killed first apply")
    result = json.loads(out.stdout.splitlines()[-1])
    assert [(d["name"], d.get("rolled_back")) for d in result["destroyed"]] == [(env.name, True)], result
    assert_clean(before, "destroy after a killed first apply")


def test_an_environment_left_with_an_empty_root_is_told_to_be_destroyed(tmp_path: Path) -> None:
    """A limits review: an apply whose rollback failed at the cgroup, then a recovery that
    failed there too, left the environment's init with an empty root (the root goes with
    the namespace, so its revert leaves it); every later apply then failed "no directory
    to stage the new root in", hinting at /tmp in the host's root. It says what is
    wrong and that destroy gets out of it."""
    env = FullEnv(tmp_path)
    before = host()
    assert env.apply(fault="process,cgroup:revert").returncode == 1
    env.apply(fault="cgroup:revert")
    out = env.apply()
    assert out.returncode == 1, out.stdout + out.stderr
    assert "the environment's root is an empty one left by an interrupted apply" in out.stderr, out.stderr
    assert "vbdecl destroy the environment, then apply it again" in out.stderr, out.stderr
    check(env.destroy(), 0, "destroy of an environment left with an empty root")
    assert_clean(before, "destroy of an environment left with an empty root")


@pytest.mark.parametrize("aid", DESTROY_IDS)
def test_sigkill_in_flight_during_destroy(tmp_path: Path, aid: str) -> None:
    env = FullEnv(tmp_path)
    rid = env.real_id(aid)
    before = host()
    check(env.apply(), 0, "apply")
    out = env.destroy(env={"VBDECL_TEST_CRASH_BEFORE_DONE": f"{rid}:revert"})
    assert out.returncode == -signal.SIGKILL, (rid, out.returncode, out.stderr)
    assert _in_flight(env) == [rid]
    check(env.recover(), 0, f"recover after a kill inside the revert of {rid}")
    assert not env.journal_open()
    assert env.state_json() is None
    assert _shared_net_files(env) == []
    assert_clean(before, f"recover after a kill inside {rid} of destroy")



def test_probe_without_a_record_reports_only_this_instance(tmp_path: Path) -> None:
    """probe(params, None) reports only objects of ctx.instance: beside a live environment
    (same state root, bridge, subnet and params), another instance's probes find nothing."""
    from vbdecl.engine.executor import _op
    from vbdecl.ops.base import Context
    from vbdecl.ops.net import release

    env = FullEnv(tmp_path)
    before = host()
    check(env.apply(), 0, "apply")
    state = env.state_json()
    assert state is not None
    stranger = "vb-00000000"
    ctx = Context(name="stranger", instance=stranger, state_dir=str(env.state / "envs" / "stranger"),
                  runtime_dir=str(env.state / "run" / stranger), spec=state["plan"]["spec"])
    try:
        found = {rid: _op(res["kind"]).probe(ctx, res["params"], None)
                 for rid, res in state["resources"].items()}
    finally:
        release(ctx)
    assert {rid: rec for rid, rec in found.items() if rec is not None} == {}
    check(env.destroy(), 0, "destroy")
    assert_clean(before, "apply + destroy")


def _env_commands(env: FullEnv) -> list[str]:
    """Command lines of the processes in the live environment's cgroup (its init's too)."""
    state = env.state_json()
    assert state is not None
    procs = Path(state["resources"]["cgroup"]["record"]["dirs"][0]["path"], "cgroup.procs")
    out = []
    for pid in procs.read_text().split():
        try:
            out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip())
        except OSError:
            pass
    return sorted(out)


def test_sigkill_in_flight_during_process_restart(tmp_path: Path) -> None:
    """A changed command restarts the process in the live environment (-/+ process); a
    kill after the new process started but before its record was journaled must not
    leave it running beside the old one that the rollback starts again."""
    env = FullEnv(tmp_path, command=["/bin/sleep", "3600"])
    before = host()
    check(env.apply(), 0, "apply")
    running = _env_commands(env)
    assert "/bin/sleep 3600" in running
    env.path.write_text(env.path.read_text().replace('"3600"', '"3601"'))
    out = env.apply(env={"VBDECL_TEST_CRASH_BEFORE_DONE": "process"})
    assert out.returncode == -signal.SIGKILL, out.stderr
    assert "/bin/sleep 3601" in _env_commands(env)
    check(env.recover(), 0, "recover after a kill inside the restart of process")
    after = _env_commands(env)
    assert "/bin/sleep 3601" not in after, after
    assert after.count("/bin/sleep 3600") == 1, after
    check(env.destroy(), 0, "destroy")
    assert_clean(before, "destroy after a kill inside the restart of process")
