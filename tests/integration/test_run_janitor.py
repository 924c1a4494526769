"""`vbdecl run` killed in the middle of a host action leaks nothing: the janitor
learns of every action before its apply starts, and on vbdecl's death reverts
what the in-flight action's probe finds (besides everything that had landed)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

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
