"""``vbdecl logs -f`` goes on into a new instance's log: the file it followed became
``process.log.1`` (runtime/live.py, _begin_log) and a new ``process.log`` holds what
comes next. The environment and its process are faked; the files are real."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from vbdecl.runtime import live


class _Stdout:
    def __init__(self) -> None:
        self.buffer = io.BytesIO()


def _wait_for(cond: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_follow_goes_on_into_a_new_instances_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = tmp_path / "envs" / "h3follow"
    (env / "logs").mkdir(parents=True)
    (env / "state.json").write_text("{}")
    log = env / "logs" / "process.log"
    log.write_bytes(b"a\n")
    running = threading.Event()
    running.set()
    monkeypatch.setattr(live, "load_state", lambda name, state_dir: {
        "resources": {"process": {"record": {"pid": 1, "start_time": 0}}}})
    monkeypatch.setattr(live, "env_record", lambda state: {})
    monkeypatch.setattr(live, "env_alive", lambda record: running.is_set())
    monkeypatch.setattr(live.sysproc, "alive", lambda pid, started=None, **kw: running.is_set())
    out = _Stdout()
    monkeypatch.setattr(live.sys, "stdout", out)
    codes: list[int] = []
    follower = threading.Thread(target=lambda: codes.append(
        live.logs("h3follow", state_dir=str(tmp_path), follow=True)))
    follower.start()
    try:
        assert _wait_for(lambda: out.buffer.getvalue() == b"a\n")
        with log.open("ab") as f:          # the old instance's last words, then the rotation
            f.write(b"b\n")
        log.rename(log.with_name("process.log.1"))
        log.write_bytes(b"c\n")
        _wait_for(lambda: out.buffer.getvalue().endswith(b"c\n"), timeout=3)
    finally:
        running.clear()
        follower.join(timeout=10)
    assert codes == [0]
    assert out.buffer.getvalue() == b"a\nb\nc\n"


@pytest.mark.parametrize("text", [b"", b"a", b"a\n", b"a\nb", b"a\nb\n", b"\n\n", b"x\n" * 70000 + b"last",
                                  b"y" * 200000 + b"\nz\n"])
def test_the_last_lines_are_found_from_the_end(tmp_path: Path, text: bytes) -> None:
    """A scale review: `logs -n 10` of a 100 MB log split every line of it (264 MB); the
    last lines are found by reading back from the end, across block boundaries."""
    path = tmp_path / "process.log"
    path.write_bytes(text)
    with open(path, "rb") as f:
        for n in (0, 1, 2, 3, 70001):
            f.seek(live._tail_start(f, n))
            assert f.read() == b"".join(text.splitlines(keepends=True)[-n:] if n else []), (n, text[:20])


def test_logs_streams_the_log_and_its_tail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = tmp_path / "envs" / "h3tail"
    (env / "logs").mkdir(parents=True)
    (env / "state.json").write_text("{}")
    (env / "logs" / "process.log").write_bytes(b"".join(b"line %d\n" % i for i in range(300000)))
    for tail, want in ((None, b"line 0\n"), (2, b"line 299998\nline 299999\n")):
        out = _Stdout()
        monkeypatch.setattr(live.sys, "stdout", out)
        assert live.logs("h3tail", state_dir=str(tmp_path), tail=tail) == 0
        data = out.buffer.getvalue()
        assert data.startswith(want) and data.count(b"\n") == (300000 if tail is None else 2)


def test_ctrl_c_on_a_follow_exits_130_as_tail_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A UX review: Ctrl-C on `logs -f` exited 0, as if the process had ended."""
    env = tmp_path / "envs" / "h3int"
    (env / "logs").mkdir(parents=True)
    (env / "state.json").write_text("{}")
    (env / "logs" / "process.log").write_bytes(b"a\n")
    monkeypatch.setattr(live, "load_state", lambda name, state_dir: {
        "resources": {"process": {"record": {"pid": 1, "start_time": 0}}}})
    monkeypatch.setattr(live, "env_record", lambda state: {})
    monkeypatch.setattr(live, "env_alive", lambda record: True)
    monkeypatch.setattr(live.sysproc, "alive", lambda pid, started=None, **kw: True)
    monkeypatch.setattr(live.sys, "stdout", _Stdout())

    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(live.time, "sleep", interrupted)
    assert live.logs("h3int", state_dir=str(tmp_path), follow=True) == 130


def test_a_negative_line_count_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """A UX review: `logs -n -1 NAME` printed nothing and exited 0."""
    from vbdecl.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["logs", "-n", "-1", "web"])
    assert exc.value.code == 1
    assert "argument -n/--tail: -1 lines: give 0 or more" in capsys.readouterr().err
