"""Fault injection (VBDECL_FAULT) at every action of a 20-action plan of three
kinds (dirs, tmpfs mounts, files): the apply fails naming the action, and the
host (files, mounts) and the state directory are exactly as before. With a
failing revert both errors are reported and ``recover`` cleans up."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import testops

from vbdecl.engine import store
from vbdecl.engine.executor import Engine
from vbdecl.engine.faults import Faults
from vbdecl.errors import ActionError

testops.register()


def _fresh(tmp: Path) -> None:
    root, sd = tmp / "root", tmp / "state"
    root.mkdir()
    (sd / "envs").mkdir(parents=True)
    plan = testops.make_plan("web", root)
    assert len(plan["actions"]) == 20
    host0, state0 = testops.host_tree(root), testops.state_tree(sd)
    for action in plan["actions"]:
        aid = action["id"]
        try:
            Engine(sd, faults=Faults(aid)).apply(plan)
        except ActionError as err:
            assert err.action == aid, (aid, str(err))
            assert "injected fault" in str(err)
            assert not err.revert_errors
        else:
            raise AssertionError(f"apply with a fault at {aid} succeeded")
        assert testops.host_tree(root) == host0, aid
        assert testops.state_tree(sd) == state0, aid


def _update(tmp: Path) -> None:
    root, sd = tmp / "root", tmp / "state"
    root.mkdir()
    v1 = testops.make_plan("web", root)
    v2 = testops.make_plan("web", root, content="v2", size="2m", files=11)
    Engine(sd).apply(v1)
    host1, state1 = testops.host_tree(root), testops.state_tree(sd)
    assert any(k.startswith("mount:") for k in host1)
    todo = [c.id for c in Engine(sd).changes(v2).todo]
    assert len(todo) >= 15
    for aid in todo:
        with pytest.raises(ActionError) as info:
            Engine(sd, faults=Faults(aid)).apply(v2)
        assert info.value.action == aid
        assert testops.host_tree(root) == host1, aid
        assert testops.state_tree(sd) == state1, aid
        assert not testops.journal_open(sd, "web")
    # the destroy steps of the update fail through their revert
    with pytest.raises(ActionError) as info:
        Engine(sd, faults=Faults("mount[/m1]:revert")).apply(v2)
    assert info.value.action == "mount[/m1]"
    assert testops.host_tree(root) == host1
    Engine(sd).apply(v2)
    assert (root / "web" / "f10").exists()
    Engine(sd).destroy("web")
    assert testops.host_tree(root) == {}


def _failing_revert(tmp: Path) -> None:
    root, sd = tmp / "root", tmp / "state"
    root.mkdir()
    (sd / "envs").mkdir(parents=True)
    plan = testops.make_plan("web", root)
    ids = [a["id"] for a in plan["actions"]]
    host0, state0 = testops.host_tree(root), testops.state_tree(sd)
    for k in range(1, len(ids)):
        fault, broken = ids[k], ids[k - 1]
        with pytest.raises(ActionError) as info:
            Engine(sd, faults=Faults(f"{fault},{broken}:revert")).apply(plan)
        err = info.value
        assert err.action == fault                       # the original error first
        assert [e.action for e in err.revert_errors] == [broken]
        text = str(err)
        assert text.startswith(f"{fault}: ") and f"revert also failed: {broken}" in text
        assert "vbdecl recover web" in text
        assert testops.journal_open(sd, "web")
        assert testops.host_tree(root) != host0          # the broken revert left something
        # a failing recovery keeps the transaction open
        with pytest.raises(ActionError):
            Engine(sd, faults=Faults(f"{broken}:revert")).recover("web")
        assert testops.journal_open(sd, "web")
        assert Engine(sd).recover("web") is True
        assert Engine(sd).recover("web") is False         # recovering twice is safe
        assert testops.host_tree(root) == host0, fault
        assert testops.state_tree(sd) == state0, fault


def test_fault_at_every_action_of_a_fresh_apply(tmp_path: Path) -> None:
    testops.in_private_mount_ns(_fresh, tmp_path)


def test_fault_at_every_action_of_an_update(tmp_path: Path) -> None:
    testops.in_private_mount_ns(_update, tmp_path)


def test_failing_revert_reports_both_and_recover_cleans_up(tmp_path: Path) -> None:
    testops.in_private_mount_ns(_failing_revert, tmp_path)


def test_fault_env_var_reaches_the_cli(tmp_path: Path) -> None:
    import os
    import subprocess

    def body(tmp: Path) -> None:
        root, sd = tmp / "root", tmp / "state"
        root.mkdir()
        plan = testops.write_plan(tmp / "p.json", testops.make_plan("web", root))
        # (an id not in the plan makes nothing fail: a warning says so, a review saw it ignored)
        env = dict(os.environ, VBDECL_FAULT="mount[/nope],mount[/m1]")
        out = subprocess.run([sys.executable, testops.__file__, "--state-dir", str(sd), "apply",
                              str(plan), "-y"], env=env, capture_output=True, text=True)
        assert out.returncode == 1, out
        assert "error: mount[/m1]: injected fault (VBDECL_FAULT)" in out.stderr
        assert "warning: VBDECL_FAULT names mount[/nope]: not an action of the plan or the state " \
               "of web" in out.stderr, out.stderr
        assert "names mount[/m1]" not in out.stderr
        assert "Traceback" not in out.stderr
        assert testops.host_tree(root) == {}
        assert not (sd / "envs" / "web").exists()

    testops.in_private_mount_ns(body, tmp_path)


def test_status_and_ls_show_an_open_transaction_of_a_first_apply(tmp_path: Path) -> None:
    import subprocess

    root, sd = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    plan = testops.write_plan(tmp_path / "p.json", testops.make_plan("rec", root, files=2, mounts=0))

    def cli(*args: str, fault: str = "") -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "VBDECL_FAULT"}
        if fault:
            env["VBDECL_FAULT"] = fault
        return subprocess.run([sys.executable, testops.__file__, "--state-dir", str(sd), *args],
                              env=env, capture_output=True, text=True, timeout=60)

    out = cli("apply", str(plan), "-y", fault="file[/f1],dir[/]:revert")
    assert out.returncode == 1 and "vbdecl recover rec" in out.stderr, out
    assert "needs recovery" in cli("ls").stdout
    out = cli("status", "rec")
    assert out.returncode == 1 and "needs recovery" in out.stderr and "vbdecl recover rec" in out.stderr
    out = cli("exec", "rec", "--", "/bin/true")     # (a review's said it did not exist)
    assert out.returncode == 125 and "needs recovery" in out.stderr and "vbdecl recover rec" in out.stderr
    assert cli("recover", "rec").returncode == 0
    out = cli("status", "rec")
    assert out.returncode == 1 and "does not exist" in out.stderr
    assert testops.host_tree(root) == {}


def test_a_half_done_revert_is_set_back(tmp_path: Path) -> None:
    """A destroy whose revert changed the object and then failed (the object still
    there): the rollback sets the recorded value back rather than keeping the
    half-reverted one (a sweep found a pids limit left at "max" after a recover
    that said it restored it)."""
    root, sd = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    half = testops.action("half", "test.halfrevert", {"path": str(root / "web" / "half"),
                                                      "content": "v1"}, ["dir[/]"])
    v1 = testops.make_plan("web", root, files=1, mounts=0, extra=[half])
    Engine(sd).apply(v1)
    state1 = testops.state_tree(sd)
    with pytest.raises(ActionError) as info:
        Engine(sd).apply(testops.make_plan("web", root, files=1, mounts=0))
    assert info.value.action == "half" and not info.value.revert_errors
    assert (root / "web" / "half").read_text().endswith("\nv1")
    assert testops.state_tree(sd) == state1
    (root / "web" / "half").unlink()     # (its revert always fails)


def _stuck(tmp: Path, *, fresh: bool = False) -> tuple[Path, Path, dict[str, Any], dict[str, Any]]:
    """An apply of v2 (two new files) failing at its second file, with the first
    one's undo failing too: the rollback cannot finish, the transaction stays open.
    ``fresh``: v2 is the environment's first apply."""
    root, sd = tmp / "root", tmp / "state"
    root.mkdir()
    v1 = testops.make_plan("web", root, files=1, mounts=0)
    extra = [testops.action(f"file[/n{i}]", "test.file", {"path": str(root / "web" / f"n{i}"),
                                                          "content": "new"}, ["dir[/]"]) for i in (1, 2)]
    v2 = testops.make_plan("web", root, files=1, mounts=0, extra=extra)
    if not fresh:
        Engine(sd).apply(v1)
    with pytest.raises(ActionError) as info:
        Engine(sd, faults=Faults("file[/n2],file[/n1]:revert")).apply(v2)
    assert info.value.revert_errors
    return root, sd, v1, v2


