"""An apply killed after the environment's init started, but before its record
reached the journal, still leaves nothing behind: recovery finds the init
through the runtime directory (ops.env probe without a record)."""

from __future__ import annotations

import os
from pathlib import Path

from vbdecl.model import load_normalized
from vbdecl.ops import op_for
from vbdecl.ops.base import Context
from vbdecl.plan.compile import compile_doc
from vbdecl.sys import proc as sysproc

MANIFEST = """\
apiVersion: vbdecl/v1
kind: Environment
metadata: {name: envrecovery}
spec:
  namespaces: {pid: true, mount: true, uts: true, ipc: true, net: true}
  process: {command: [/bin/true]}
"""


def test_probe_without_a_record_finds_the_init_and_revert_removes_it(tmp_path: Path) -> None:
    manifest = tmp_path / "env.yaml"
    manifest.write_text(MANIFEST)
    plan = compile_doc(load_normalized(str(manifest))[0])
    env_action = next(a for a in plan["actions"] if a["id"] == "env")
    instance = "vb-0e0e0e0e"
    runtime_dir = tmp_path / "run" / instance
    ctx = Context(name="envrecovery", instance=instance, state_dir=str(tmp_path / "state"),
                  runtime_dir=str(runtime_dir), spec=plan["spec"])
    op = op_for("env.namespaces")

    landed = op.apply(ctx, env_action["params"])   # ... and vbdecl dies before journaling it
    assert sysproc.alive(landed["pid"], landed["start_time"])

    fresh = Context(name="envrecovery", instance=instance, state_dir=str(tmp_path / "state"),
                    runtime_dir=str(runtime_dir), spec=plan["spec"])
    found = op.probe(fresh, env_action["params"], None)
    assert found is not None and found["pid"] == landed["pid"]
    op.revert(fresh, found)

    assert not sysproc.alive(landed["pid"], landed["start_time"])
    assert not runtime_dir.exists()
    assert op.probe(fresh, env_action["params"], None) is None
    # Another instance's runtime dir is never taken for ours.
    other = Context(name="x", instance="vb-0f0f0f0f", state_dir=str(tmp_path / "state"),
                    runtime_dir=str(tmp_path / "run" / "vb-0f0f0f0f"), spec=plan["spec"])
    assert op.probe(other, env_action["params"], None) is None
    assert os.listdir(tmp_path / "run") == []
