"""A limit the machine cannot enforce is refused by `vbdecl plan`, before any apply."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

VBDECL = str(Path(sys.executable).with_name("vbdecl"))
MANIFEST = """\
apiVersion: vbdecl/v1
kind: Environment
metadata: {name: preflight}
spec:
  filesystem: [{type: tmpfs, target: /tmp}]
  limits: {memory: 64Mi, pids: 16, optional: OPTIONAL}
  process: {command: [/bin/true]}
"""


def plan(tmp_path: Path, optional: bool, hide_pids: bool) -> subprocess.CompletedProcess[str]:
    manifest = tmp_path / "env.yaml"
    manifest.write_text(MANIFEST.replace("OPTIONAL", "true" if optional else "false"))
    env = dict(os.environ)
    if hide_pids:
        # The cgroup layout hook: this machine's hierarchies, without the pids controller.
        env["VBDECL_CGROUP_LAYOUT"] = json.dumps({
            "unified": "/sys/fs/cgroup/unified", "v2_controllers": [],
            "v1": {"memory": "/sys/fs/cgroup/memory", "cpu": "/sys/fs/cgroup/cpu"}})
    return subprocess.run([VBDECL, "plan", "--no-cache", "--no-refresh", "--state-dir",
                           str(tmp_path / "state"), str(manifest)],
                          capture_output=True, text=True, env=env, timeout=60)


def test_missing_controller_is_a_plan_time_error(tmp_path: Path) -> None:
    proc = plan(tmp_path, optional=False, hide_pids=True)
    assert proc.returncode == 1
    assert "limits.pids" in proc.stderr and "pids controller" in proc.stderr
    assert "hint:" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_controller_with_optional_limits_is_a_warning(tmp_path: Path) -> None:
    proc = plan(tmp_path, optional=True, hide_pids=True)
    assert proc.returncode == 0, proc.stderr
    assert "warning:" in proc.stderr and "limits.pids" in proc.stderr
    assert "+ cgroup.pids" in proc.stdout


def test_enforceable_limits_plan_cleanly(tmp_path: Path) -> None:
    proc = plan(tmp_path, optional=False, hide_pids=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
