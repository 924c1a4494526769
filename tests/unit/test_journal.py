"""Journal, atomic writes, paths, faults, locks: pure logic and plain files, no root."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vbdecl.engine import atomic, journal, lock, paths
from vbdecl.engine.faults import Faults
from vbdecl.errors import ActionError, LockedError, StateError, UsageError


def test_append_is_line_per_entry_and_read_back(tmp_path: Path) -> None:
    p = tmp_path / "j.jsonl"
    with journal.Journal(p) as j:
        j.append({"t": "begin", "txn": "a"})
        j.append({"t": "intent", "txn": "a", "seq": 1})
    assert [e["t"] for e in journal.read(p)] == ["begin", "intent"]
    assert p.read_bytes().count(b"\n") == 2


def test_torn_tail_is_ignored_and_cut_before_the_next_append(tmp_path: Path) -> None:
    p = tmp_path / "j.jsonl"
    p.write_bytes(b'{"t":"begin","txn":"a"}\n{"t":"inte')
    assert [e["t"] for e in journal.read(p)] == ["begin"]
    with journal.Journal(p) as j:
        j.append({"t": "abort", "txn": "a"})
    assert p.read_bytes() == b'{"t":"begin","txn":"a"}\n{"t":"abort","txn":"a"}\n'
    p.write_bytes(b'{"t":"beg')
    journal.Journal(p).close()
    assert p.read_bytes() == b""


def test_open_transaction_is_the_last_one_without_a_marker() -> None:
    entries = [{"t": "begin", "txn": "a"}, {"t": "commit", "txn": "a"},
               {"t": "begin", "txn": "b"}, {"t": "intent", "txn": "b", "seq": 1}]
    tail = journal.open_transaction(entries)
    assert tail is not None and [e["t"] for e in tail] == ["begin", "intent"]
    assert journal.open_transaction([*entries, {"t": "abort", "txn": "b"}]) is None
    assert journal.open_transaction([]) is None


def test_crash_hook_kills_after_the_nth_entry(tmp_path: Path) -> None:
    p = tmp_path / "j.jsonl"
    code = ("import sys; from pathlib import Path; from vbdecl.engine.journal import Journal\n"
            "j = Journal(Path(sys.argv[1]))\n"
            "for i in range(10): j.append({'i': i})\n")
    env = dict(os.environ, VBDECL_TEST_CRASH_AFTER="3")
    out = subprocess.run([sys.executable, "-c", code, str(p)], env=env)
    assert out.returncode == -9
    assert [e["i"] for e in journal.read(p)] == [0, 1, 2]


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    p = tmp_path / "state.json"
    atomic.write_json(p, {"a": 1})
    atomic.write_json(p, {"a": 2})
    assert json.loads(p.read_text()) == {"a": 2}
    assert os.listdir(tmp_path) == ["state.json"]
    assert (p.stat().st_mode & 0o777) == 0o600


def test_a_failed_atomic_write_names_the_file_asked_for_not_its_temp_file(tmp_path: Path) -> None:
    for target in (tmp_path / "missing" / "state.json", tmp_path):
        with pytest.raises(OSError) as exc:
            atomic.write_json(target, {"a": 1})
        assert exc.value.filename == str(target) and exc.value.filename2 is None
        assert ".tmp" not in str(exc.value)
    assert os.listdir(tmp_path) == []      # no temp file left


def test_a_write_removes_the_temp_files_a_killed_writer_left(tmp_path: Path) -> None:
    """A writer SIGKILLed between creating its temp file and renaming it left the file
    for good (a crash review found .nat.json.PID-X.tmp in /run/vbdecl). The next write
    of the same file removes old ones whose writer is gone; a fresh one (a write in
    progress, maybe in another pid namespace), a live writer's, or another file's stays."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)                      # a pid no process has now
    old = time.time() - 2 * atomic.STALE_SECONDS
    stale = tmp_path / f".nat.json.{pid}-0a0b0c0d.tmp"
    fresh = tmp_path / f".nat.json.{pid}-1a1b1c1d.tmp"
    live = tmp_path / f".nat.json.{os.getpid()}-2a2b2c2d.tmp"
    other = tmp_path / f".state.json.{pid}-3a3b3c3d.tmp"
    for path in (stale, fresh, live, other):
        path.write_text("")
    for path in (stale, live, other):
        os.utime(path, (old, old))
    atomic.write_json(tmp_path / "nat.json", {"a": 1})
    assert sorted(os.listdir(tmp_path)) == sorted(["nat.json", fresh.name, live.name, other.name])


def test_corrupt_state_is_a_state_error_naming_the_file(tmp_path: Path) -> None:
    p = tmp_path / "state.json"
    p.write_text("{nope")
    with pytest.raises(StateError) as info:
        atomic.read_json(p)
    assert str(p) in str(info.value) and "hint" in str(info.value)