def _journal_open(sd: Path) -> bool:
    from vbdecl.engine import journal, paths

    return journal.open_transaction(journal.read(paths.journal_file("web", str(sd)))) is not None


def test_an_apply_that_goes_ahead_abandons_a_stuck_rollback(tmp_path: Path) -> None:
    """The rollback still fails (the undo's fault stays): apply abandons it, the state
    is what was left (n1 there), and the apply creates only what is missing."""
    root, sd, _v1, v2 = _stuck(tmp_path)
    result = Engine(sd, faults=Faults("file[/n1]:revert")).apply(v2)
    assert result.steps == 1 and (root / "web" / "n1").exists() and (root / "web" / "n2").exists()
    assert not _journal_open(sd)
    state = store.load("web", str(sd))
    assert state is not None and "abandoned" not in state
    assert store.revision_numbers("web", str(sd)) == [1, 2]
    Engine(sd).destroy("web")
    assert testops.host_tree(root) == {}


def test_nothing_is_written_until_the_command_goes_ahead(tmp_path: Path) -> None:
    """recover_or_abandon only works out what was left: a command that stops there
    (declined, a stale saved plan) leaves the transaction open for recover."""
    _root, sd, _v1, _v2 = _stuck(tmp_path)
    before = testops.state_tree(sd)
    with Engine(sd, faults=Faults("file[/n1]:revert")).session("web", recover=False) as s:
        s.recover_or_abandon("apply")
        assert s.recovered == "abandoned" and s.state is not None and "file[/n1]" in s.state["resources"]
    assert testops.state_tree(sd) == before and _journal_open(sd)
    assert Engine(sd).recover("web")      # without the fault it finishes
    assert not _journal_open(sd)


