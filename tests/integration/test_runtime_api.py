"""The Python API: vbdecl.run with a manifest, a plan or a spec, and event callbacks."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

import vbdecl
import vbdecl.api
from vbdecl.errors import RuntimeSetupError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VBDECL_CACHE_DIR", str(tmp_path / "cache"))


def test_run_manifest_with_callback_and_command_override(tmp_path: Path) -> None:
    events: list[dict[str, object]] = []
    r, w = os.pipe()
    try:
        plan = vbdecl.compile_plan(REPO / "manifests" / "hello.yaml")
        plan["spec"]["process"]["inherit_fds"] = [w]
        result = vbdecl.run(plan, command=["/bin/bash", "-c", f"echo api $$ >&{w}; exit 4"],
                            on_event=events.append)
        os.close(w)
        w = -1
        out = os.read(r, 100)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    assert result.code == 4 and result.error is None
    assert out == b"api 2\n"
    assert [e["event"] for e in events] == ["runtime_init_warnings", "spawned", "setup_finished",
                                            "exited"]
    assert events[-1]["exit_code"] == 4
    assert len(vbdecl.load(REPO / "manifests" / "hello.yaml")) == 1


def test_run_reports_setup_failures_without_raising() -> None:
    result = vbdecl.run(REPO / "manifests" / "hello.yaml", command=["no-such-program-api"])
    assert result.code == 127 and result.error is not None
    assert "command not found" in result.error.message


def test_exec_in_unknown_environment_raises(tmp_path: Path) -> None:
    with pytest.raises(RuntimeSetupError, match="environment 'nothing-here' does not exist"):
        vbdecl.api.exec_in("nothing-here", ["true"], state_dir=str(tmp_path / "state"))


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _pid_ns_for_children_is_own() -> bool:
    return os.stat("/proc/self/ns/pid_for_children").st_ino == os.stat("/proc/self/ns/pid").st_ino


def test_root_run_forks_pid1_directly_and_keeps_our_pid_namespace() -> None:
    # As root without a user namespace there is no holder: pid 1 is our own child.
    parents: list[int] = []

    def on_event(event: dict[str, object]) -> None:
        if event["event"] == "spawned":
            parents.append(_ppid(int(str(event["pid"]))))

    result = vbdecl.run(REPO / "manifests" / "hello.yaml",
                        command=["/bin/sh", "-c", "[ $$ = 2 ] && exit 3"], on_event=on_event)
    assert result.code == 3 and result.error is None
    assert parents == [os.getpid()]
    # The pid namespace was unshared for our children for that one fork only.
    assert _pid_ns_for_children_is_own()


def test_fork_failure_reports_and_restores(monkeypatch: pytest.MonkeyPatch) -> None:
    import vbdecl.runtime.spawn as spawn

    def no_fork() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(spawn.os, "fork", no_fork)
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    result = vbdecl.run(REPO / "manifests" / "hello.yaml", command=["/bin/true"],
                        forward_signals=True)
    assert result.code == 125 and result.error is not None
    assert "fork: Resource temporarily unavailable" in result.error.message
    assert _pid_ns_for_children_is_own()
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == mask   # forwarding undone


def test_changes_pid1_reports_before_its_pid_are_undone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A review of the undo janitor: a pid 1 forked by the holder builds the root and
    may report what it changed on the host before the holder sends pid 1's pid; that
    report came before the janitor existed and was dropped: the changes stayed."""
    import time

    from vbdecl.runtime import child

    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o755)
    plan = vbdecl.compile_plan(REPO / "manifests" / "hello.yaml")
    spec = plan["spec"]
    spec["namespaces"]["user"] = True       # a holder, which forks pid 1
    spec["idmap"] = {"uid": [{"inside": 0, "outside": 0, "count": 1}],
                     "gid": [{"inside": 0, "outside": 0, "count": 1}]}
    spec["filesystem"] += [
        {"type": "bind", "source": str(data), "target": "/data", "optional": False},
        {"type": "dir", "target": "/data/made/sub", "mode": None},
        {"type": "chmod", "target": "/data", "mode": 0o700},
    ]
    real_send = child.send

    def late_pid(fd: int, tag: bytes, payload: bytes = b"") -> None:
        if tag == child.MSG_PID:
            time.sleep(0.5)         # pid 1's report of its changes comes first
        real_send(fd, tag, payload)

    monkeypatch.setattr(child, "send", late_pid)
    result = vbdecl.run(plan, command=["/bin/true"])
    assert result.code == 0 and result.error is None, result.error
    assert list(data.iterdir()) == [] and data.stat().st_mode & 0o777 == 0o755
