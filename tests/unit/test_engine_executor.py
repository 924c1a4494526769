"""The executor on plain files (no root): state and revision shapes, events,
rollback order, journal rotation, the Python API for embedders."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import testops

from vbdecl.engine import executor, journal, paths, store
from vbdecl.engine.executor import Engine
from vbdecl.engine.faults import Faults
from vbdecl.errors import ActionError, StateError

testops.register()


def _plan(root: Path, name: str = "web", **kw: Any) -> dict[str, Any]:
    return testops.make_plan(name, root, mounts=0, **kw)


def test_state_and_revision_shapes(tmp_path: Path) -> None:
    root, sd = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    plan = _plan(root, files=3)
    res = Engine(sd).apply(plan)
    st = json.loads((sd / "envs" / "web" / "state.json").read_text())
    assert set(st) == {"format", "name", "instance", "lineage", "serial", "plan", "revision", "resources"}
    assert re.fullmatch(r"vb-[0-9a-f]{8}", st["instance"]) and st["instance"] == res.instance
    assert st["serial"] == 1 and st["revision"] == 1 and st["plan"] == plan
    assert st["resources"]["file[/f0]"] == {"kind": "test.file", "params": plan["actions"][1]["params"],
                                            "record": {"path": str(root / "web" / "f0"),
                                                       "owner": st["instance"], "content": "v1-0"}}
    rev = store.load_revision("web", 1, str(sd))
    assert {"revision", "time", "manifest_hash", "source", "git", "user", "plan"} <= set(rev)
    assert rev["plan"] == plan
    assert (sd / "envs" / "web" / "state.json").stat().st_mode & 0o777 == 0o600
    with pytest.raises(StateError) as info:
        store.load_revision("web", 7, str(sd))
    assert "revisions: 1" in str(info.value)
    with pytest.raises(StateError) as info:     # (no revision 0 ever was: none removed)
        store.load_revision("web", 0, str(sd))
    assert "revisions: 1" in str(info.value) and "older ones" not in str(info.value)


def test_events_and_rollback_order(tmp_path: Path) -> None:
    root, sd = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    events: list[dict[str, Any]] = []
    plan = _plan(root, files=3)
    with pytest.raises(ActionError):
        Engine(sd, on_event=events.append, faults=Faults("file[/f2]")).apply(plan)
    seq = [(e["event"], e.get("id")) for e in events if e["event"].startswith(("action", "apply"))]
    assert seq == [("apply.started", None),
                   ("action.started", "dir[/]"), ("action.applied", "dir[/]"),
                   ("action.started", "file[/f0]"), ("action.applied", "file[/f0]"),
                   ("action.started", "file[/f1]"), ("action.applied", "file[/f1]"),
                   ("action.started", "file[/f2]"), ("action.failed", "file[/f2]"),
                   ("action.reverting", "file[/f2]"), ("action.reverted", "file[/f2]"),
                   ("action.reverting", "file[/f1]"), ("action.reverted", "file[/f1]"),
                   ("action.reverting", "file[/f0]"), ("action.reverted", "file[/f0]"),
                   ("action.reverting", "dir[/]"), ("action.reverted", "dir[/]"),
                   ("apply.aborted", None)]
    assert all(isinstance(e["time"], float) for e in events)
    assert not (sd / "envs" / "web").exists()


def test_journal_has_intent_before_and_record_after(tmp_path: Path) -> None:
    root, sd = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    Engine(sd).apply(_plan(root, files=1))
    entries = journal.read(paths.journal_file("web", str(sd)))
    assert [(e["t"], e.get("id")) for e in entries] == [
        ("begin", None), ("intent", "dir[/]"), ("done", "dir[/]"),
        ("intent", "file[/f0]"), ("done", "file[/f0]"), ("commit", None)]
    assert len({e["txn"] for e in entries}) == 1


def test_nothing_to_do_changes_nothing(tmp_path: Path) -> None:
    root, sd = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    plan = _plan(root, files=2)
    Engine(sd).apply(plan)
    before = (sd / "envs" / "web" / "state.json").read_bytes()
    res = Engine(sd).apply(plan)
    assert res.steps == 0 and res.revision == 1
    assert (sd / "envs" / "web" / "state.json").read_bytes() == before


def test_failed_apply_of_an_existing_env_keeps_its_state(tmp_path: Path) -> None:
    root, sd = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    Engine(sd).apply(_plan(root, files=2))
    before = testops.state_tree(sd), testops.host_tree(root)
    with pytest.raises(ActionError):
        Engine(sd, faults=Faults("file[/f3]")).apply(_plan(root, files=5, content="v2"))
    assert (testops.state_tree(sd), testops.host_tree(root)) == before


def test_a_rollback_that_cannot_make_again_what_was_gone_leaves_it_gone(tmp_path: Path) -> None:
    """A review: an apply that started an exited process again (a "+" over its stale
    record) and failed had its rollback start the old process too, which failed the
    same way and left an open transaction that every recover failed alike. The
    rollback makes such an object again when it can (drift it had repaired stays
    repaired), and otherwise leaves it gone, as the apply found it, and says so."""
    root, sd = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    Engine(sd).apply(_plan(root, files=2))
    (root / "web" / "f1").unlink()          # gone outside vbdecl
    before = testops.state_tree(sd), testops.host_tree(root)
    with pytest.raises(ActionError):        # the recreate lands, a later action fails
        Engine(sd, faults=Faults("file[/f2]")).apply(_plan(root, files=3))
    assert (root / "web" / "f1").exists()   # made again by the rollback: repaired
    (root / "web" / "f1").write_text("not vbdecl's\n")    # in the way: making it fails
    before = testops.state_tree(sd), testops.host_tree(root)
    events: list[dict[str, Any]] = []
    with pytest.raises(ActionError) as info:    # the recreate fails, and so does its undo's
        Engine(sd, on_event=events.append).apply(_plan(root, files=3))
    assert (testops.state_tree(sd), testops.host_tree(root)) == before
    assert not testops.journal_open(sd, "web")
    assert info.value.hint is not None and info.value.hint.endswith(
        "but for file[/f1]: gone before this apply, and left so (making it again failed too)")
    assert [e.get("left_gone") for e in events if e["event"] == "action.reverted"] == [None, True]


def test_unknown_kind_is_refused_before_anything_changes(tmp_path: Path) -> None:
    root, sd = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    plan = _plan(root, files=1, extra=[testops.action("x", "nosuch.kind", {})])
    with pytest.raises(ActionError) as info:
        Engine(sd).apply(plan)
    assert "nosuch.kind" in str(info.value) and "nothing was changed" in str(info.value)
    assert testops.host_tree(root) == {} and not (sd / "envs" / "web").exists()


def test_destroy_json_lists_its_changes_in_the_order_it_made_them(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A review: destroy --json listed file[/f9] before file[/f11] (state.json keeps
    resources sorted by id), while the teardown, its events and the progress shown to
    people went by the plan, file[/f11] first."""
    from vbdecl.cli.main import main

    root, sd = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    Engine(sd).apply(_plan(root, files=12))
    assert main(["destroy", "web", "--json", "-y", "--state-dir", str(sd)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    done = [e["id"] for e in lines if e["event"] == "action.destroyed"]
    assert done == ["dir[/]", *[f"file[/f{i}]" for i in range(12)]][::-1]
    (result,) = lines[-1]["destroyed"]
    assert [c["id"] for c in result["changes"]] == done


def test_destroy_unknown_env_creates_nothing(tmp_path: Path) -> None:
    sd = tmp_path / "state"
    with pytest.raises(StateError):
        Engine(sd).destroy("ghost")
    assert Engine(sd).recover("ghost") is False
    assert not (sd / "envs" / "ghost").exists()


def test_journal_rotates_when_large(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, sd = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    monkeypatch.setattr(executor, "JOURNAL_ROTATE_BYTES", 2000)
    Engine(sd).apply(_plan(root, files=5))
    jdir = sd / "envs" / "web"
    assert (jdir / "journal.jsonl.1").exists() and not (jdir / "journal.jsonl").exists()
    Engine(sd).destroy("web")
    assert testops.host_tree(root) == {}


def test_instance_ids_are_unique_per_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, sd = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    ids = iter(["vb-00000001", "vb-00000001", "vb-00000002"])
    monkeypatch.setattr(store, "new_instance_id", lambda: next(ids))
    Engine(sd).apply(_plan(root, "a", files=1))
    Engine(sd).apply(_plan(root, "b", files=1))
    assert store.load("a", str(sd))["instance"] == "vb-00000001"
    assert store.load("b", str(sd))["instance"] == "vb-00000002"


def test_a_record_that_is_not_plain_data_is_undone(tmp_path: Path) -> None:
    root, sd = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    bad = testops.action("bad", "test.badrecord", {"path": str(root / "web" / "bad"), "content": "x"},
                         ["dir[/]"])
    with pytest.raises(ActionError) as info:
        Engine(sd).apply(_plan(root, files=1, extra=[bad]))
    assert info.value.action == "bad" and "not plain data" in str(info.value)
    assert testops.host_tree(root) == {}


class _RuntimeDirOp:
    """Records the runtime directory each call of it was given (ctx.runtime_dir)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def describe(self, params: dict[str, Any]) -> str:
        return "runtime dir probe"

    def probe(self, ctx: Any, params: dict[str, Any], record: Any) -> Any:
        self.seen.append(("probe", ctx.runtime_dir))
        if record is None:    # as ops.env: what the runtime dir shows
            return {"runtime_dir": ctx.runtime_dir} if os.path.isdir(ctx.runtime_dir) else None
        return record

    def apply(self, ctx: Any, params: dict[str, Any]) -> dict[str, Any]:
        self.seen.append(("apply", ctx.runtime_dir))
        os.makedirs(ctx.runtime_dir, exist_ok=True)
        return {"runtime_dir": ctx.runtime_dir, "pid": None}

    def revert(self, ctx: Any, record: dict[str, Any]) -> None:
        self.seen.append(("revert", ctx.runtime_dir))
        os.rmdir(record["runtime_dir"])


def _env_plan(name: str) -> dict[str, Any]:
    return {"format": 1, "tool_version": "0", "name": name, "labels": {}, "manifest_hash": None,
            "source": None, "spec": {},
            "actions": [{"id": "env", "kind": "env.namespaces", "scope": "host", "deps": [],
                         "params": {}, "describe": "env", "replace": True}]}


@pytest.fixture
def fake_env_op(monkeypatch: pytest.MonkeyPatch) -> _RuntimeDirOp:
    """``env.namespaces`` replaced by an op that only makes its runtime dir."""
    from vbdecl import ops

    op = _RuntimeDirOp()
    monkeypatch.setitem(ops._cache, "env.namespaces", op)
    return op


def test_runtime_dir_is_the_runtime_root_unless_a_state_dir_is_chosen(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_env_op: _RuntimeDirOp) -> None:
    """Without --state-dir the runtime dir is the runtime root of paths.py (/run/vbdecl
    for root; $XDG_RUNTIME_DIR/vbdecl here), never <state>/run; with one, <state>/run."""
    monkeypatch.delenv("VBDECL_STATE_DIR", raising=False)
    monkeypatch.setattr(paths.os, "geteuid", lambda: 4242)      # the XDG defaults, in tmp_path
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg-run"))
    res = Engine().apply(_env_plan("web"))
    want = str(tmp_path / "xdg-run" / "vbdecl" / str(res.instance))
    assert fake_env_op.seen == [("apply", want)]
    begin = journal.read(paths.journal_file("web"))[0]
    assert begin["t"] == "begin" and begin["runtime_dir"] == want
    assert not (tmp_path / "xdg-state" / "vbdecl" / "run").exists()
    Engine().destroy("web")
    assert fake_env_op.seen[-1] == ("revert", want) and not os.path.exists(want)
    # a chosen state dir keeps its runtime dir beneath it
    sd = tmp_path / "chosen"
    res = Engine(sd).apply(_env_plan("web"))
    assert fake_env_op.seen[-1] == ("apply", str(sd / "run" / str(res.instance)))
    Engine(sd).destroy("web")
    assert not (sd / "run").exists()


def test_recorded_runtime_dir_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         fake_env_op: _RuntimeDirOp) -> None:
    """An environment started before /run/vbdecl was the default keeps <state>/run/<instance>:
    its env record (and its journal, for recovery) says so, and destroy cleans it there."""
    monkeypatch.delenv("VBDECL_STATE_DIR", raising=False)
    monkeypatch.setattr(paths.os, "geteuid", lambda: 4242)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg-run"))
    root = tmp_path / "xdg-state" / "vbdecl"
    old = Engine()
    old.runtime_root = str(root / "run")          # what vbdecl did before
    res = old.apply(_env_plan("web"))
    legacy = str(root / "run" / str(res.instance))
    assert fake_env_op.seen == [("apply", legacy)] and os.path.isdir(legacy)
    Engine().destroy("web")
    assert fake_env_op.seen[-1] == ("revert", legacy)
    assert not (root / "run").exists()            # and its parent, now empty
    # an apply killed in flight by the old vbdecl (its journal names no runtime dir):
    # recovery looks in the old place
    instance = "vb-0123abcd"
    legacy = str(root / "run" / instance)
    os.makedirs(legacy)                           # what its env step made before the kill
    with journal.Journal(paths.journal_file("web2")) as j:
        j.append({"t": "begin", "txn": "t1", "op": "apply", "pid": 1, "time": 0.0,
                  "lineage": "l", "base_serial": None, "target_serial": 1, "base_revision": 0,
                  "instance": instance, "fresh": True, "plan": _env_plan("web2")})
        j.append({"t": "intent", "txn": "t1", "seq": 1, "step": "create", "id": "env",
                  "kind": "env.namespaces", "params": {}, "old": None})
    fake_env_op.seen.clear()
    assert Engine().recover("web2") is True
    assert fake_env_op.seen == [("probe", legacy), ("revert", legacy)]
    assert not os.path.exists(legacy)


def test_a_metadata_only_change_is_recorded_without_a_step(tmp_path: Path) -> None:
    root, sd = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    plan = _plan(root, files=2)
    Engine(sd).apply(plan)
    relabelled = dict(plan, labels={"tier": "db"}, manifest_hash="sha256:" + "0" * 64)
    res = Engine(sd).apply(relabelled)
    assert res.steps == 0 and res.revision == 2
    state = store.load("web", sd)
    assert state["plan"]["labels"] == {"tier": "db"} and state["plan"]["manifest_hash"] == relabelled["manifest_hash"]
    assert Engine(sd).apply(relabelled).revision == 2      # and then nothing is left to do


def test_a_rollback_names_the_commit_of_the_revision_it_goes_back_to(tmp_path: Path) -> None:
    """A review: the revision a rollback made named the work tree's HEAD (whose file
    said something else), not the commit of the revision applied again."""
    import subprocess

    root, sd, repo = tmp_path / "root", tmp_path / "state", tmp_path / "repo"
    root.mkdir()
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    source = repo / "web.yaml"
    commits = []
    for files in (1, 2):
        source.write_text(f"files: {files}\n")
        subprocess.run([*git, "add", "web.yaml"], check=True)
        subprocess.run([*git, "commit", "-q", "-m", f"v{files}"], check=True)
        commits.append(subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip())
        Engine(sd).apply(dict(_plan(root, files=files), source={"path": str(source)}))
    first = store.load_revision("web", 1, str(sd))
    with Engine(sd).session("web", create=False, then="apply") as s:
        res = s.apply(first["plan"], note="rollback to 1", from_revision=first)
    assert store.load_revision("web", res.revision, str(sd))["git"]["commit"] == commits[0] != commits[1]


@pytest.mark.parametrize("damage", [{}, [], None, {"format": 1, "name": "web"}])
def test_a_state_json_edited_into_another_shape_is_refused_whole(tmp_path: Path, damage: Any) -> None:
    """A review hand-edited state.json: exec, logs, status and destroy failed with
    KeyError or AttributeError tracebacks (reported as bugs in vbdecl)."""
    root, sd = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    Engine(sd).apply(_plan(root))
    (sd / "envs" / "web" / "state.json").write_text(json.dumps(damage))
    with pytest.raises(StateError) as info:
        store.load("web", str(sd))
    assert "state.json" in info.value.message and info.value.hint


def test_ls_lists_the_others_beside_a_damaged_environment(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A review truncated one environment's state.json: ls (and ls --json) failed for all."""
    from vbdecl.cli.main import main

    root, sd = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    Engine(sd).apply(_plan(root, name="web"))
    Engine(sd).apply(_plan(root, name="db"))
    half = (sd / "envs" / "db" / "state.json").read_bytes()
    (sd / "envs" / "db" / "state.json").write_bytes(half[: len(half) // 2])
    assert main(["--state-dir", str(sd), "--json", "ls", "--no-probe"]) == 0
    rows = {r["name"]: r["status"] for r in json.loads(capsys.readouterr().out)}
    assert rows == {"web": "applied", "db": "unreadable"}


def test_a_rollback_says_what_it_left() -> None:
    """A day-2 review: a failed update that had stopped the process (then started it
    again, with a new pid) and repaired drift said "nothing was changed"."""
    from vbdecl.engine.executor import _rolled_back

    limit = ("update", "cgroup.memory", "cgroup.limit", {}, {})
    stop, start = ("destroy", "process", "proc.main", {}, {}), ("create", "process", "proc.main", {}, None)
    assert _rolled_back([limit, start], fresh=True) == "nothing was left: every action that landed was reverted"
    assert _rolled_back([limit], fresh=False) == (
        "every action that landed was reverted: the environment is as its last apply left it")
    assert _rolled_back([stop, limit], fresh=False).endswith(
        "as its last apply left it (its process was started again, with a new pid)")
    # it had exited, and could not start again either
    assert _rolled_back([stop, start, limit], fresh=False, left_gone={"process"}).endswith(
        "as its last apply left it, but for process: gone before this apply, and left so "
        "(making it again failed too)")



def test_records_move_their_version_on_every_change() -> None:
    """ops.fs keeps indexes of the records while the version stays (a scale review: a
    plan of 2,000 entries rebuilt them once per entry)."""
    from vbdecl.ops.base import Records

    r = Records({"a": {}})
    v = r.version
    r["b"] = {}
    assert r.version > v
    v = r.version
    r.pop("a")
    assert r.version > v
    v = r.version
    del r["b"]
    assert r.version > v and r == {}


def test_a_manifest_git_does_not_track_is_said_to_be_untracked(tmp_path: Path) -> None:
    """A day-2 review applied a manifest git did not track: its revision named HEAD
    (+dirty), a commit that does not hold the file."""
    import subprocess

    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "other").write_text("x\n")
    subprocess.run([*git, "add", "other"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "one"], check=True)
    source = tmp_path / "web.yaml"
    source.write_text("a\n")
    info = store.git_info(str(source))
    assert info is not None and info["untracked"] is True and info["dirty"] is True
    subprocess.run([*git, "add", "web.yaml"], check=True)       # staged only: not in HEAD either
    info = store.git_info(str(source))
    assert info is not None and info["untracked"] is True and info["dirty"] is True
    subprocess.run([*git, "commit", "-q", "-m", "two"], check=True)
    info = store.git_info(str(source))
    assert info is not None and "untracked" not in info and info["dirty"] is False
    # an ignored one (status says nothing of it; a review of the first fix)
    (tmp_path / ".gitignore").write_text("ignored.yaml\n")
    (tmp_path / "ignored.yaml").write_text("a\n")
    info = store.git_info(str(tmp_path / "ignored.yaml"))
    assert info is not None and info["untracked"] is True and info["dirty"] is True
