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


def _cli(sd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VBDECL_") or k == "VBDECL_CACHE_DIR"}
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
    assert out.returncode == 1 and "does not exist" in out.stderr


def test_three_revisions_and_rollback(tmp_path: Path) -> None:
    testops.in_private_mount_ns(_history, tmp_path)


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
