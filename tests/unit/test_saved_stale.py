"""A saved plan whose manifest was deleted is stale, not fresh."""

from __future__ import annotations

from pathlib import Path

from vbdecl import __version__
from vbdecl.plan.saved import file_hash, stale_reason


def test_deleted_manifest_makes_a_saved_plan_stale(tmp_path: Path) -> None:
    manifest = tmp_path / "env.yaml"
    manifest.write_bytes(b"apiVersion: vbdecl/v1\n")
    saved = {"saved": {"tool_version": __version__, "file": str(manifest),
                       "file_hash": file_hash(manifest.read_bytes())},
             "state": {"lineage": None, "serial": 0}}
    assert stale_reason(saved, None) is None
    manifest.unlink()
    reason = stale_reason(saved, None)
    assert reason is not None and "can no longer be read" in reason
