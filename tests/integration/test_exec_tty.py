"""``vbdecl exec -t``: the command gets a terminal of the environment's own, relayed
to the caller's, which the tests give it as a pseudo-terminal of their own."""

from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from testmanifests import head

VBDECL = str(Path(sys.executable).with_name("vbdecl"))


def _cli(state: Path, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, VBDECL_CACHE_DIR=str(state.parent / "cache"))
    return subprocess.run([VBDECL, "--state-dir", str(state), *args], capture_output=True, text=True,
                          env=env, timeout=60, **kw)  # type: ignore[call-overload, no-any-return]


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A live environment with /proc and /dev (its own devpts), running sleep."""
    name = "tty" + os.urandom(3).hex()
    manifest = tmp_path / "m.yaml"
    manifest.write_text(head(name, template=False) + "    - {type: proc, target: /proc}\n"
                        "    - {type: dev, target: /dev}\n"
                        "  process: {command: [/bin/sleep, '600']}\n")
    state = tmp_path / "state"
    r = _cli(state, "apply", "-y", str(manifest))
    assert r.returncode == 0, r.stderr
    try:
        yield state, name
    finally:
        r = _cli(state, "destroy", "-y", name)
        assert r.returncode == 0, r.stderr


def _on_a_terminal(state: Path, args: list[str], typed: bytes = b"", rows: int = 33,
                   cols: int = 99) -> tuple[int, bytes]:
    """Run ``vbdecl ARGS`` with a new pseudo-terminal as its stdin, stdout, stderr and
    controlling terminal; type ``typed`` once it wrote "ready"; (exit status, what it
    wrote). The terminal's attributes must be as they were after it."""
    argv = [VBDECL, "--state-dir", str(state), *args]
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    before = termios.tcgetattr(slave)
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                            env=dict(os.environ, VBDECL_CACHE_DIR=str(state.parent / "cache")),
                            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
    out = b""
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    data = os.read(master, 4096)
                except OSError:
                    break
                out += data
                if typed and b"ready" in out:
                    os.write(master, typed)
                    typed = b""
            elif proc.poll() is not None:
                break
        assert termios.tcgetattr(slave) == before      # the caller's terminal set back
        return proc.wait(10), out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        os.close(slave)


def test_the_command_has_a_terminal_of_its_own_with_the_callers_size(live: tuple[Path, str]) -> None:
    state, name = live
    code, out = _on_a_terminal(state, ["exec", "-t", name, "--", "/bin/sh", "-c", "tty; stty size; exit 3"])
    assert code == 3, out
    assert out.splitlines()[:2] == [b"/dev/pts/0", b"33 99"], out


def test_what_the_caller_types_reaches_it_and_ctrl_c_is_its_sigint(live: tuple[Path, str]) -> None:
    state, name = live
    code, out = _on_a_terminal(state, ["exec", "--tty", name, "--", "/bin/sh", "-c",
                                       "echo ready; read line; echo got:$line; exit 5"], typed=b"hello\r")
    assert code == 5 and b"got:hello" in out, out
    # one key, no newline: it gets there only through a caller's terminal in raw mode
    code, out = _on_a_terminal(state, ["exec", "-t", name, "--", "/bin/sh", "-c",
                                       "stty -icanon min 1; echo ready; c=$(dd bs=1 count=1 2>/dev/null); "
                                       "echo got:$c; exit 7"], typed=b"x")
    assert code == 7 and b"got:x" in out, out
    code, out = _on_a_terminal(state, ["exec", "-t", name, "--", "/bin/sh", "-c", "echo ready; exec sleep 100"],
                               typed=b"\x03")
    assert code == 130, out


def test_it_ends_with_the_command_whatever_holds_its_terminal_or_its_output(live: tuple[Path, str]) -> None:
    """The review of exec -t: a process the command left holding the terminal kept vbdecl
    reading it for good once a key was typed; and with stdout a pipe closed early
    (`| head -1`) the command blocked on a full terminal for good. The first ends with
    the command, the second with a hangup for it (exit 129)."""
    state, name = live
    start = time.monotonic()
    code, out = _on_a_terminal(state, ["exec", "-t", name, "--", "/bin/sh", "-c",
                                       "(trap '' HUP; exec sleep 30) & echo ready; sleep 0.5; exit 4"], typed=b"k")
    assert code == 4 and time.monotonic() - start < 15, out
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen([VBDECL, "--state-dir", str(state), "exec", "-t", name, "--", "yes"],
                                stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                start_new_session=True, env=dict(os.environ, VBDECL_CACHE_DIR=str(state.parent / "cache")),
                                preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"y"
        proc.stdout.close()
        assert proc.wait(15) == 129
    finally:
        os.close(master)
        os.close(slave)


def test_without_a_terminal_or_a_dev_entry_it_says_what_is_missing(live: tuple[Path, str], tmp_path: Path) -> None:
    state, name = live
    r = _cli(state, "exec", "-t", name, "--", "/bin/true", stdin=subprocess.DEVNULL)
    assert r.returncode == 125 and "vbdecl exec -t needs a terminal on its stdin" in r.stderr, r.stderr
    bare = "bare" + os.urandom(3).hex()
    manifest = tmp_path / "bare.yaml"
    manifest.write_text(head(bare, template=False) + "  process: {command: [/bin/sleep, '600']}\n")
    r = _cli(state, "apply", "-y", str(manifest))
    assert r.returncode == 0, r.stderr
    try:
        code, out = _on_a_terminal(state, ["exec", "-t", bare, "--", "/bin/true"])
        assert code == 125 and b"cannot make a terminal in " + bare.encode() in out, out
        assert b"a dev entry" in out
    finally:
        r = _cli(state, "destroy", "-y", bare)
        assert r.returncode == 0, r.stderr