def test_a_failing_probe_keeps_the_rollback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a create in flight made cannot be known when its probe fails: nothing is
    abandoned, the error stays and so does the open transaction."""
    _root, sd, _v1, _v2 = _stuck(tmp_path)
    from vbdecl.engine import journal, paths

    entries = journal.read(paths.journal_file("web", str(sd)))
    txn = journal.open_transaction(entries)
    assert txn is not None
    with journal.Journal(paths.journal_file("web", str(sd))) as j:
        j.append({"t": "intent", "txn": txn[0]["txn"], "seq": 99, "step": "create", "id": "file[/n3]",
                  "kind": "test.file", "params": {"path": "/nonexistent/n3", "content": "x"}, "old": None})

    def broken(self: Any, ctx: Any, params: Any, record: Any) -> Any:
        raise OSError(16, "busy")

    monkeypatch.setattr(testops.FileOp, "probe", broken)
    with Engine(sd).session("web", recover=False) as s, pytest.raises(ActionError):
        s.recover_or_abandon("destroy")
    assert _journal_open(sd)
    monkeypatch.undo()
    Engine(sd).recover("web")


def test_a_first_apply_abandoned_then_killed_leaves_no_environment(tmp_path: Path) -> None:
    """Killed between saving the abandoned state and closing the transaction, a
    first apply's environment is not left as a ghost: recover rolls back over the
    abandoned state and forgets it (it was never committed)."""
    root, sd, _v1, _v2 = _stuck(tmp_path, fresh=True)
    with Engine(sd, faults=Faults("file[/n1]:revert")).session("web", recover=False) as s:
        s.recover_or_abandon("apply")
        assert s.state is not None
        store.save("web", s.state, str(sd))      # the first half of _persist_abandon
    assert _journal_open(sd)
    assert Engine(sd).recover("web")
    assert store.load("web", str(sd)) is None and "web" not in store.list_envs(str(sd))
    assert testops.host_tree(root) == {}


class StartsThenFailsOp(testops.FileOp):
    """As an env step stopped before its init existed: it made the runtime
    directory's ns/ (live.start_env does that first), and then failed."""

    def apply(self, ctx: Any, params: dict[str, Any]) -> dict[str, Any]:
        os.makedirs(os.path.join(ctx.runtime_dir, "ns"), mode=0o700)
        raise KeyboardInterrupt


