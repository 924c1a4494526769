"""SIGKILL at 30 points of an apply and of a destroy (the process kills itself
right after its k-th durable journal entry: VBDECL_TEST_CRASH_AFTER=k). The
next command on the environment recovers first, and nothing is left behind:
the host is as before the command (or as after it, when the kill came after
the commit), and a final destroy leaves nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import pytest
import testops

from vbdecl.engine import journal, paths, store
from vbdecl.engine.executor import Engine

testops.register()


def _cli(sd: Path, *args: str, crash: int | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("VBDECL_FAULT", None)
    if crash is not None:
        env["VBDECL_TEST_CRASH_AFTER"] = str(crash)
    return subprocess.run([sys.executable, testops.__file__, "--state-dir", str(sd), *args],
                          env=env, capture_output=True, text=True, timeout=60)


def _points(total: int, n: int = 30) -> list[int]:
    pts = sorted({max(1, round(1 + i * (total - 1) / (n - 1))) for i in range(n)})
    return pts


def _apply_crashes(tmp: Path) -> None:
    root, sd = tmp / "root", tmp / "state"
    root.mkdir()
    v1 = testops.make_plan("web", root)
    v2 = testops.make_plan("web", root, content="v2", size="2m", files=12)
    p2 = testops.write_plan(tmp / "v2.json", v2)
    Engine(sd).apply(v1)
    host1 = testops.host_tree(root)
    # how many journal entries a full apply of v2 writes (then undo it)
    jpath = paths.journal_file("web", sd)
    before = len(journal.read(jpath))
    Engine(sd).apply(v2)
    host2 = testops.host_tree(root)
    total = len(journal.read(jpath)) - before
    Engine(sd).apply(v1)
    host1 = testops.host_tree(root)
    assert total >= 40
    points = _points(total)
    assert len(points) == 30
    for i, k in enumerate(points):
        out = _cli(sd, "apply", str(p2), "-y", crash=k)
        assert out.returncode == -signal.SIGKILL, (k, out.stderr)
        committed = store.load("web", sd)["plan"]["manifest_hash"] == v2["manifest_hash"]
        if k < total:
            assert testops.journal_open(sd, "web"), k
        if i % 2 == 0:
            # explicit recovery: back to v1 (or v2 when the kill came after the commit)
            Engine(sd).recover("web")
            assert testops.host_tree(root) == (host2 if committed else host1), k
            assert not testops.journal_open(sd, "web")
            assert Engine(sd).recover("web") is False
        else:
            # the next command recovers first, then does its own work
            out = _cli(sd, "apply", str(p2), "-y")
            assert out.returncode == 0, (k, out.stderr)
            assert "recover" in out.stderr or committed or k == total
            assert testops.host_tree(root) == host2, k
        Engine(sd).apply(v1)
        assert testops.host_tree(root) == host1
    Engine(sd).destroy("web")
    assert testops.host_tree(root) == {}


def _destroy_crashes(tmp: Path) -> None:
    root, sd = tmp / "root", tmp / "state"
    root.mkdir()
    plan = testops.make_plan("web", root, files=12)
    jpath = paths.journal_file("web", sd)
    Engine(sd).apply(plan)
    before = len(journal.read(jpath))
    Engine(sd).destroy("web")
    total = len(journal.read(jpath)) - before
    assert total >= 40
    points = _points(total)
    assert len(points) == 30
    for i, k in enumerate(points):
        Engine(sd).apply(plan)
        assert testops.host_tree(root) != {}
        out = _cli(sd, "destroy", "web", "-y", crash=k)
        assert out.returncode == -signal.SIGKILL, (k, out.stderr)
        if i % 2 == 0:
            Engine(sd).recover("web")      # a destroy is rolled forward
        else:
            out = _cli(sd, "recover")      # every environment
            assert out.returncode == 0, (k, out.stderr)
        assert testops.host_tree(root) == {}, k
        assert store.load("web", sd) is None
        assert not testops.journal_open(sd, "web")


def test_sigkill_at_30_points_of_apply(tmp_path: Path) -> None:
    testops.in_private_mount_ns(_apply_crashes, tmp_path)


def test_sigkill_at_30_points_of_destroy(tmp_path: Path) -> None:
    testops.in_private_mount_ns(_destroy_crashes, tmp_path)


def test_torn_journal_tail_is_repaired(tmp_path: Path) -> None:
    def body(tmp: Path) -> None:
        root, sd = tmp / "root", tmp / "state"
        root.mkdir()
        plan = testops.make_plan("web", root, files=2, mounts=1)
        out = _cli(sd, "apply", str(testops.write_plan(tmp / "p.json", plan)), "-y", crash=5)
        assert out.returncode == -signal.SIGKILL
        jpath = Path(paths.journal_file("web", sd))
        with open(jpath, "ab") as f:
            f.write(b'{"t":"done","txn":"x"')          # a write cut by power loss
        assert Engine(sd).recover("web") is True
        assert testops.host_tree(root) == {}
        assert jpath.exists() is False or jpath.read_bytes().endswith(b"\n")

    testops.in_private_mount_ns(body, tmp_path)


def _apply_interrupted(tmp_path: Path, seconds: float, signals: int,
                       last: bool = False) -> tuple[Path, Path, str, str]:
    """Apply a plan with a slow action (then one after it, unless ``last``), and send
    ``signals`` SIGTERMs, 0.2 s apart, once the slow one runs: (root, state dir,
    stdout, stderr). The apply exits 130, as interrupted."""
    root, sd = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    slow = testops.action("slow", "test.slow", {"path": str(root / "web" / "slow"), "content": "z",
                                                "seconds": seconds}, ["dir[/]"])
    after = testops.action("after", "test.file", {"path": str(root / "web" / "after"), "content": "a"},
                           ["slow"])
    plan = testops.make_plan("web", root, files=4, mounts=0, extra=[slow] if last else [slow, after])
    p = testops.write_plan(tmp_path / "p.json", plan)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VBDECL_") or k == "VBDECL_CACHE_DIR"}
    proc = subprocess.Popen([sys.executable, testops.__file__, "--state-dir", str(sd), "--json",
                             "apply", str(p), "-y"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:  # wait until the slow action runs
        if '"action.started"' in line and '"slow"' in line:
            break
    for _ in range(signals):
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    return root, sd, out, err


def test_a_second_interrupt_stops_the_step_under_way(tmp_path: Path) -> None:
    root, sd, out, err = _apply_interrupted(tmp_path, 30, 2)
    assert "error: slow: apply failed: interrupted" in err
    assert '"action.reverted"' in out
    assert testops.host_tree(root) == {}
    assert not (sd / "envs" / "web").exists()


def test_an_interrupt_lets_the_step_under_way_finish_then_rolls_back(tmp_path: Path) -> None:
    """An interrupt raised inside an action can land in the first import of a module
    (pyroute2's asyncio): the half-made module broke every revert after it. The first
    interrupt now waits for the step under way, then the apply rolls back."""
    root, sd, out, err = _apply_interrupted(tmp_path, 1.5, 1)
    assert "finishing the step under way first" in err
    assert "error: after: interrupted (SIGINT or SIGTERM) before this step began" in err
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert {"event": "action.applied", "id": "slow"}.items() <= next(
        e for e in events if e.get("id") == "slow" and e["event"] == "action.applied").items()
    assert not any(e.get("id") == "after" and e["event"] == "action.started" for e in events)
    assert testops.host_tree(root) == {}
    assert not (sd / "envs" / "web").exists()


def test_an_interrupt_during_the_last_step_still_rolls_back(tmp_path: Path) -> None:
    """A review: the interrupt taken during the last step was only checked before the
    next step, so the apply committed (exit 0) with the interrupt acknowledged."""
    root, sd, out, err = _apply_interrupted(tmp_path, 1.5, 1, last=True)
    assert "error: slow: interrupted (SIGINT or SIGTERM) after the last step, before the commit" in err
    assert '"apply.committed"' not in out and testops.host_tree(root) == {}
    assert not (sd / "envs" / "web").exists()


def test_an_interrupt_during_the_commit_lets_it_finish(tmp_path: Path) -> None:
    """A new-user review: a ^C that landed after the last check, before or in the
    commit, raised there: no rollback, no commit, an open transaction (`needs
    recovery`) and the environment running. The commit now finishes, as a step does."""
    root, sd = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    p = testops.write_plan(tmp_path / "p.json", testops.make_plan("web", root, files=3, mounts=0))
    env = {k: v for k, v in os.environ.items() if not k.startswith("VBDECL_") or k == "VBDECL_CACHE_DIR"}
    r = subprocess.run([sys.executable, testops.__file__, "--state-dir", str(sd), "apply", str(p), "-y"],
                       env={**env, "VBDECL_TEST_INTERRUPT_AT": "commit"}, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert "web: applied revision 1" in r.stdout
    assert "interrupted during the commit: the apply completed" in r.stderr
    assert not testops.journal_open(sd, "web")
    assert testops.host_tree(root) != {}
    Engine(sd).destroy("web")
    assert testops.host_tree(root) == {}


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_an_interrupt_during_a_commit_stops_the_environments_after_it(tmp_path: Path) -> None:
    """A review: the interrupt a commit deferred stayed pending, and the next manifest of
    `apply DIR` journaled its begin and then rolled back (exit 130), or a prune left an
    open destroy. The rest is not started: one line says so, exit 130."""
    from testmanifests import head

    d = tmp_path / "envs"
    d.mkdir()
    for name in ("intca", "intcb"):
        (d / f"{name}.yaml").write_text(head(name, template=False)
                                        + "  process:\n    command: [/bin/sleep, '60']\n")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("VBDECL_") or k == "VBDECL_CACHE_DIR"},
           "VBDECL_STATE_DIR": str(tmp_path / "state"), "VBDECL_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    r = subprocess.run([sys.executable, "-m", "vbdecl", "apply", str(d), "-y", "--prune"],
                       env={**env, "VBDECL_TEST_INTERRUPT_AT": "commit"}, capture_output=True, text=True,
                       timeout=120)
    try:
        assert r.returncode == 130, r.stderr
        assert "intca: applied revision 1" in r.stdout
        assert "interrupted during a commit (that apply completed): intcb and the environments after it " \
               "were not applied" in r.stderr
        sd = tmp_path / "state"
        assert store.load("intcb", sd) is None and not testops.journal_open(sd, "intcb")
        assert not testops.journal_open(sd, "intca")
    finally:
        subprocess.run([sys.executable, "-m", "vbdecl", "destroy", "intca", "-y"], env=env,
                       capture_output=True, timeout=120)


def test_an_interrupt_during_the_rollback_after_an_interrupt_stops_at_once(tmp_path: Path) -> None:
    """The first interrupt is a request; once it took effect, the next one is the
    second and is not deferred (a review saw it taken for a first one again)."""
    from vbdecl.engine import interrupts

    interrupts.install()
    try:
        with interrupts.deferred():
            os.kill(os.getpid(), signal.SIGINT)      # during a step: noted
        with pytest.raises(interrupts.Interrupted):
            interrupts.check()
        with pytest.raises(KeyboardInterrupt), interrupts.deferred():   # the rollback
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        interrupts._raised = False


def test_destroy_after_an_interrupted_destroy_succeeds(tmp_path: Path) -> None:
    """`destroy` after a killed `destroy` finishes it (recovery rolls it forward) and that
    is the destroy asked for: exit 0 and one line saying so, never "does not exist"."""
    def body(tmp: Path) -> None:
        root, sd = tmp / "root", tmp / "state"
        root.mkdir()
        plan = testops.make_plan("web", root, files=4)
        for args in ((), ("--json",)):
            Engine(sd).apply(plan)
            out = _cli(sd, "destroy", "web", "-y", crash=6)     # begin, intent, done, ...
            assert out.returncode == -signal.SIGKILL, out.stderr
            assert testops.journal_open(sd, "web") and testops.host_tree(root) != {}
            out = _cli(sd, *args, "destroy", "web", "-y")
            assert out.returncode == 0, out.stderr
            assert "error" not in out.stderr and "does not exist" not in out.stderr, out.stderr
            if args:
                result = [json.loads(x) for x in out.stdout.splitlines()][-1]
                assert [(d["name"], d["recovered"]) for d in result["destroyed"]] == [("web", True)]
            else:
                assert out.stdout == "web: destroyed (finished the interrupted destroy)\n"
                assert out.stderr == ""
            assert testops.host_tree(root) == {}
            assert store.load("web", sd) is None and not testops.journal_open(sd, "web")
        # with nothing left to finish, a second destroy is an error as before (one that
        # says it was destroyed: its history is kept)
        out = _cli(sd, "destroy", "web", "-y")
        assert out.returncode == 1 and "environment 'web' was destroyed" in out.stderr, out.stderr

    testops.in_private_mount_ns(body, tmp_path)