def test_a_corrupt_state_files_hint_warns_that_moving_it_away_leaves_the_environment(
        tmp_path: Path) -> None:
    """The hint said "move it away to forget that state" (a review): the records of what
    a live environment made are in it, and without them its resources stay on the host."""
    from vbdecl.engine import store

    p = Path(paths.state_file("broken", tmp_path))
    p.parent.mkdir(parents=True)
    p.write_text("{nope")
    with pytest.raises(StateError) as info:
        store.load("broken", tmp_path)
    hint = info.value.hint or ""
    assert str(p) in info.value.message and "restore it from a backup" in hint
    assert "Do not just move it away" in hint and "would stay on the host" in hint
    assert "to forget that state" not in hint


def test_paths_follow_the_override_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VBDECL_STATE_DIR", raising=False)
    assert paths.state_root(tmp_path) == str(tmp_path)
    assert paths.runtime_root(tmp_path) == str(tmp_path / "run")
    monkeypatch.setenv("VBDECL_STATE_DIR", str(tmp_path / "env"))
    assert paths.state_root() == str(tmp_path / "env")
    assert paths.runtime_root() == str(tmp_path / "env" / "run")
    assert paths.state_root(tmp_path / "flag") == str(tmp_path / "flag")
    monkeypatch.delenv("VBDECL_STATE_DIR")
    if os.geteuid() == 0:
        assert paths.state_root() == "/var/lib/vbdecl"
        assert paths.runtime_root() == "/run/vbdecl"
    assert paths.env_dir("web", tmp_path) == str(tmp_path / "envs" / "web")
    assert paths.instance_runtime_dir("vb-12345678", tmp_path) == str(tmp_path / "run" / "vb-12345678")


@pytest.mark.parametrize("bad", ["../x", "a/b", "", "Web", "-x", "x-", "x" * 64, "a b", "\u00e9"])
def test_env_names_cannot_escape(bad: str, tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        paths.env_dir(bad, tmp_path)


def test_fault_spec_parsing() -> None:
    f = Faults("mount[/a], net.veth:revert ,cgroup.memory")
    assert f.apply == {"mount[/a]", "cgroup.memory"} and f.revert == {"net.veth"}
    assert not Faults("")
    with pytest.raises(ActionError) as info:
        f.check_apply("mount[/a]")
    assert info.value.action == "mount[/a]"
    f.check_apply("net.veth")  # only its revert fails
    with pytest.raises(ActionError):
        f.check_revert("net.veth")


def test_fault_is_inert_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VBDECL_FAULT", raising=False)
    assert not Faults()
    monkeypatch.setenv("VBDECL_FAULT", "x:revert")
    assert Faults().revert == {"x"}


def test_lock_names_its_holder_and_times_out(tmp_path: Path) -> None:
    p = tmp_path / "lock"
    held = lock.acquire(p, command="vbdecl apply web.yaml")
    try:
        info = lock.holder(p)
        assert info is not None and info["pid"] == os.getpid() and info["command"] == "vbdecl apply web.yaml"
        code = ("import sys; from pathlib import Path; from vbdecl.engine import lock\n"
                "lock.acquire(Path(sys.argv[1]), timeout=float(sys.argv[2]))\n")
        for timeout in ("0", "0.3"):
            out = subprocess.run([sys.executable, "-c", code, str(p), timeout],
                                 capture_output=True, text=True)
            assert out.returncode == 1
            assert "LockedError" in out.stderr and f"pid {os.getpid()}" in out.stderr
    finally:
        held.release()
    assert lock.holder(p) is None
    with lock.acquire(p, timeout=0):
        pass


def test_lock_error_in_process(tmp_path: Path) -> None:
    p = tmp_path / "lock"
    with lock.acquire(p):
        # flock locks are per open file description: a second open conflicts too
        with pytest.raises(LockedError) as info:
            lock.acquire(p, what="environment 'web'")
        assert "environment 'web' is locked by pid" in str(info.value)


def test_a_holder_that_has_not_written_its_record_yet_is_still_named(tmp_path: Path) -> None:
    """The holder writes its pid right after it takes the lock; a contender that looks
    in between waits a moment for it instead of saying "another vbdecl process"."""
    import fcntl
    import threading

    p = tmp_path / "lock"
    fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)      # taken, record not written yet
    record = f'{{"pid": {os.getpid()}, "command": "vbdecl apply web.yaml", "since": 0}}'.encode()
    writer = threading.Timer(0.03, lambda: os.pwrite(fd, record, 0))
    writer.start()
    try:
        with pytest.raises(LockedError) as info:
            lock.acquire(p, what="environment 'web'")
        assert f"environment 'web' is locked by pid {os.getpid()} (vbdecl apply web.yaml)" in str(info.value)
    finally:
        writer.join()
        os.close(fd)