def test_a_first_apply_rolled_back_leaves_no_runtime_directory(tmp_path: Path) -> None:
    """A crash review's finding: <state>/run/<instance>/ns stayed for good after an
    interrupted env step was rolled back (the init, and its pid file, never existed)."""
    from vbdecl.ops import register

    register("test.startsthenfails", f"{__name__}:StartsThenFailsOp")
    root, sd = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    starts = testops.action("env", "test.startsthenfails", {"path": str(root / "web" / "e"), "content": "e"},
                            ["dir[/]"])
    plan = testops.make_plan("web", root, files=2, mounts=0, extra=[starts])
    with pytest.raises(ActionError, match="interrupted"):
        Engine(sd).apply(plan)
    assert testops.host_tree(root) == {}
    assert not (sd / "run").exists() or list((sd / "run").iterdir()) == []
    assert not (sd / "envs" / "web").exists()


@pytest.mark.parametrize("fails", ["save_revision", "save"])
def test_a_full_disk_at_the_commit_rolls_the_apply_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       fails: str) -> None:
    """A crash review filled the state directory's disk: the commit's OSError was
    reported as a bug of vbdecl, and everything the apply made stayed, with an
    open transaction. Now it rolls back and says what to do."""
    import errno

    root, sd = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    plan = testops.make_plan("web", root, files=3, mounts=0)

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(sd / "envs" / "web" / "state.json"))

    monkeypatch.setattr(store, fails, full)
    with pytest.raises(ActionError) as caught:
        Engine(sd).apply(plan)
    assert caught.value.action == "commit" and "No space left on device" in caught.value.message
    assert "nothing was changed" in (caught.value.hint or "") and not caught.value.revert_errors
    assert testops.host_tree(root) == {}
    assert not (sd / "envs" / "web").exists()
    monkeypatch.undo()
    Engine(sd).apply(plan)      # and the next apply lands
    assert testops.host_tree(root) != {}
    Engine(sd).destroy("web")


def test_a_full_disk_is_not_reported_as_a_bug(capsys: pytest.CaptureFixture[str]) -> None:
    import errno

    from vbdecl.cli.main import report_error

    err = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/var/lib/vbdecl/envs/web/journal.jsonl")
    assert report_error(err, debug=False) == 1
    out = capsys.readouterr().err
    assert out.startswith("error: /var/lib/vbdecl/envs/web/journal.jsonl: No space left on device (ENOSPC)")
    assert "bug" not in out and "hint: free space" in out


