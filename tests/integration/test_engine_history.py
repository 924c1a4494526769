"""History: three revisions, rollback to the first, the live objects match it.
Also the CLI's ls/status/history output and drift repair."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import testops

from vbdecl import __version__
from vbdecl.engine import store

testops.register()


def _cli(sd: Path, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VBDECL_") or k == "VBDECL_CACHE_DIR"}
    env.update(extra_env)
    out = subprocess.run([sys.executable, testops.__file__, "--state-dir", str(sd), *args],
                         env=env, capture_output=True, text=True, timeout=60)
    return out


def _history(tmp: Path) -> None:
    root, sd = tmp / "root", tmp / "state"
    root.mkdir()
    plans = [testops.make_plan("web", root, content="v1", size="1m"),
             testops.make_plan("web", root, content="v2", size="2m", files=12),
             testops.make_plan("web", root, content="v3", size="3m", files=8, mounts=2)]
    trees = []
    for i, plan in enumerate(plans, 1):
        out = _cli(sd, "apply", str(testops.write_plan(tmp / f"v{i}.json", plan)), "-y")
        assert out.returncode == 0, out.stderr
        assert f"applied revision {i}" in out.stdout
        trees.append(testops.host_tree(root))
    assert trees[0] != trees[1] != trees[2]
    out = _cli(sd, "--json", "history", "web")
    revs = json.loads(out.stdout)
    assert [r["revision"] for r in revs] == [1, 2, 3]
    assert [r["current"] for r in revs] == [False, False, True]
    assert all(r["user"] and r["manifest_hash"].startswith("sha256:") for r in revs)
    out = _cli(sd, "rollback", "web", "--to", "1", "-y")
    assert out.returncode == 0, out.stderr
    assert "rolled back to revision 1 as revision 4" in out.stdout
    assert testops.host_tree(root) == trees[0]
    assert store.load("web", sd)["plan"]["manifest_hash"] == plans[0]["manifest_hash"]
    out = _cli(sd, "history", "web")
    assert "rollback to 1" in out.stdout and "*4" in out.stdout
    # drift: a file deleted and a mount removed by hand are shown, then repaired
    (root / "web" / "f2").unlink()
    out = _cli(sd, "--json", "ls")
    row = json.loads(out.stdout)[0]
    assert row["status"] == "drifted" and "file[/f2]" in row["drift"], row
    out = _cli(sd, "apply", str(tmp / "v1.json"), "-y")
    assert out.returncode == 0, out.stderr
    assert "file[/f2]" in out.stdout
    assert testops.host_tree(root) == trees[0]
    out = _cli(sd, "--json", "status", "web")
    st = json.loads(out.stdout)
    assert {r["status"] for r in st["resources"]} == {"ok"}, st
    out = _cli(sd, "history", "web")
    assert out.returncode == 0
    out = _cli(sd, "destroy", "web", "-y")
    assert out.returncode == 0, out.stderr
    assert testops.host_tree(root) == {}
    assert _cli(sd, "ls").stdout.strip() == "no environments"
    out = _cli(sd, "status", "web")
    assert out.returncode == 1 and "environment 'web' was destroyed" in out.stderr, out.stderr
    assert "vbdecl ls -a" in out.stderr


def test_three_revisions_and_rollback(tmp_path: Path) -> None:
    testops.in_private_mount_ns(_history, tmp_path)


def test_old_revisions_are_pruned_and_a_destroyed_environment_can_be_forgotten(tmp_path: Path) -> None:
    """A day-2 review: every apply kept its revision (a whole plan) for ever, and a
    destroyed environment's history and logs stayed with no command to remove them."""
    root, sd = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    keep = {"VBDECL_KEEP_REVISIONS": "2"}
    for i in range(1, 5):
        plan = testops.make_plan("web", root, content=f"v{i}", mounts=0, files=2)
        out = _cli(sd, "apply", str(testops.write_plan(tmp_path / f"v{i}.json", plan)), "-y", **keep)
        assert out.returncode == 0 and f"applied revision {i}" in out.stdout, out.stdout + out.stderr
    assert store.revision_numbers("web", sd) == [3, 4]
    out = _cli(sd, "rollback", "web", "--to", "1", "-y")
    assert out.returncode == 1 and "has no revision 1" in out.stderr, out.stderr
    assert "revisions: 3-4 (older ones are removed as newer ones are made: VBDECL_KEEP_REVISIONS)" \
        in out.stderr, out.stderr
    out = _cli(sd, "rollback", "web", "--to", "3", "-y", **keep)
    assert out.returncode == 0 and "as revision 5" in out.stdout, out.stdout + out.stderr
    assert [r["revision"] for r in json.loads(_cli(sd, "--json", "history", "web").stdout)] == [4, 5]
    # a value that is no number stops the apply before anything changes
    serial = store.load("web", sd)["serial"]
    out = _cli(sd, "apply", str(tmp_path / "v1.json"), "-y", VBDECL_KEEP_REVISIONS="ten")
    assert out.returncode == 1 and "VBDECL_KEEP_REVISIONS='ten' is not a number" in out.stderr, out.stderr
    assert store.load("web", sd)["serial"] == serial and (root / "web" / "f0").read_text().endswith("v3-0")
    # without it, 100 are kept: all five here
    assert _cli(sd, "apply", str(tmp_path / "v2.json"), "-y").returncode == 0
    assert store.revision_numbers("web", sd) == [4, 5, 6]

    assert _cli(sd, "destroy", "web", "-y").returncode == 0
    assert "web" in _cli(sd, "ls", "--all").stdout and (sd / "envs" / "web").is_dir()
    out = _cli(sd, "destroy", "web", "-y")      # (it said "does not exist", as if never applied)
    assert out.returncode == 1 and "'web' was destroyed" in out.stderr and "--purge web" in out.stderr, out.stderr
    out = _cli(sd, "destroy", "web", "--purge", "-y")
    assert out.returncode == 0 and "web: forgotten" in out.stdout, out.stdout + out.stderr
    assert not (sd / "envs" / "web").exists()
    assert _cli(sd, "ls", "--all").stdout.strip() == "no environments"
    out = _cli(sd, "destroy", "web", "--purge", "-y")
    assert out.returncode == 1 and "does not exist" in out.stderr, out.stderr
    # in one go, with --json
    assert _cli(sd, "apply", str(tmp_path / "v1.json"), "-y").returncode == 0
    out = _cli(sd, "--json", "destroy", "web", "--purge", "-y")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1])["destroyed"][0]["purged"] is True
    assert not (sd / "envs" / "web").exists() and testops.host_tree(root) == {}


