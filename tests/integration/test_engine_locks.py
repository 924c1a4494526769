"""Locks: two applies of one environment (exactly one wins, the other fails
within a second naming the holder, or waits with --lock-timeout), ten
environments applied in parallel with no shared name colliding."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import testops

from vbdecl.engine import lock, paths, store
from vbdecl.engine.executor import Engine
from vbdecl.errors import LockedError

testops.register()


def _spawn(sd: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VBDECL_") or k == "VBDECL_CACHE_DIR"}
    return subprocess.Popen([sys.executable, testops.__file__, "--state-dir", str(sd), *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _slow_plan(name: str, root: Path, seconds: float) -> dict[str, object]:
    slow = testops.action("slow", "test.slow", {"path": str(root / name / "slow"), "content": "z",
                                                "seconds": seconds}, ["dir[/]"])
    return testops.make_plan(name, root, files=3, mounts=0, extra=[slow])


def _wait_for_holder(sd: Path, name: str, proc: subprocess.Popen[str]) -> dict[str, object]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        h = lock.holder(paths.lock_file(name, sd))
        if h:
            return h
        time.sleep(0.02)
    raise AssertionError("the first apply never took the lock")


def test_second_apply_fails_fast_naming_the_holder(tmp_path: Path) -> None:
    root, sd = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    p = testops.write_plan(tmp_path / "p.json", _slow_plan("web", root, 3.0))
    first = _spawn(sd, "apply", str(p), "-y")
    try:
        holder = _wait_for_holder(sd, "web", first)
        assert holder["pid"] == first.pid
        start = time.monotonic()
        second = _spawn(sd, "apply", str(p), "-y")
        _, err = second.communicate(timeout=30)
        elapsed = time.monotonic() - start
        assert second.returncode == 1
        assert elapsed < 1.5, elapsed          # includes Python start-up
        assert f"locked by pid {first.pid}" in err and "apply" in err and "since" in err, err
        assert "--lock-timeout" in err
    finally:
        _out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert store.load("web", sd)["revision"] == 1
    Engine(sd).destroy("web")
    assert testops.host_tree(root) == {}


def test_lock_timeout_waits_for_the_holder(tmp_path: Path) -> None:
    root, sd = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    p = testops.write_plan(tmp_path / "p.json", _slow_plan("web", root, 1.0))
    first = _spawn(sd, "apply", str(p), "-y")
    try:
        _wait_for_holder(sd, "web", first)
        second = _spawn(sd, "destroy", "web", "-y", "--lock-timeout", "30")
        _, err = second.communicate(timeout=60)
        assert second.returncode == 0, err
    finally:
        first.communicate(timeout=60)
    assert first.returncode == 0
    assert testops.host_tree(root) == {}
    assert store.load("web", sd) is None


def test_ten_environments_in_parallel(tmp_path: Path) -> None:
    root, sd = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    names = [f"env{i}" for i in range(10)]
    procs = []
    for n in names:
        p = testops.write_plan(tmp_path / f"{n}.json", testops.make_plan(n, root, files=5, mounts=0))
        procs.append(_spawn(sd, "--json", "apply", str(p), "-y"))
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        results.append(json.loads(out.splitlines()[-1]))
    instances = {store.load(n, sd)["instance"] for n in names}
    assert len(instances) == 10
    for n in names:
        assert store.load(n, sd)["revision"] == 1
    for proc in [_spawn(sd, "destroy", n, "-y") for n in names]:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    assert testops.host_tree(root) == {}


def test_global_lock_serialises(tmp_path: Path) -> None:
    with lock.global_lock(tmp_path):
        code = ("import sys; from vbdecl.engine.lock import global_lock\n"
                "from vbdecl.errors import LockedError\n"
                "try:\n    global_lock(sys.argv[1], timeout=0.2).__enter__()\n"
                "except LockedError as e:\n    print(e); sys.exit(3)\n")
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
        assert out.returncode == 3, out
        assert "global allocation lock is locked by pid" in out.stdout


def test_recover_of_every_environment_skips_a_busy_one(tmp_path: Path) -> None:
    """Another command at work on one environment finishes its own transaction:
    `recover` without a name goes on with the others and succeeds, and says so on
    stderr (a sweep found it failing, with the error on stdout)."""
    root, sd = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    for name in ("web", "db"):
        Engine(sd).apply(testops.make_plan(name, root, files=1, mounts=0))
    held = lock.env_lock("db", str(sd), timeout=0, command="test")
    try:
        out = _spawn(sd, "recover")
        stdout, stderr = out.communicate(timeout=60)
    finally:
        held.release()
    assert out.returncode == 0, (stdout, stderr)
    assert "db: skipped, the environment" in stderr and "locked by pid" in stderr, stderr
    assert "locked" not in stdout and "nothing to recover" not in stdout, stdout
    for name in ("web", "db"):
        Engine(sd).destroy(name)


def test_forgetting_a_new_environment_hands_its_lock_on_to_one_waiter(tmp_path: Path) -> None:
    """A review: a failed first apply removed the environment's directory, its held lock
    file with it. A command waiting with --lock-timeout died on the missing directory
    (FileNotFoundError), and one that had taken a new lock file in the gap had it
    removed by the forgetting command's second clean-up, so a third took the lock too."""
    import threading

    sd = tmp_path / "state"
    name = "lockgone"
    held = lock.env_lock(name, str(sd))
    Path(paths.env_dir(name, str(sd)), "journal.jsonl").write_text("")
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(lock.env_lock(name, str(sd), timeout=10)))
    waiter.start()
    time.sleep(0.2)                 # polling on the held file
    store.remove_env_dir(name, held.fd, str(sd))   # (the waiter may take a new lock file at once)
    held.release()
    waiter.join(15)
    assert len(got) == 1 and isinstance(got[0], lock.Lock), got
    second = got[0]
    assert os.fstat(second.fd).st_ino == os.stat(paths.lock_file(name, str(sd))).st_ino
    # the old holder's later clean-up leaves the new holder's lock and files alone
    Path(paths.env_dir(name, str(sd)), "journal.jsonl").write_text("theirs")
    stale = os.open(tmp_path / "stale", os.O_RDWR | os.O_CREAT)
    store.remove_env_dir(name, stale, str(sd))
    os.close(stale)
    assert Path(paths.env_dir(name, str(sd)), "journal.jsonl").read_text() == "theirs"
    try:
        lock.env_lock(name, str(sd))
        raise AssertionError("a second holder took the lock")
    except LockedError:
        pass
    second.release()


