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


def _stale_state_reason(want: dict[str, object], state: dict[str, object] | None) -> str:
    saved = {"name": "sl", "saved": {"tool_version": __version__}, "state": want}
    reason = stale_reason(saved, state)
    assert reason is not None and "None" not in reason and "lineage" not in reason
    return reason


def test_a_stale_state_is_told_in_revisions_not_lineages() -> None:
    applied = {"lineage": "d7088506-0000", "serial": 1, "revision": 1}
    assert _stale_state_reason({"lineage": None, "serial": 0}, applied) == (
        "the plan was made before sl was applied; sl is now at revision 1 (serial 1)")
    assert _stale_state_reason({"lineage": "d7088506-0000", "serial": 1},
                               {**applied, "serial": 3, "revision": 2}) == (
        "sl changed since the plan was made at serial 1; sl is now at revision 2 (serial 3)")
    assert _stale_state_reason({"lineage": "0ld", "serial": 4}, applied) == (
        "sl was destroyed and applied anew since the plan was made; sl is now at revision 1 "
        "(serial 1)")
    assert _stale_state_reason({"lineage": "d7088506-0000", "serial": 1}, None) == (
        "sl was destroyed since the plan was made (at serial 1)")


def test_a_saved_plan_cut_short_is_said_to_be_damaged(tmp_path: Path) -> None:
    """A review applied a saved plan cut in half: it was reported as a YAML syntax error
    of a manifest. A file that begins as `plan -o` writes them is a damaged plan."""
    import pytest

    from vbdecl.engine import sources
    from vbdecl.errors import StalePlanError

    cut = tmp_path / "web.plan"
    cut.write_bytes(b'{"actions":[{"deps":[],"id":"env","kind":"env.names')
    with pytest.raises(StalePlanError, match=r"web.plan is a damaged saved plan \(") as err:
        sources.load(str(cut))
    assert err.value.hint == "make it again: vbdecl plan FILE -o PLANFILE"
    assert sources.saved_plan_in(b'{"apiVersion": "vbdecl/v1"') is None    # (JSON as a manifest: its loader says)
