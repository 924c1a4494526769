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


NAT_RUN = """\
apiVersion: vbdecl/v1
kind: Environment
metadata: {{name: {name}}}
spec:
  filesystem:
    - {{type: ro-bind, source: /usr, target: /usr}}
    - {{type: symlink, target: /bin, points_to: usr/bin}}
    - {{type: symlink, target: /lib, points_to: usr/lib}}
    - {{type: symlink, target: /lib64, points_to: usr/lib64}}
  network: {{mode: bridge, bridge: {bridge}, subnet: {subnet}, nat: true, ports: ["{port}:80/tcp"]}}
  process: {{command: [/bin/true]}}
"""


@pytest.mark.parametrize("point", ["net-locked", "nat-locked"])
def test_a_run_killed_holding_a_shared_lock_leaves_no_lock_files(tmp_path: Path, point: str) -> None:
    """A kill review: `vbdecl run` SIGKILLed right after it opened the state root's
    global.lock (or /run/vbdecl/nat.lock), before anything of its own was there to
    find, left the empty lock file (and its shared state) for good: the janitor
    reverted nothing, so nothing took the lock and removed them. It tidies them now."""
    import random
    import secrets
    import subprocess
    import sys

    from vbdecl.ops import nat

    state = tmp_path / "state"
    m = tmp_path / "m.yaml"
    m.write_text(NAT_RUN.format(name=f"k{secrets.token_hex(3)}", bridge=f"vbt{secrets.token_hex(4)}",
                                subnet=f"10.{random.randint(100, 250)}.{random.randrange(0, 250, 2)}.0/24",
                                port=random.randint(20000, 32000)))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("VBDECL_")},
           "VBDECL_CACHE_DIR": str(tmp_path / "cache"), "VBDECL_TEST_CRASH_AT": point}
    out = subprocess.run([str(Path(sys.executable).with_name("vbdecl")), "--state-dir", str(state), "run",
                          str(m)], env=env, capture_output=True, text=True, timeout=60, start_new_session=True)
    assert out.returncode == -signal.SIGKILL, out.stderr
    host = Path(nat.HOST_DIR)

    def tidy() -> bool:
        if point == "net-locked":
            return not any((state / name).exists() for name in ("global.lock", "net.0.json", "net.1.json"))
        # (another test's environment may publish a port meanwhile: then the files are its)
        return (host / "nat.json").exists() or not (host / "nat.lock").exists()

    deadline = time.monotonic() + 15
    while not tidy():
        assert time.monotonic() < deadline, sorted(p.name for p in (state, host)[point == "nat-locked"].iterdir())
        time.sleep(0.05)


JANITOR_THEN_GROUP_KILL = """\
import os, signal, sys
from vbdecl.runtime.janitor import fork_janitor, read_lines

def body(fd):
    read_lines(fd)                      # (until its starter is gone)
    open(sys.argv[1], "w").close()

fork_janitor("vbdecl-test", [], body)
os.killpg(0, signal.SIGKILL)            # the whole run's group, at once
"""


def test_a_janitor_outlives_a_kill_of_the_run_s_group_right_after_its_start(tmp_path: Path) -> None:
    """CI once: a build that killed the run's process group at once (the crash-point
    test) beat the janitor to its setsid, killed it too, and left the build's changes.
    A janitor is in its own session before fork_janitor returns."""
    import subprocess
    import sys

    for i in range(5):
        marker = tmp_path / f"survived-{i}"
        r = subprocess.run([sys.executable, "-c", JANITOR_THEN_GROUP_KILL, str(marker)],
                           start_new_session=True, timeout=30)
        assert r.returncode == -signal.SIGKILL
        deadline = time.monotonic() + 10
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert marker.exists(), f"run {i}: the janitor died with its starter's group"


class FailingApplyOp(testops.FileOp):
    def apply(self, ctx: Any, params: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("this step fails")


def test_an_interrupted_revert_lets_go_of_the_bridges_for_the_janitor(tmp_path: Path) -> None:
    """A review's finding: a library `run` whose rollback was interrupted kept this
    process's hold on the bridges (a join's, until its veth is on the bridge), so its
    janitor's revert of the bridge waited for it 60 s and left the bridge. The revert
    lets go whatever ends it."""
    import random
    import secrets
    import socket

    from vbdecl.errors import ActionError
    from vbdecl.ops import net

    testops.register()
    register("test.interrupted", f"{__name__}:InterruptedRevertOp")
    register("test.failing", f"{__name__}:FailingApplyOp")
    bridge = f"vbt{secrets.token_hex(4)}"
    subnet = f"10.{random.randint(100, 250)}.{random.randrange(0, 250, 2)}.0/24"
    actions = [
        {"id": f"net.bridge[{bridge}]", "kind": "net.bridge",
         "params": {"bridge": bridge, "subnet": subnet, "subnet6": None, "mtu": None}},
        {"id": "b", "kind": "test.interrupted", "params": {"path": str(tmp_path / "b"), "content": "y"}},
        {"id": "c", "kind": "test.failing", "params": {"path": str(tmp_path / "c"), "content": "z"}},
    ]
    ctx = Context(name="janitor", instance=f"vb-{secrets.token_hex(4)}", state_dir=str(tmp_path),
                  runtime_dir=str(tmp_path / "run"))
    tx = HostTransaction(ctx)
    try:
        # c fails, the rollback's revert of b is interrupted: the bridge stays to the janitor
        with pytest.raises(KeyboardInterrupt):
            tx.apply(actions)
        assert ctx.instance not in net._HELD
        socket.if_nametoindex(bridge)
    except ActionError as exc:
        raise AssertionError(f"the rollback was not interrupted: {exc}") from exc
    finally:
        tx.close()     # the janitor reverts b and the bridge
        net.release(ctx)
    with pytest.raises(OSError):
        socket.if_nametoindex(bridge)
    assert not (tmp_path / "b").exists()
