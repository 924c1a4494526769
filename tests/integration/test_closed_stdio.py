"""A standard fd the caller closed (``vbdecl exec ENV -- cmd >&-``): the command
finds it closed, as bubblewrap leaves it, and no file of vbdecl's takes its number
meanwhile (the first one vbdecl opened landed there: the environment's init
directory, a pipe, the lock), nor do vbdecl's own messages for a closed stderr
end up on stdout.

vbdecl runs as ``python -m vbdecl`` with this tree on PYTHONPATH (the console
scripts next to sys.executable may belong to another checkout), so the pid
Popen returns is vbdecl's own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from testmanifests import head

REPO = Path(__file__).resolve().parents[2]
CLOSE = {0: "<&-", 1: ">&-", 2: "2>&-"}

# The command: its fds 0-2 into OUT, then it waits for GO (while the test looks at vbdecl's).
PAYLOAD = """\
import json, os, sys, time
out, go = sys.argv[1], sys.argv[2]
fds = {}
for fd in range(3):
    try:
        fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        fds[fd] = None
with open(out + ".tmp", "w") as f:
    json.dump(fds, f)
os.rename(out + ".tmp", out)
for _ in range(3000):
    if os.path.exists(go):
        break
    time.sleep(0.01)
"""


def _env(tmp_path: Path) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO), VBDECL_STATE_DIR=str(tmp_path / "state"),
                VBDECL_CACHE_DIR=str(tmp_path / "cache"))


def _vbdecl(env: dict[str, str], *args: str, closed: int | None = None,
            **kw: object) -> subprocess.Popen[str]:
    """vbdecl ARGS started by a shell that closed fd ``closed`` first."""
    redirect = CLOSE[closed] if closed is not None else ""
    return subprocess.Popen(["/bin/sh", "-c", f'exec "$@" {redirect}', "sh", sys.executable, "-m", "vbdecl",
                             *args], env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]


def _out(tmp_path: Path) -> Path:
    """Bound at /out (not tmp_path: the state under it pins the environment's mount namespace)."""
    (tmp_path / "out").mkdir(exist_ok=True)
    return tmp_path / "out"


def _manifest(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(head(name, template=False)
                    + "    - {type: proc, target: /proc}\n"
                    + "    - {type: dev, target: /dev}\n"
                    + f"    - {{type: bind, source: {_out(tmp_path)}, target: /out}}\n"
                    + "  process:\n    command: [/bin/sleep, '600']\n")
    return path


@pytest.fixture
def live(tmp_path: Path) -> Iterator[str]:
    """A live environment (its name) with tmp_path/out bound at /out."""
    name = "h3fd-" + os.urandom(3).hex()
    env = _env(tmp_path)
    r = subprocess.run([sys.executable, "-m", "vbdecl", "apply", "-y", str(_manifest(tmp_path, name))],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    try:
        yield name
    finally:
        r = subprocess.run([sys.executable, "-m", "vbdecl", "destroy", "-y", name], env=env,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr


def _command_line(kind: str, tmp_path: Path, name: str, argv: list[str]) -> list[str]:
    if kind == "run":
        return ["run", str(_manifest(tmp_path, name)), "--", *argv]
    if kind == "exec":
        return ["exec", name, "--", *argv]
    return ["vb", "--ro-bind", "/", "/", "--bind", str(_out(tmp_path)), str(_out(tmp_path)), "--proc", "/proc",
            "--dev", "/dev", "--unshare-pid", *argv]


def _check_closed_fd(kind: str, tmp_path: Path, name: str) -> None:
    env = _env(tmp_path)
    for fd in (0, 1, 2):
        out, go = _out(tmp_path) / f"fds-{fd}.json", _out(tmp_path) / f"go-{fd}"
        inside = _out(tmp_path) if kind == "vb" else Path("/out")   # (vb binds it at its own path)
        proc = _vbdecl(env, *_command_line(kind, tmp_path, name, [
            "/usr/bin/python3", "-I", "-c", PAYLOAD, str(inside / out.name), str(inside / go.name)]), closed=fd)
        try:
            deadline = time.monotonic() + 30
            while not out.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert out.exists(), f"fd {fd} closed: the command did not start: {proc.communicate()}"
            try:     # what vbdecl itself has at the number while its command runs
                held: str | None = os.readlink(f"/proc/{proc.pid}/fd/{fd}")
            except FileNotFoundError:
                held = None
        finally:
            go.touch()
            stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, (fd, stdout, stderr)
        seen = {int(k): v for k, v in json.loads(out.read_text()).items()}
        assert seen[fd] is None, f"{kind} {CLOSE[fd]}: the command got {seen[fd]} as fd {fd}"
        assert all(seen[other] is not None for other in (0, 1, 2) if other != fd), seen
        assert held in (None, "/dev/null"), f"{kind} {CLOSE[fd]}: vbdecl's fd {fd} is {held}"


def test_run_leaves_a_closed_stdio_fd_closed_and_takes_none(tmp_path: Path) -> None:
    _check_closed_fd("run", tmp_path, "h3fd-" + os.urandom(3).hex())


def test_exec_leaves_a_closed_stdio_fd_closed_and_takes_none(tmp_path: Path, live: str) -> None:
    _check_closed_fd("exec", tmp_path, live)


def test_vb_leaves_a_closed_stdio_fd_closed_and_takes_none(tmp_path: Path) -> None:
    """As bubblewrap does: the command inherits the closed fd closed."""
    _check_closed_fd("vb", tmp_path, "")


@pytest.mark.parametrize("kind", ["run", "exec", "vb"])
def test_a_message_for_a_closed_stderr_is_not_written_to_stdout(tmp_path: Path, kind: str,
                                                               request: pytest.FixtureRequest) -> None:
    """Python has sys.stderr None then, and print(file=None) writes to stdout: the
    command's output got vbdecl's "command not found" (bubblewrap says nothing)."""
    name = request.getfixturevalue("live") if kind == "exec" else "h3fd-" + os.urandom(3).hex()
    proc = _vbdecl(_env(tmp_path), *_command_line(kind, tmp_path, name, ["/nonexistent"]), closed=2)
    stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == (1 if kind == "vb" else 127)
    assert stdout == ""


def test_a_closed_events_fd_is_refused_before_the_lock_file_can_take_its_number(tmp_path: Path) -> None:
    """`--events-fd 3 3>&-` with status.lock_file: the lock file opened first took fd 3,
    the check passed, and the events went into the user's lock file."""
    lock = tmp_path / "lock"
    manifest = tmp_path / "env.yaml"
    manifest.write_text(head("evlock", template=False)
                        + f"  status:\n    lock_file: {lock}\n  process:\n    command: [/bin/true]\n")
    r = subprocess.run(["/bin/sh", "-c", 'exec "$@" 3>&-', "sh", sys.executable, "-m", "vbdecl", "run",
                        "--events-fd", "3", str(manifest)], env=_env(tmp_path), capture_output=True,
                       text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 125, r.stderr
    assert "events fd 3 is not open" in r.stderr
    assert not lock.exists() or lock.read_text() == ""


def test_a_closed_stderr_takes_no_other_fd(tmp_path: Path) -> None:
    """vbdecl's own messages to a closed stderr go to /dev/null at fd 2, not at a new fd
    that an --events-fd naming a closed number would then find open."""
    manifest = tmp_path / "env.yaml"
    manifest.write_text(head("evnull", template=False) + "  process:\n    command: [/bin/true]\n")
    r = subprocess.run(["/bin/sh", "-c", 'exec "$@" 2>&- 3>&-', "sh", sys.executable, "-m", "vbdecl", "run",
                        "--events-fd", "3", str(manifest)], env=_env(tmp_path), capture_output=True,
                       text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 125
    assert r.stdout == ""