def test_a_record_of_a_process_that_no_longer_holds_the_lock_is_not_named(tmp_path: Path) -> None:
    """A process that is not vbdecl held the lock; the file still had the record of a
    vbdecl destroy long gone, and the error named that one (a review). Only the kernel
    (/proc/locks) knows who holds it."""
    import fcntl
    import subprocess
    import sys

    p = tmp_path / "lock"
    p.write_text('{"pid": 3590, "command": "vbdecl destroy -y rms", "since": 0}')
    code = "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR); " \
           "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()"
    other = subprocess.Popen([sys.executable, "-c", code, str(p)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout is not None and other.stdout.readline() == "held\n"
        with pytest.raises(LockedError) as info:
            lock.acquire(p, what="environment 'rms'")
        said = str(info.value)
        assert "3590" not in said and "destroy" not in said, said
        assert f"environment 'rms' is locked by another process (pid {other.pid}: " in said
        # so do ls and status (a day-2 review's `ls --json` named the record's pid)
        held_by = lock.holder(p)
        assert held_by is not None and held_by["pid"] == other.pid and "flock" in str(held_by["command"])
    finally:
        other.communicate("")
    # a holder that cannot be found (another pid namespace, no /proc/locks) is not named
    fd = os.open(p, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr("vbdecl.sys.flock.holders", lambda fd: set())
            with pytest.raises(LockedError, match=r"locked by another process\n"):
                lock.acquire(p, what="environment 'rms'")
    finally:
        os.close(fd)


@pytest.mark.parametrize("good", ["a", "web", "web-1", "0", "a" * 63, "a-b-c"])
def test_valid_names(good: str, tmp_path: Path) -> None:
    assert paths.valid_name(good)
    assert paths.env_dir(good, tmp_path).endswith("/" + good)

def test_a_lock_whose_directory_is_removed_under_it_is_made_again_or_given_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A forgotten first apply removes its environment's directory; a waiter makes it
    again. One whose file cannot be made in it however often it tries (its directory
    goes each time) gives up a second after its deadline, never spins for good."""
    p = tmp_path / "env" / "lock"
    real_open, removals = os.open, [2]

    def vanishing(path: object, *args: object) -> int:
        if path == p and removals[0]:      # removed twice between mkdir and open: a race
            removals[0] -= 1
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return real_open(path, *args)      # type: ignore[arg-type]

    monkeypatch.setattr(lock.os, "open", vanishing)
    with lock.acquire(p, timeout=0):
        assert p.exists()
    removals[0] = 10**9                    # it never can be made
    t0 = time.monotonic()
    with pytest.raises(FileNotFoundError):
        lock.acquire(p, timeout=0.2)
    assert 1.0 <= time.monotonic() - t0 < 3.0


def test_a_shared_lock_held_too_long_is_an_error_naming_its_holder(tmp_path: Path) -> None:
    """A concurrency review: the state root's global.lock and /run/vbdecl/nat.lock were
    waited on forever (a vbdecl stopped with ^Z while it held one hung every later apply,
    destroy and bridged run without a word). They are held for milliseconds: after
    WAIT_SECONDS the wait ends, naming the holder; the lock is had as soon as it is free."""
    import fcntl
    import time

    from vbdecl.errors import LockedError
    from vbdecl.sys import flock

    path = tmp_path / "global.lock"
    held = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(held, fcntl.LOCK_EX)
    started = time.monotonic()
    with pytest.raises(LockedError) as info:
        flock.lock(path, timeout=0.2)
    assert 0.2 <= time.monotonic() - started < 2
    assert info.value.message == f"{path} is still locked after 0.2 s, by pid {os.getpid()}"
    assert "stopped (Ctrl-Z)" in (info.value.hint or "")
    os.close(held)
    os.close(flock.lock(path, timeout=0.2))


def test_an_entry_written_in_part_is_cut_before_the_next(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The session's review: a disk that filled up during a write left part of an entry,
    the next entry went into its line, and read() dropped both."""
    import errno

    from vbdecl.engine import journal as jmod

    path = tmp_path / "journal.jsonl"
    j = jmod.Journal(path)
    j.append({"t": "begin", "txn": 1})
    real = os.write

    def half_then_full(fd: int, data: memoryview) -> int:
        monkeypatch.setattr(jmod.os, "write", real)
        real(fd, bytes(data)[:7])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(jmod.os, "write", half_then_full)
    with pytest.raises(jmod.JournalError, match=r"No space left on device \(ENOSPC\)"):
        j.append({"t": "intent", "txn": 1, "seq": 1})
    j.append({"t": "intent", "txn": 1, "seq": 2})
    j.close()
    assert [e.get("seq") for e in jmod.read(path)] == [None, 2]
