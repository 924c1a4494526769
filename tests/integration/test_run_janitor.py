"""`vbdecl run` killed in the middle of a host action leaks nothing: the janitor
learns of every action before its apply starts, and on vbdecl's death reverts
what the in-flight action's probe finds (besides everything that had landed)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import testops

from vbdecl.ops import register
from vbdecl.ops.base import Context
from vbdecl.runtime.hostactions import HostTransaction


class HangAfterCreateOp(testops.FileOp):
    """Creates its file, then never returns (vbdecl is killed inside apply)."""

    def apply(self, ctx: Any, params: dict[str, Any]) -> dict[str, Any]:
        super().apply(ctx, params)
        time.sleep(3600)
        raise AssertionError("unreachable")


def test_sigkill_inside_an_apply_is_reverted_by_the_janitor(tmp_path: Path) -> None:
    testops.register()
    register("test.hang", f"{__name__}:HangAfterCreateOp")
    landed_first = tmp_path / "landed"
    in_flight = tmp_path / "in-flight"
    actions = [
        {"id": "a", "kind": "test.file", "params": {"path": str(landed_first), "content": "x"}},
        {"id": "b", "kind": "test.hang", "params": {"path": str(in_flight), "content": "y"}},
    ]
    pid = os.fork()
    if pid == 0:
        try:
            ctx = Context(name="janitor", instance="vb-0a0a0a0a", state_dir=str(tmp_path),
                          runtime_dir=str(tmp_path / "run"))
            HostTransaction(ctx).apply(actions)
        finally:
            os._exit(1)
    deadline = time.monotonic() + 10
    while not in_flight.exists():
        assert time.monotonic() < deadline, "the in-flight action never started"
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    deadline = time.monotonic() + 10
    while landed_first.exists() or in_flight.exists():
        assert time.monotonic() < deadline, "the janitor did not revert both actions"
        time.sleep(0.02)


class InterruptedRevertOp(testops.FileOp):
    """Its first revert is interrupted (a ^C reached it), before it removed anything."""

    def revert(self, ctx: Any, record: dict[str, Any]) -> None:
        once = Path(ctx.state_dir) / "interrupted"     # (the janitor is another process)
        if not once.exists():
            once.touch()
            raise KeyboardInterrupt
        super().revert(ctx, record)


def test_an_interrupted_revert_is_finished_by_the_janitor(tmp_path: Path) -> None:
    """A review's finding: a ^C during a run's teardown was taken for a revert
    failure with no words ("error: nat.masquerade: "), the janitor was told the
    action was reverted and dismissed, and a bridge stayed. The interrupt goes
    through now, and the janitor reverts that action and the ones after it."""
    testops.register()
    register("test.interrupted", f"{__name__}:InterruptedRevertOp")
    first, second, third = (tmp_path / name for name in ("first", "second", "third"))
    actions = [
        {"id": "a", "kind": "test.file", "params": {"path": str(first), "content": "x"}},
        {"id": "b", "kind": "test.interrupted", "params": {"path": str(second), "content": "y"}},
        {"id": "c", "kind": "test.file", "params": {"path": str(third), "content": "z"}},
    ]
    ctx = Context(name="janitor", instance="vb-0b0b0b0b", state_dir=str(tmp_path),
                  runtime_dir=str(tmp_path / "run"))
    tx = HostTransaction(ctx)
    tx.apply(actions)
    try:
        with pytest.raises(KeyboardInterrupt):
            tx.revert()
        assert not third.exists() and first.exists() and second.exists()
    finally:
        tx.close()     # as run_spec's teardown: the janitor finishes, then returns
    assert not first.exists() and not second.exists()