def test_a_commit_that_fails_after_its_state_landed_keeps_the_state_from_before(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A review: when state.json was replaced but the directory's fsync then failed,
    the rolled-back update left the new state.json, naming a revision it removed."""
    import errno

    root, sd = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    Engine(sd).apply(testops.make_plan("web", root, files=2, mounts=0))
    before, tree_v1 = store.load("web", sd), testops.host_tree(root)
    real_save = store.save

    def saved_then_eio(name: str, state: dict[str, Any], state_dir: str | None = None) -> None:
        real_save(name, state, state_dir)
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(store, "save", saved_then_eio)
    with pytest.raises(ActionError, match="could not write the environment's state"):
        Engine(sd).apply(testops.make_plan("web", root, files=3, mounts=0, content="v2"))
    monkeypatch.undo()
    after = store.load("web", sd)
    assert after is not None and before is not None
    assert (after["serial"], after["revision"]) == (before["serial"], before["revision"])
    assert testops.host_tree(root) == tree_v1
    Engine(sd).destroy("web")


def test_an_undo_done_before_a_kill_is_not_done_twice(tmp_path: Path) -> None:
    """A review: a rollback killed after it had made a destroyed object again, before
    its "undone" entry, was replayed by recovery, which made the object once more (a
    second tmpfs stacked on the first; the record named only the top one, so the other
    stayed behind for good once its entry went). The undo now journals what was at the
    place before it, and recovery adopts what it made, as for an interrupted create."""

    def body(tmp: Path) -> None:
        import signal

        root, sd = tmp / "root", tmp / "state"
        root.mkdir()
        v1 = testops.make_plan("web", root, files=1, mounts=1)
        Engine(sd).apply(v1)
        mount = next(a for a in v1["actions"] if a["kind"] == "test.mount")
        where = mount["params"]["path"]
        assert len(testops.mounts_at(where)) == 1
        # v2: the mount's action becomes another kind (destroy, then create), whose create fails
        v2 = testops.make_plan("web", root, files=1, mounts=1)
        for a in v2["actions"]:
            if a["id"] == mount["id"]:
                a["kind"], a["params"] = "test.file", {"path": where + ".f", "content": "x"}
        pid = os.fork()
        if pid == 0:    # the killed apply: its rollback made the mount again, then died
            os.environ["VBDECL_TEST_CRASH_AT"] = f"undone:destroy:{mount['id']}"
            try:
                Engine(sd, faults=Faults(mount["id"])).apply(v2)
            finally:
                os._exit(3)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
        assert len(testops.mounts_at(where)) == 1
        assert Engine(sd).recover("web") is not None
        assert len(testops.mounts_at(where)) == 1, testops.mounts_at(where)
        Engine(sd).destroy("web")
        assert testops.mounts_at(where) == []

    testops.in_private_mount_ns(body, tmp_path)


def test_a_journal_that_cannot_be_written_is_said_as_such(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash review filled the state directory's disk mid-apply: the journal's ENOSPC
    read as the step's own failure (`net.route: apply failed: [Errno 28] ...`)."""
    from vbdecl.engine import journal

    root, sd = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    plan = testops.make_plan("web", root, files=3, mounts=0)
    real, intents = journal.Journal.append, []

    def full_at_the_third_intent(self: journal.Journal, entry: dict[str, Any], *, sync: bool = True) -> None:
        if entry["t"] == "intent":
            intents.append(entry["id"])
        if len(intents) == 3 and entry["t"] == "intent":     # (then there is room again)
            kept, self.fd = self.fd, os.open("/dev/full", os.O_WRONLY | os.O_CLOEXEC)   # (ENOSPC)
            try:
                real(self, entry, sync=sync)
            finally:
                os.close(self.fd)
                self.fd = kept
        else:
            real(self, entry, sync=sync)

    monkeypatch.setattr(journal.Journal, "append", full_at_the_third_intent)
    with pytest.raises(ActionError) as caught:
        Engine(sd).apply(plan)
    monkeypatch.undo()
    err = caught.value
    assert err.action == intents[2] and err.message == (
        f"cannot write the journal {sd / 'envs' / 'web' / 'journal.jsonl'}: No space left on device (ENOSPC)"), err
    assert "free space for vbdecl's state" in (err.hint or "") and "apply failed" not in str(err)
    assert not err.revert_errors and testops.host_tree(root) == {}
    Engine(sd).apply(plan)      # and the next apply lands
    Engine(sd).destroy("web")


def test_damaged_state_files_are_said_so_not_reported_as_bugs(tmp_path: Path) -> None:
    """A crash review wrote random bytes or odd shapes into state files: each was "a bug
    in vbdecl", and one damaged state stopped the apply of every new environment."""
    import json

    from vbdecl.engine import journal
    from vbdecl.errors import StateError

    root, sd = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    Engine(sd).apply(testops.make_plan("web", root, files=1, mounts=0))
    state_file = sd / "envs" / "web" / "state.json"
    good = json.loads(state_file.read_text())
    damages: list[tuple[bytes, str]] = [
        (b"\xff\xfe\x00garbage\x9c", "is not valid JSON"),
        (json.dumps({**good, "resources": {**good["resources"], "x": "y"}}).encode(), "resource 'x'"),
        (json.dumps({**good, "plan": {**good["plan"], "actions": None}}).encode(), "plan's actions"),
        (json.dumps({**good, "instance": "../../etc"}).encode(), "not an instance id"),
    ]
    for data, said in damages:
        state_file.write_bytes(data)
        with pytest.raises(StateError, match=said):
            store.load("web", sd)
        # another environment still applies
        other = tmp_path / "other"
        other.mkdir(exist_ok=True)
        Engine(sd).apply(testops.make_plan("other", other, files=1, mounts=0))
        Engine(sd).destroy("other")
    state_file.write_text(json.dumps(good))
    entries = (sd / "envs" / "web" / "journal.jsonl")
    entries.write_text(entries.read_text() + "null\n[]\n")
    assert journal.open_transaction(journal.read(entries)) is None
    Engine(sd).destroy("web")
    assert testops.host_tree(root) == {}
