"""``vbdecl logs`` shows the current instance's output: an environment destroyed and
applied again starts a new log (the last instance's stays as ``process.log.1``),
and a process that starts again in the same instance appends after a marker line.

vbdecl runs as ``python -m vbdecl`` with this tree on PYTHONPATH.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from testmanifests import head

REPO = Path(__file__).resolve().parents[2]
MANIFEST = head("{name}") + """\
  process:
    command: ["/bin/sh", "-c", "echo {word}; exec sleep 600"]
"""


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vbdecl", *args], env=env, capture_output=True,
                          text=True, timeout=60)


def _logs_when(env: dict[str, str], name: str, last: str) -> str:
    """The log, once its last line is ``last`` (the process writes it after apply)."""
    deadline = time.monotonic() + 20
    while True:
        r = _cli(env, "logs", name)
        if r.stdout.endswith(f"{last}\n") or time.monotonic() > deadline:
            return r.stdout


def test_a_new_instance_starts_a_new_log_and_a_restart_appends(tmp_path: Path) -> None:
    name = "h3log-" + os.urandom(3).hex()
    env = dict(os.environ, PYTHONPATH=str(REPO), VBDECL_STATE_DIR=str(tmp_path / "state"),
               VBDECL_CACHE_DIR=str(tmp_path / "cache"))
    manifest = tmp_path / "m.yaml"
    logs = tmp_path / "state" / "envs" / name / "logs"

    def apply(word: str) -> None:
        manifest.write_text(MANIFEST.format(name=name, word=word))
        r = _cli(env, "apply", "-y", str(manifest))
        assert r.returncode == 0, r.stderr

    apply("first")
    try:
        assert _logs_when(env, name, "first") == "first\n"
        apply("second")       # the process again, in the same instance
        lines = _logs_when(env, name, "second").splitlines()
        assert lines[0] == "first" and lines[-1] == "second", lines
        assert len(lines) == 3 and lines[1].startswith("--- vbdecl: the process started again ("), lines
        r = _cli(env, "destroy", "-y", name)
        assert r.returncode == 0, r.stderr
        # the log outlives the destroy (logs says whose it is)
        r = _cli(env, "logs", name)
        assert r.stdout.endswith("second\n") and "destroyed" in r.stderr
        apply("third")        # a new instance: a new log
        assert _logs_when(env, name, "third") == "third\n"
        assert (logs / "process.log.1").read_text().splitlines()[-1] == "second"
    finally:
        if (logs.parent / "state.json").exists():
            r = _cli(env, "destroy", "-y", name)
            assert r.returncode == 0, r.stderr


def test_a_follower_goes_on_across_a_replacement_of_the_environment(tmp_path: Path) -> None:
    """A day-2 review: `logs -f` ended, exit 0 and no word, when an apply replaced the
    environment (a namespace change), while the new one ran on. It follows the new
    instance's log, and ends with the environment's destroy."""
    name = "h3fol-" + os.urandom(3).hex()
    env = dict(os.environ, PYTHONPATH=str(REPO), VBDECL_STATE_DIR=str(tmp_path / "state"),
               VBDECL_CACHE_DIR=str(tmp_path / "cache"))
    manifest = tmp_path / "m.yaml"

    def apply(word: str, ipc: bool) -> None:
        manifest.write_text(MANIFEST.format(name=name, word=word) + f"  namespaces: {{ipc: {str(ipc).lower()}}}\n")
        r = _cli(env, "apply", "-y", str(manifest))
        assert r.returncode == 0, r.stderr

    apply("first", True)
    follower = None
    try:
        assert _logs_when(env, name, "first") == "first\n"
        follower = subprocess.Popen([sys.executable, "-m", "vbdecl", "logs", "-f", name], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)
        apply("second", False)          # -/+ env: a new instance
        _logs_when(env, name, "second")
        time.sleep(0.5)                 # (the follower polls every 0.2 s)
        assert follower.poll() is None, follower.communicate()
        # the window of a replacement, held open: the process ends while a command holds
        # the environment's lock, and the follower waits for that command to finish
        state = json.loads((tmp_path / "state" / "envs" / name / "state.json").read_text())
        pid = state["resources"]["process"]["record"]["pid"]
        fd = os.open(tmp_path / "state" / "envs" / name / "lock", os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.kill(pid, signal.SIGKILL)
            time.sleep(1)
            assert follower.poll() is None, follower.communicate()
        finally:
            os.close(fd)
        out, err = follower.communicate(timeout=20)     # then it ends: the process did
        assert follower.returncode == 0, err
        assert out.splitlines()[0] == "first" and out.splitlines()[-1] == "second", out
    finally:
        if follower is not None and follower.poll() is None:
            follower.kill()
            follower.wait()
        if (tmp_path / "state" / "envs" / name / "state.json").exists():
            _cli(env, "destroy", "-y", name)


def test_a_log_past_its_limit_is_moved_aside_and_the_process_goes_on(tmp_path: Path) -> None:
    """A day-2 review: a chatty process's log grew without end (178 MB in 10 s), into the
    state directory's disk. Past VBDECL_LOG_MAX_BYTES (64 MiB by default) the supervisor
    copies it over process.log.1 and empties it in place, with a line that says so;
    the process writes on, and what it left running too."""
    name = "h3cap-" + os.urandom(3).hex()
    env = dict(os.environ, PYTHONPATH=str(REPO), VBDECL_STATE_DIR=str(tmp_path / "state"),
               VBDECL_CACHE_DIR=str(tmp_path / "cache"), VBDECL_LOG_MAX_BYTES="100000")
    manifest = tmp_path / "m.yaml"
    # 200 lines of 1 KB, then one line a second: over the limit at once, then writing on
    line = "x" * 1000
    script = (f"i=0; while [ $i -lt 200 ]; do echo {line}; i=$((i+1)); done; "
              "for i in 1 2 3; do echo tick; sleep 1; done; exit 7")
    manifest.write_text(head(name, template=False) + f'  process:\n    command: ["/bin/sh", "-c", "{script}"]\n')
    logs = tmp_path / "state" / "envs" / name / "logs"
    r = _cli(env, "apply", "-y", str(manifest))
    assert r.returncode == 0, r.stderr
    try:
        deadline = time.monotonic() + 20
        while not (logs / "process.log.1").exists() or (logs / "process.log.1").stat().st_size == 0:
            assert time.monotonic() < deadline, sorted(p.name for p in logs.iterdir())
            time.sleep(0.1)
        old = (logs / "process.log.1").read_text()
        assert old.count(line) >= 90 and len(old) == 100000, len(old)     # (the last 100,000 bytes)
        deadline = time.monotonic() + 20
        while "tick" not in (now := (logs / "process.log").read_text()):
            assert time.monotonic() < deadline, now[:300]
            time.sleep(0.1)
        assert now.startswith("--- vbdecl: the log reached "), now[:300]
        assert "its last part is in process.log.1 ---" in now.splitlines()[0]
        assert len(now) < 100000 + 2 * len(line), len(now)
        # the supervisor, confined, still records how the process ended
        deadline = time.monotonic() + 20
        while "exited with code 7" not in (r := _cli(env, "status", name)).stdout:
            assert time.monotonic() < deadline, r.stdout
            time.sleep(0.2)
        r = _cli(env, "logs", name)
        assert r.returncode == 0 and r.stdout.rstrip().endswith("tick"), r.stdout[-300:]
    finally:
        r = _cli(env, "destroy", "-y", name)
        assert r.returncode == 0, r.stderr
