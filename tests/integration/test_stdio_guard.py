"""The caller's stdio, as root: a host object the sandbox could change for good.

A security review, as root without a user namespace (the default), made the
caller's terminal world-readable from inside (``chmod 666 /proc/self/fd/0``, and it
stayed so after the run). ``vbdecl run`` and ``vbdecl exec`` give the process a
terminal or other device through a read-only mount of it (the same object: it reads
and writes as ever), and a live environment's process its /dev/null so; a file is
handed on as it is (its position is the caller's).
"""

from __future__ import annotations

import os
import pty
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from testmanifests import head

VBDECL = str(Path(sys.executable).parent / "vbdecl")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the guard needs root (it clones mounts)")

MANIFEST = head("{name}") + """\
    - {{type: proc, target: /proc}}
    - {{type: dev, target: /dev}}
  process:
    command: {command}
"""

def _manifest(tmp_path: Path, name: str, command: str = '["/bin/sleep", "600"]') -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(MANIFEST.format(name=name, command=command))
    return str(path)


def _env(tmp_path: Path) -> dict[str, str]:
    return dict(os.environ, VBDECL_STATE_DIR=str(tmp_path / "state"), VBDECL_CACHE_DIR=str(tmp_path / "cache"))


def test_a_file_is_handed_on_as_it_is_sharing_the_callers_position(tmp_path: Path) -> None:
    """A file is not reopened: the process reads on from where the caller's script got
    to, and the script from where the process left off (a review's `while read` loop
    read its lines twice when it was). An O_PATH stdin stays one (reading fails)."""
    given = tmp_path / "input.txt"
    given.write_text("line1\nline2\nline3\n")
    script = f'{{ read -r first; "$@"; cat; }} < {given}'
    r = subprocess.run(["/bin/sh", "-c", script, "sh", VBDECL, "run", _manifest(tmp_path, "guardfile"), "--",
                        "/bin/sh", "-c", "read -r second; echo inside: $second"],
                       capture_output=True, text=True, env=_env(tmp_path), timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "inside: line2\nline3\n", r.stdout
    path_only = os.open(given, os.O_PATH)
    try:
        r = subprocess.run([VBDECL, "run", _manifest(tmp_path, "guardpath"), "--", "/bin/sh", "-c",
                            "cat || echo unreadable"], stdin=path_only, capture_output=True, text=True,
                           env=_env(tmp_path), timeout=60)
    finally:
        os.close(path_only)
    assert "unreadable" in r.stdout, r.stdout + r.stderr


def _through_a_terminal(argv: list[str], env: dict[str, str]) -> tuple[str, os.stat_result, os.stat_result]:
    """Run ``argv`` on a terminal of its own; what it printed, and the terminal's
    status before and after."""
    leader, follower = pty.openpty()
    try:
        path = os.ttyname(follower)
        before = os.stat(path)
        r = subprocess.run(argv, stdin=follower, stdout=follower, stderr=follower, env=env, timeout=60)
        out = b""
        os.set_blocking(leader, False)
        while True:
            try:
                chunk = os.read(leader, 65536)
            except (BlockingIOError, OSError):
                break
            if not chunk:
                break
            out += chunk
        assert r.returncode == 0, out
        return out.decode(errors="replace"), before, os.stat(path)
    finally:
        os.close(leader)
        os.close(follower)


def test_run_and_exec_cannot_change_the_callers_terminal(tmp_path: Path) -> None:
    env = _env(tmp_path)
    tamper = ["/bin/sh", "-c", "chmod 666 /proc/self/fd/0 || echo chmod refused; "
              "chown 65534 /proc/self/fd/0 || echo chown refused; test -t 0 && echo a terminal"]
    out, before, after = _through_a_terminal([VBDECL, "run", _manifest(tmp_path, "guardtty"), "--", *tamper], env)
    assert "chmod refused" in out and "chown refused" in out and "a terminal" in out, out
    assert (stat.S_IMODE(after.st_mode), after.st_uid) == (stat.S_IMODE(before.st_mode), before.st_uid)
    m = _manifest(tmp_path, "guardlive")
    up = subprocess.run([VBDECL, "apply", m, "-y"], capture_output=True, text=True, env=env, timeout=60)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        out, before, after = _through_a_terminal([VBDECL, "exec", "guardlive", "--", *tamper], env)
        assert "chmod refused" in out and "chown refused" in out and "a terminal" in out, out
        assert (stat.S_IMODE(after.st_mode), after.st_uid) == (stat.S_IMODE(before.st_mode), before.st_uid)
    finally:
        subprocess.run([VBDECL, "destroy", "guardlive", "-y"], capture_output=True, env=env, timeout=60)


def test_a_live_process_cannot_change_the_hosts_dev_null(tmp_path: Path) -> None:
    env = _env(tmp_path)
    before = os.stat("/dev/null")
    # (chmod to its own mode 666: were the guard gone, only its time would change)
    m = _manifest(tmp_path, "guardnull", '["/bin/sh", "-c", "touch /proc/self/fd/0 || echo touch refused; '
                                         'chmod 666 /proc/self/fd/0 || echo chmod refused; exec sleep 600"]')
    up = subprocess.run([VBDECL, "apply", m, "-y"], capture_output=True, text=True, env=env, timeout=60)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        deadline = time.monotonic() + 10
        while True:
            log = subprocess.run([VBDECL, "logs", "guardnull"], capture_output=True, text=True, env=env).stdout
            if "chmod refused" in log or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert "touch refused" in log and "chmod refused" in log, log
    finally:
        subprocess.run([VBDECL, "destroy", "guardnull", "-y"], capture_output=True, env=env, timeout=60)
    after = os.stat("/dev/null")
    assert (after.st_mode, after.st_mtime_ns) == (before.st_mode, before.st_mtime_ns)


@pytest.mark.skipif(not os.path.exists("/dev/kmsg"), reason="no /dev/kmsg")
def test_a_device_with_a_position_of_its_own_is_handed_on_as_it_is(tmp_path: Path) -> None:
    """A review: /dev/kmsg keeps a read position per open, and reopened, the process read
    the log from its start where the caller had read it to its end."""
    kmsg = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    try:
        last = -1
        while True:     # read to the end (the last record's sequence number)
            try:
                last = int(os.read(kmsg, 8192).split(b",")[1])
            except BlockingIOError:
                break
            except OSError:     # (EPIPE: records overwritten meanwhile; read on)
                continue
        r = subprocess.run([VBDECL, "run", _manifest(tmp_path, "guardkmsg"), "--", "/usr/bin/python3", "-c",
                            "import os\ntry:\n    print(int(os.read(0, 8192).split(b',')[1]))\n"
                            "except BlockingIOError:\n    print('nothing new')"],
                           stdin=kmsg, capture_output=True, text=True, env=_env(tmp_path), timeout=60)
    finally:
        os.close(kmsg)
    assert r.returncode == 0, r.stderr
    # nothing, or a record logged since (a test beside this one may log one)
    assert r.stdout == "nothing new\n" or int(r.stdout) > last, (r.stdout, last)
