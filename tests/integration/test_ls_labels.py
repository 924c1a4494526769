"""metadata.labels are shown: `status` (text and --json) and `ls --json` (a review saw
them stored, a labels-only change make a revision, and never shown anywhere)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import testops

from vbdecl.engine.executor import Engine

testops.register()


def test_labels_are_shown_by_status_and_ls(tmp_path: Path) -> None:
    root, sd = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    plan = testops.make_plan("lab", root, files=1, mounts=0)
    plan["labels"] = {"team": "web", "tier": "front"}
    Engine(sd).apply(plan)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VBDECL_FAULT")}
        return subprocess.run([sys.executable, testops.__file__, "--state-dir", str(sd), *args],
                              env=env, capture_output=True, text=True, timeout=60)

    try:
        out = cli("status", "lab")
        assert out.returncode == 0 and "  labels: team=web, tier=front\n" in out.stdout, out
        assert json.loads(cli("--json", "status", "lab").stdout)["labels"] == plan["labels"]
        assert json.loads(cli("--json", "ls").stdout)[0]["labels"] == plan["labels"]
    finally:
        Engine(sd).destroy("lab")
    assert testops.host_tree(root) == {}
