"""Where a live environment's runtime objects go (README, docs/plan-format.md "State
directory", vbdecl/engine/paths.py): as root without --state-dir, pinned namespaces and
the init's files live in /run/vbdecl/<instance> (state stays in /var/lib/vbdecl). An
environment started when vbdecl put them in /var/lib/vbdecl/run/<instance> keeps that
directory: its env record names it, and destroy cleans it there.

These tests use vbdecl's real default roots (every other test uses --state-dir) and
remove what they put there: the leak guard checks both roots."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from testmanifests import head

STATE_ROOT = Path("/var/lib/vbdecl")
RUN_ROOT = Path("/run/vbdecl")

MANIFEST = head("{name}", hostname="{name}") + """\
  process: {{command: [/bin/sleep, "300"]}}
"""


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vbdecl", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def _pinned_under(path: str) -> list[str]:
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4].startswith(path + "/")]


@pytest.fixture
def default_roots(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A unique environment name in the default state root, removed afterwards (with
    the state root's own entries that the test created). One such test at a time, on
    any xdist worker: one that started while another had made the root would find it
    there and leave it, once the other could not remove it under its environment."""
    import fcntl

    shared_tmp = tmp_path_factory.getbasetemp().parent      # (the same for every worker)
    with open(shared_tmp / "default-roots.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield from _default_roots(tmp_path)


def _default_roots(tmp_path: Path) -> Iterator[dict[str, Any]]:
    name = f"rtdir-{secrets.token_hex(4)}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VBDECL_") or k == "VBDECL_CACHE_DIR"}
    env["VBDECL_CACHE_DIR"] = str(tmp_path / "cache")
    existed = {p: p.exists() for p in (STATE_ROOT, STATE_ROOT / "envs", STATE_ROOT / "run", RUN_ROOT)}
    manifest = tmp_path / f"{name}.yaml"
    manifest.write_text(MANIFEST.format(name=name))
    yield {"name": name, "env": env, "manifest": manifest}
    if (STATE_ROOT / "envs" / name / "state.json").exists():
        _cli(env, "recover", name)
        _cli(env, "destroy", name, "-y")
    shutil.rmtree(STATE_ROOT / "envs" / name, ignore_errors=True)
    for path, was in sorted(existed.items(), key=lambda item: -len(item[0].parts)):   # deepest first
        if not was and path.is_dir():
            try:
                path.rmdir()
            except OSError:
                pass


def test_live_environment_runtime_dir_is_run_vbdecl(default_roots: dict[str, Any]) -> None:
    name, env = default_roots["name"], default_roots["env"]
    out = _cli(env, "apply", str(default_roots["manifest"]), "-y")
    assert out.returncode == 0, out.stderr
    state = json.loads((STATE_ROOT / "envs" / name / "state.json").read_text())
    instance = state["instance"]
    record = state["resources"]["env"]["record"]
    want = str(RUN_ROOT / instance)
    assert record["runtime_dir"] == want
    assert record["pins"] and all(p.startswith(want + "/ns/") for p in record["pins"].values())
    assert sorted(_pinned_under(want)) == sorted(record["pins"].values())
    assert (RUN_ROOT / instance / "init.json").exists()
    assert not (STATE_ROOT / "run" / instance).exists()
    out = _cli(env, "exec", name, "--", "/bin/hostname")
    assert out.returncode == 0 and out.stdout.strip() == name, out.stderr
    out = _cli(env, "destroy", name, "-y")
    assert out.returncode == 0, out.stderr
    assert not (RUN_ROOT / instance).exists() and _pinned_under(want) == []


def test_environment_started_in_the_old_runtime_dir_is_destroyed_there(
        default_roots: dict[str, Any]) -> None:
    from vbdecl.engine import sources
    from vbdecl.engine.executor import Engine

    name, env = default_roots["name"], default_roots["env"]
    plan = sources.compile_manifest(default_roots["manifest"])[0]
    old = Engine()
    old.runtime_root = str(STATE_ROOT / "run")     # where vbdecl put it before
    res = old.apply(plan)
    legacy = str(STATE_ROOT / "run" / str(res.instance))
    state = json.loads((STATE_ROOT / "envs" / name / "state.json").read_text())
    assert state["resources"]["env"]["record"]["runtime_dir"] == legacy
    assert _pinned_under(legacy)
    # the new vbdecl finds it there: exec enters it, status sees it live, destroy cleans it
    out = _cli(env, "exec", name, "--", "/bin/hostname")
    assert out.returncode == 0 and out.stdout.strip() == name, out.stderr
    out = _cli(env, "--json", "status", name)
    assert out.returncode == 0, out.stderr
    assert {r["status"] for r in json.loads(out.stdout)["resources"]} == {"ok"}, out.stdout
    out = _cli(env, "destroy", name, "-y")
    assert out.returncode == 0, out.stderr
    assert _pinned_under(legacy) == [] and not os.path.exists(legacy)
    assert not (RUN_ROOT / str(res.instance)).exists()
