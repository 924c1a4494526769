"""apply and destroy ask unless -y, and only y/yes goes on: from a terminal or a
pipe alike, and no answer at all (end of input) is no, with exit status 1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import testops


def test_apply_and_destroy_go_on_only_on_yes(tmp_path: Path) -> None:
    root, sd = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    plan = testops.write_plan(tmp_path / "p.json", testops.make_plan("ask", root, files=2, mounts=0))

    def cli(*args: str, answer: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, testops.__file__, "--state-dir", str(sd), *args],
                              input=answer, capture_output=True, text=True, timeout=60)

    for answer in ("n\n", "", "maybe\n"):
        out = cli("apply", str(plan), answer=answer)
        assert out.returncode == 1, out
        assert "Apply these changes to ask? [y/N]" in out.stderr      # not on stdout
        assert "ask: not applied" in out.stderr and "applied revision" not in out.stdout
        assert ("pass -y" in out.stderr) == (answer == "")
        assert testops.host_tree(root) == {}
        assert not (sd / "envs" / "ask" / "state.json").exists()

    out = cli("apply", str(plan), answer="y\n")
    assert out.returncode == 0, out
    assert "ask: applied revision 1" in out.stdout
    applied = testops.host_tree(root)
    assert applied

    out = cli("destroy", "ask", answer="")
    assert out.returncode == 1 and "ask: not destroyed" in out.stderr, out
    out = cli("--json", "destroy", "ask", answer="n\n")
    assert out.returncode == 1 and '"declined": ["ask"]' in out.stdout, out
    assert testops.host_tree(root) == applied
    out = cli("destroy", "ask", answer="YES\n")
    assert out.returncode == 0 and "ask: destroyed" in out.stdout, out
    assert testops.host_tree(root) == {}


def test_no_stdin_at_all_is_no(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from vbdecl.cli.progress import confirm

    monkeypatch.setattr(sys, "stdin", None)      # what Python makes of a closed fd 0
    assert confirm("Apply?", False) is False
    assert "pass -y" in capsys.readouterr().err