def test_a_recovered_first_apply_keeps_the_lock_for_the_command_after_it(tmp_path: Path) -> None:
    """A review of the fix above: an apply killed in a first apply's step was rolled back
    by the next apply's recovery, which forgot the environment, lock file and all, and
    went on applying without a lock; when that apply failed too, an environment of a
    journal alone was left, listed by ls. The lock file now stays while its session
    goes on; the directory goes when the session ends with nothing committed."""
    from vbdecl.engine.faults import Faults
    from vbdecl.errors import ActionError

    sd, root = tmp_path / "state", tmp_path / "root"
    root.mkdir()
    plan = testops.make_plan("web", root, files=2, mounts=0)
    path = testops.write_plan(tmp_path / "p.json", plan)

    def killed_first_apply() -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VBDECL_") or k == "VBDECL_CACHE_DIR"}
        env["VBDECL_TEST_CRASH_BEFORE_DONE"] = "file[/f1]"
        out = subprocess.run([sys.executable, testops.__file__, "--state-dir", str(sd), "apply", str(path), "-y"],
                             env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == -9, out

    killed_first_apply()
    engine = Engine(sd)
    with engine.session("web", then="apply") as s:
        assert s.recovered == "rolled back" and s.state is None
        held = os.stat(paths.lock_file("web", str(sd))).st_ino
        assert s.lock is not None and os.fstat(s.lock.fd).st_ino == held
        try:
            lock.env_lock("web", str(sd))
            raise AssertionError("another command took the lock of a session at work")
        except LockedError:
            pass
    assert not (sd / "envs" / "web").exists()
    killed_first_apply()
    try:
        Engine(sd, faults=Faults("file[/f0]")).apply(plan)
        raise AssertionError("the injected fault did not fail the apply")
    except ActionError:
        pass
    assert not (sd / "envs" / "web").exists() and store.list_envs(str(sd)) == []
    assert testops.host_tree(root) == {}