def test_stale_saved_plan_is_refused(tmp_path: Path) -> None:
    root, sd = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    plan = testops.make_plan("web", root, mounts=0, files=2)
    plan["tool_version"] = __version__   # as `vbdecl plan -o` writes it
    saved = dict(plan, state={"lineage": None, "serial": 0})
    p = testops.write_plan(tmp_path / "saved.json", saved)
    out = _cli(sd, "apply", str(p), "-y")
    assert out.returncode == 0, out.stderr
    out = _cli(sd, "apply", str(p), "-y")       # made against the empty state: stale now
    assert out.returncode == 1
    assert "stale" in out.stderr and "`vbdecl plan` again" in out.stderr
    state = store.load("web", sd)
    fresh = dict(plan, state={"lineage": state["lineage"], "serial": state["serial"]})
    out = _cli(sd, "apply", str(testops.write_plan(tmp_path / "fresh.json", fresh)), "-y")
    assert out.returncode == 0, out.stderr
    assert _cli(sd, "destroy", "web", "-y").returncode == 0
    assert testops.host_tree(root) == {}


def test_destroy_never_touches_foreign_objects(tmp_path: Path) -> None:
    root, sd = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    plan = testops.make_plan("web", root, mounts=0, files=2)
    assert _cli(sd, "apply", str(testops.write_plan(tmp_path / "p.json", plan)), "-y").returncode == 0
    # someone replaces an owned file with their own
    (root / "web" / "f1").write_text("not yours")
    out = _cli(sd, "destroy", "web", "-y")
    assert out.returncode == 1                      # the directory is not empty: reported
    assert "dir[/]" in out.stderr
    assert (root / "web" / "f1").read_text() == "not yours"
    assert not (root / "web" / "f0").exists()
    (root / "web" / "f1").unlink()
    out = _cli(sd, "recover", "web")                # finishes the destroy
    assert out.returncode == 0, out.stderr
    assert testops.host_tree(root) == {}
