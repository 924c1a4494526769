"""``vbdecl --json convert``: JSON in both directions, the same content as the text forms."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from vbdecl.cli.main import main

ARGS = ["--ro-bind", "/usr", "/usr", "--proc", "/proc", "--unshare-pid", "true"]


def test_json_convert_from_and_to_bwrap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["convert", "--from-bwrap", "--", *ARGS]) == 0
    text = capsys.readouterr().out
    assert main(["--json", "convert", "--from-bwrap", "--", *ARGS]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["kind"] == "Environment" and manifest["spec"]["process"]["command"] == ["true"]
    (tmp_path / "env.yaml").write_text(text)
    (tmp_path / "env.json.yaml").write_text(json.dumps(manifest))     # JSON is YAML too
    outs = []
    for name in ("env.yaml", "env.json.yaml"):
        assert main(["convert", "--to-bwrap", str(tmp_path / name)]) == 0
        line = capsys.readouterr().out
        assert main(["--json", "convert", "--to-bwrap", str(tmp_path / name)]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["argv"] == shlex.split(line) and doc["name"] == "vb"
        outs.append(doc["argv"])
    assert outs[0] == outs[1]
