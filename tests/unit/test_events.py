"""Event sinks (vbdecl/runtime/events.py): a bad --events-fd is refused before anything
runs, with what to do; a sink that stops taking events mid-run costs the sandbox nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from vbdecl.errors import RuntimeSetupError
from vbdecl.runtime.events import EventSink


def test_an_fd_that_is_not_open_is_refused() -> None:
    r, w = os.pipe()
    os.close(r)
    os.close(w)          # (a number just freed: nothing holds it)
    with pytest.raises(RuntimeSetupError, match=f"events fd {w} is not open") as err:
        EventSink(fds=[w])
    assert f"--events-fd {w} FILE {w}>events.jsonl" in str(err.value.hint)


def test_a_read_only_or_path_fd_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "events"
    f.write_text("")
    for flags, what in ((os.O_RDONLY, "not open for writing"), (os.O_PATH, "not open")):
        fd = os.open(f, flags | os.O_CLOEXEC)
        try:
            with pytest.raises(RuntimeSetupError) as err:
                EventSink(fds=[fd])
            assert err.value.message == f"events fd {fd} is {what}"
        finally:
            os.close(fd)


def test_a_sink_that_fails_mid_run_is_dropped_and_named(capsys: pytest.CaptureFixture[str],
                                                        tmp_path: Path) -> None:
    full = os.open("/dev/full", os.O_WRONLY | os.O_CLOEXEC)
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        sink = EventSink(fds=[full, w], path=str(tmp_path / "events.jsonl"))
        sink.emit("spawned", pid=1)
        sink.emit("exited", pid=1, exit_code=0)
        assert "events fd " + str(full) + ": No space left on device" in capsys.readouterr().err
        assert full not in sink.fds and w in sink.fds
        got = os.read(r, 65536).decode().splitlines()
        assert [json.loads(line)["event"] for line in got] == ["spawned", "exited"]
        lines = (tmp_path / "events.jsonl").read_text().splitlines()
        assert [json.loads(line)["event"] for line in lines] == ["spawned", "exited"]
        sink.close()
    finally:
        for fd in (full, r, w):
            os.close(fd)


def test_a_slow_reader_of_a_non_blocking_pipe_gets_every_event() -> None:
    """EAGAIN is a reader behind, not one gone: the sink waits for room."""
    import threading

    r, w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        sink = EventSink(fds=[w])
        got: list[bytes] = []

        def read_slowly() -> None:
            import time

            time.sleep(0.2)
            with os.fdopen(os.dup(r), "rb") as f:
                os.set_blocking(f.fileno(), True)
                while chunk := f.read1(65536):
                    got.append(chunk)

        reader = threading.Thread(target=read_slowly)
        reader.start()
        for i in range(2000):           # ~200 KB: more than a pipe holds
            sink.emit("spawned", pid=i, padding="x" * 64)
        os.close(w)
        w = -1
        reader.join(10)
        lines = b"".join(got).decode().splitlines()
        assert len(lines) == 2000 and json.loads(lines[-1])["pid"] == 1999
    finally:
        for fd in (r, w):
            if fd >= 0:
                os.close(fd)
