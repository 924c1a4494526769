"""``vbdecl ls``: the STATUS of an environment whose process ended on its own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vbdecl.cli.cmd_ls import ended
from vbdecl.plan.diff import Change


def _state(tmp_path: Path, exit_code: int | None) -> dict[str, Any]:
    log = tmp_path / "logs" / "process.log"
    log.parent.mkdir(exist_ok=True)
    if exit_code is not None:
        (log.parent / "process.exit").write_text(json.dumps(
            {"pid": 42, "start_time": 7, "exit_code": exit_code, "time": 1.0}))
    record = {"pid": 42, "start_time": 7, "log": str(log)}
    return {"resources": {"process": {"kind": "proc.main", "record": record}}}


_EXITED = Change("-", "process", "proc.main", "exited", drift=True)


@pytest.mark.parametrize(("code", "status"), [(0, "exited (0)"), (3, "exited (3)"),
                                              (137, "killed (SIGKILL)"), (143, "killed (SIGTERM)"),
                                              (None, "exited")])
def test_a_process_that_ended_is_the_status_not_drifted(
        tmp_path: Path, code: int | None, status: str) -> None:
    """A UX review: hello's process exits 0, as designed, and ls called it "drifted"."""
    assert ended([_EXITED], _state(tmp_path, code)) == status


def test_other_drift_keeps_drifted(tmp_path: Path) -> None:
    other = Change("~", "mount[/data]", "fs.bind", "changed outside vbdecl", drift=True)
    assert ended([_EXITED, other], _state(tmp_path, 0)) is None
    assert ended([other], _state(tmp_path, 0)) is None


@pytest.mark.parametrize(("record", "status"), [({"exit_code": 130, "signal": None}, "exited (130)"),
                                                ({"exit_code": 130, "signal": 2}, "killed (SIGINT)"),
                                                ({"exit_code": 130}, "killed (SIGINT)")])
def test_the_exit_record_tells_an_exit_code_above_128_from_a_signal(
        tmp_path: Path, record: dict[str, Any], status: str) -> None:
    """A review: `exit 130` showed as killed (SIGINT). The supervisor records the signal
    now (null for an exit); a record from before it still goes by the code."""
    state = _state(tmp_path, None)
    (tmp_path / "logs" / "process.exit").write_text(json.dumps({"pid": 42, "start_time": 7, "time": 1.0,
                                                                 **record}))
    assert ended([_EXITED], state) == status


def test_a_process_record_with_fields_of_another_type_names_no_process() -> None:
    """A crash review changed a process record's fields to other types by hand: status
    failed as a bug in vbdecl."""
    from vbdecl.runtime.live import process_tree

    assert process_tree({"pid": "12", "start_time": [1], "supervisor": 5}) == []
    assert process_tree({"pid": True, "supervisor": {"pid": "x", "start_time": None}}) == []
