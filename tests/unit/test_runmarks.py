"""runtime/runmarks.py on a fake cgroup tree: a held mark keeps its run's groups, a free
one has them removed once empty, then goes itself."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from vbdecl.runtime import runmarks
from vbdecl.sys import cgroupfs as cg


def _tree(tmp_path: Path, *instances: str) -> tuple[cg.Layout, Path]:
    mount = tmp_path / "memory"
    for instance in instances:
        (mount / "vbdecl" / instance).mkdir(parents=True)
    return cg.Layout(unified=None, v1={"memory": str(mount)}), tmp_path / "run"


def test_a_held_mark_keeps_its_groups_and_a_free_one_is_swept(tmp_path: Path) -> None:
    layout, root = _tree(tmp_path, "vb-live", "vb-dead")
    live = runmarks.hold(str(root), "vb-live")
    dead = runmarks.hold(str(root), "vb-dead")
    os.close(dead)      # (its run and janitor were killed: nobody holds it)
    try:
        assert runmarks.sweep(str(root), layout) == ["vb-dead"]
        assert sorted(os.listdir(tmp_path / "memory" / "vbdecl")) == ["vb-live"]
        assert os.listdir(root) == ["vb-live.run"]
    finally:
        runmarks.release(str(root), "vb-live", live, done=True, own_root=True)
    assert not root.exists()
    assert runmarks.sweep(str(root), layout) == []


def test_a_group_still_in_use_keeps_its_mark_for_a_later_sweep(tmp_path: Path) -> None:
    layout, root = _tree(tmp_path, "vb-busy")
    busy = tmp_path / "memory" / "vbdecl" / "vb-busy" / "task"
    busy.write_text("")     # (rmdir fails, as on a cgroup that holds a process)
    os.close(runmarks.hold(str(root), "vb-busy"))
    assert runmarks.sweep(str(root), layout) == []
    assert os.listdir(root) == ["vb-busy.run"]
    busy.unlink()
    assert runmarks.sweep(str(root), layout) == ["vb-busy"]
    assert not (tmp_path / "memory" / "vbdecl").exists() and os.listdir(root) == []


def test_a_mark_left_half_made_goes_and_a_release_not_done_keeps_it(tmp_path: Path) -> None:
    layout, root = _tree(tmp_path)
    root.mkdir()
    (root / ".vb-cut.run.tmp").write_text("")       # (a run killed inside hold)
    fd = runmarks.hold(str(root), "vb-failed")
    runmarks.release(str(root), "vb-failed", fd, done=False, own_root=True)
    assert sorted(os.listdir(root)) == [".vb-cut.run.tmp", "vb-failed.run"]
    # (no group of it is left: the mark goes, and is not counted as a swept run)
    assert runmarks.sweep(str(root), layout, own_root=True) == []
    assert not root.exists()


def test_a_sweep_that_takes_a_mark_being_made_makes_the_run_start_over(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The session's review: a sweep between the temporary file's creation and its lock
    took it, and the run went on without a mark."""
    layout, root = _tree(tmp_path)
    real, calls = fcntl.flock, []

    def sweep_first(fd: int, how: int) -> None:
        if how == fcntl.LOCK_SH and not calls:
            calls.append(runmarks.sweep(str(root), layout))   # (unlocked yet: it goes)
        real(fd, how)

    monkeypatch.setattr(runmarks.fcntl, "flock", sweep_first)
    fd = runmarks.hold(str(root), "vb-race")
    monkeypatch.undo()
    try:
        assert calls == [[]] and os.listdir(root) == ["vb-race.run"]
        assert runmarks.sweep(str(root), layout) == [] and os.listdir(root) == ["vb-race.run"]
    finally:
        runmarks.release(str(root), "vb-race", fd, done=True, own_root=True)


def test_recover_sweeps_where_runs_mark_themselves(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """The session's review: recover without --state-dir swept <state root>/run, while
    runs mark in the runtime root (/run/vbdecl for root)."""
    import argparse

    from vbdecl.cli import cmd_recover
    from vbdecl.engine import paths

    monkeypatch.delenv("VBDECL_STATE_DIR", raising=False)
    monkeypatch.setattr("vbdecl.engine.store.list_envs", lambda state_dir=None: [])
    swept: list[str] = []
    monkeypatch.setattr(runmarks, "sweep", lambda root, *a, **k: swept.append(root) or ["vb-1"])
    args = argparse.Namespace(name=None, state_dir=None, json=False, lock_timeout=None)
    assert cmd_recover.run(args) == 0
    assert swept == [paths.runtime_root(None)] and "removed the cgroups of 1 killed run: vb-1" in \
        capsys.readouterr().out
