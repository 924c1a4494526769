"""``vbdecl exec -t``: the command gets a terminal of the environment's own, relayed
to the caller's, which the tests give it as a pseudo-terminal of their own."""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from testmanifests import head

VBDECL = str(Path(sys.executable).with_name("vbdecl"))


def _cli(state: Path, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    env = kw.pop("env", None) or dict(os.environ, VBDECL_CACHE_DIR=str(state.parent / "cache"))
    return subprocess.run([VBDECL, "--state-dir", str(state), *args], capture_output=True, text=True,
                          env=env, timeout=60, **kw)  # type: ignore[call-overload, no-any-return]


@contextlib.contextmanager
def _applied(tmp_path: Path, process: str = "command: [/bin/sleep, '600']",
             more: str = "") -> Iterator[tuple[Path, str]]:
    """A live environment with /proc and /dev (its own devpts), running ``process``;
    ``more`` spec keys (lines indented by 2)."""
    name = "tty" + os.urandom(3).hex()
    manifest = tmp_path / f"{name}.yaml"
    manifest.write_text(head(name, template=False) + "    - {type: proc, target: /proc}\n"
                        "    - {type: dev, target: /dev}\n"
                        f"  process: {{{process}}}\n{more}")
    state = tmp_path / "state"
    r = _cli(state, "apply", "-y", str(manifest))
    assert r.returncode == 0, r.stderr
    try:
        yield state, name
    finally:
        r = _cli(state, "destroy", "-y", name)
        assert r.returncode == 0, r.stderr


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    with _applied(tmp_path) as env:
        yield env


def _on_a_terminal(state: Path, args: list[str], typed: bytes = b"", rows: int = 33,
                   cols: int = 99) -> tuple[int, bytes]:
    """Run ``vbdecl ARGS`` with a new pseudo-terminal as its stdin, stdout, stderr and
    controlling terminal; type ``typed`` once it wrote "ready"; (exit status, what it
    wrote). The terminal's attributes must be as they were after it."""
    with _terminal_for(state, args, rows, cols) as (proc, master, slave, before):
        out = b""
        deadline = time.monotonic() + 30
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


@contextlib.contextmanager
def _terminal_for(state: Path, args: list[str], rows: int = 33, cols: int = 99
                  ) -> Iterator[tuple[subprocess.Popen[bytes], int, int, list[Any]]]:
    """``vbdecl ARGS`` started on a new pseudo-terminal (stdin, stdout, stderr, controlling
    terminal): (the process, the terminal's master and slave ends, its attributes
    before); ended and closed after the block."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    before = termios.tcgetattr(slave)
    proc = subprocess.Popen([VBDECL, "--state-dir", str(state), *args], stdin=slave, stdout=slave,
                            stderr=slave, start_new_session=True,
                            env=dict(os.environ, VBDECL_CACHE_DIR=str(state.parent / "cache")),
                            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
    try:
        yield proc, master, slave, before
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


def test_a_stdin_that_is_no_terminal_is_given_as_it_is(live: tuple[Path, str]) -> None:
    """A script or CI: its input goes to the command as without -t (it ends where the
    caller's ends, which a terminal cannot say for good), its output to the new
    terminal. A review: -t needed a terminal on stdin."""
    state, name = live
    for given, seen in ((b"one\ntwo\n", "one\r\ntwo\r\n"), (b"half", "half")):
        r = subprocess.run([VBDECL, "--state-dir", str(state), "exec", "-t", name, "--", "/bin/sh", "-c",
                            "tty; tty <&1; cat; echo; echo end"], input=given, capture_output=True,
                           env=dict(os.environ, VBDECL_CACHE_DIR=str(state.parent / "cache")), timeout=60)
        out = r.stdout.decode()
        assert r.returncode == 0, (out, r.stderr)
        assert out == f"not a tty\r\n/dev/pts/0\r\n{seen}\r\nend\r\n", out


def test_term_is_set_for_a_command_that_would_have_none(live: tuple[Path, str], tmp_path: Path) -> None:
    state, name = live
    env = {k: v for k, v in os.environ.items() if k != "TERM"}
    r = _cli(state, "exec", "-t", name, "--", "/bin/sh", "-c", "echo term=$TERM", stdin=subprocess.DEVNULL,
             env=dict(env, VBDECL_CACHE_DIR=str(state.parent / "cache")))
    assert r.returncode == 0 and "term=xterm" in r.stdout.split(), (r.stdout, r.stderr)
    with _applied(tmp_path, "command: [/bin/sleep, '600'], clear_env: true") as (state2, cleared):
        r = _cli(state2, "exec", "-t", cleared, "--", "/bin/sh", "-c", "echo term=$TERM", stdin=subprocess.DEVNULL,
                 env=dict(os.environ, TERM="vt220", VBDECL_CACHE_DIR=str(state.parent / "cache")))
        assert r.returncode == 0 and "term=vt220" in r.stdout.split(), (r.stdout, r.stderr)
        r = _cli(state2, "exec", cleared, "--", "/bin/sh", "-c", "echo term=$TERM", stdin=subprocess.DEVNULL)
        assert r.returncode == 0 and r.stdout == "term=\n", (r.stdout, r.stderr)    # (without -t: as declared)


USERNS = ("  namespaces: {user: true}\n  idmap: {uid: [{inside: 0, outside: 200000, count: 65536}], "
          "gid: [{inside: 0, outside: 200000, count: 65536}]}\n")


@pytest.mark.parametrize(("userns", "user"), [(False, 4321), (True, 4321), (True, None)],
                         ids=["host-ids", "userns", "userns-root"])
def test_the_terminal_is_the_command_s_user_s(tmp_path: Path, userns: bool, user: int | None) -> None:
    """A review: it was root's, so a command of another user could not open it again by
    its name (as su, ssh or a pinentry do); the review of that fix: in a user namespace,
    the host's root who made it is no one there, root inside included."""
    process = "command: [/bin/sleep, '600']" + (f", user: {user}, group: {user}" if user else "")
    with _applied(tmp_path, process, USERNS if userns else "") as (state, name):
        r = _cli(state, "exec", "-t", name, "--", "/bin/sh", "-c", "t=$(tty <&2); stat -c owner=%u:%g $t; id -u; "
                 "echo again > $t && echo reopened", stdin=subprocess.DEVNULL)
        assert r.returncode == 0, (r.stdout, r.stderr)
        ids = user or 0
        assert r.stdout.splitlines()[:2] == [f"owner={ids}:{ids}", f"{ids}"] and "reopened" in r.stdout, r.stdout


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 15
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_a_stop_sets_the_terminal_back_and_fg_makes_it_raw_again(live: tuple[Path, str]) -> None:
    """The review of exec -t: after `kill -STOP` and `fg` the caller's terminal stayed
    cooked (its shell set it back), so a key reached the command only with a newline."""
    state, name = live
    out = b""
    with _terminal_for(state, ["exec", "-t", name, "--", "/bin/sh", "-c", "stty -icanon min 1; echo ready; "
                               "c=$(dd bs=1 count=1 2>/dev/null); echo got:$c"]) as (proc, master, slave, cooked):

        def read_until(marker: bytes) -> None:
            nonlocal out
            deadline = time.monotonic() + 30
            while marker not in out:
                assert time.monotonic() < deadline and proc.poll() is None, out
                if select.select([master], [], [], 0.1)[0]:
                    out += os.read(master, 4096)

        read_until(b"ready")
        raw = termios.tcgetattr(slave)
        assert raw != cooked
        proc.send_signal(signal.SIGTSTP)        # (as a terminal's ^Z would, were it not raw)
        _until(lambda: _state(proc.pid) == "T", "vbdecl did not stop on SIGTSTP")
        assert termios.tcgetattr(slave) == cooked       # set back before it stopped
        proc.send_signal(signal.SIGCONT)
        _until(lambda: termios.tcgetattr(slave) == raw, "not raw again after SIGCONT")
        proc.send_signal(signal.SIGSTOP)        # (no chance to set it back: its shell does)
        _until(lambda: _state(proc.pid) == "T", "vbdecl did not stop on SIGSTOP")
        termios.tcsetattr(slave, termios.TCSANOW, cooked)
        proc.send_signal(signal.SIGCONT)
        _until(lambda: termios.tcgetattr(slave) == raw, "not raw again after SIGSTOP and SIGCONT")
        os.write(master, b"x")      # one key, no newline: through only in raw mode
        read_until(b"got:x")
        assert proc.wait(15) == 0
        assert termios.tcgetattr(slave) == cooked


# A job-control shell in miniature: starts ARGV[2:] in a process group of its own in the
# background of its terminal (stdin), which it keeps in non-canonical mode meanwhile, as
# readline at a prompt; when fd ARGV[1] says "fg" it sets its modes back and brings the
# job to the foreground (tcsetpgrp, and SIGCONT only if it is stopped, as bash), and says
# how it ended.
SHELL = r"""
import os, signal, sys, termios
signal.signal(signal.SIGTTOU, signal.SIG_IGN)
pid = os.fork()
if pid == 0:
    os.setpgid(0, 0)
    signal.signal(signal.SIGTTOU, signal.SIG_DFL)
    os.execv(sys.argv[2], sys.argv[2:])
os.setpgid(pid, pid)
cooked = termios.tcgetattr(0)
prompt = list(cooked)
prompt[3] &= ~(termios.ICANON | termios.ECHO)
termios.tcsetattr(0, termios.TCSANOW, prompt)
fg = os.read(int(sys.argv[1]), 2) == b"fg"
termios.tcsetattr(0, termios.TCSANOW, cooked)
if fg:
    os.tcsetpgrp(0, pid)
    if os.waitpid(pid, os.WNOHANG | os.WUNTRACED)[0] == pid:
        os.kill(pid, signal.SIGCONT)
_, status = os.waitpid(pid, os.WUNTRACED)
os.tcsetpgrp(0, os.getpgrp())
print("stopped" if os.WIFSTOPPED(status) else f"exit {os.waitstatus_to_exitcode(status)}", flush=True)
if os.WIFSTOPPED(status):
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
"""


@pytest.mark.parametrize("brought_forward", [False, True], ids=["background", "fg"])
def test_a_background_exec_leaves_the_terminal_alone_and_is_raw_once_brought_forward(
        live: tuple[Path, str], tmp_path: Path, brought_forward: bool) -> None:
    """The review of the stop handling: `exec -t ... &` stopped at its end (setting back
    a terminal it had not made raw, from the background), and after `fg` stayed cooked
    (bash's `fg` of a running job sends no SIGCONT); its second review: a key typed
    at the prompt meanwhile stopped it (SIGTTIN), and after `fg` its read went on,
    cooked, holding back the command's output until a whole line was typed."""
    state, name = live
    shell = tmp_path / "shell.py"
    shell.write_text(SHELL)
    script = ("stty -icanon min 1; echo ready; c=$(dd bs=1 count=1 2>/dev/null); echo got:$c" if brought_forward
              else "echo ready; sleep 0.3; echo done")
    ctl_r, ctl_w = os.pipe()
    master, slave = os.openpty()
    cooked = termios.tcgetattr(slave)
    proc = subprocess.Popen([sys.executable, str(shell), str(ctl_r), VBDECL, "--state-dir", str(state), "exec", "-t", name,
                             "--", "/bin/sh", "-c", script], stdin=slave, stdout=slave, stderr=slave,
                            pass_fds=(ctl_r,), start_new_session=True,
                            env=dict(os.environ, VBDECL_CACHE_DIR=str(state.parent / "cache")),
                            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
    os.close(ctl_r)
    out = b""

    def read_until(marker: bytes) -> None:
        nonlocal out
        deadline = time.monotonic() + 30
        while marker not in out:
            assert time.monotonic() < deadline, out
            if select.select([master], [], [], 0.1)[0]:
                out += os.read(master, 4096)

    try:
        read_until(b"ready")
        prompt = cooked[3] & ~(termios.ICANON | termios.ECHO)
        _until(lambda: termios.tcgetattr(slave)[3] == prompt, "not the prompt's modes")   # not vbdecl's raw
        if brought_forward:
            os.write(master, b"x")      # typed at the prompt, while vbdecl is in the background
            time.sleep(0.3)
            os.write(ctl_w, b"fg")
            read_until(b"got:x")        # one key, no newline: through only in raw mode
        else:
            os.write(ctl_w, b"bg")
        read_until(b"exit 0\r\n")     # (the shell's word: not "stopped")
        assert termios.tcgetattr(slave) == cooked
        assert proc.wait(15) == 0
    finally:
        os.close(ctl_w)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        os.close(slave)


def test_ctrl_c_on_the_callers_terminal_reaches_the_commands_job_with_stdin_not_a_terminal(
        live: tuple[Path, str]) -> None:
    """The review: with a pipe on stdin the caller's terminal stays cooked, and its ^C,
    forwarded to the command alone, left the shell waiting for its sleep. It is typed
    into the command's terminal, as the user meant it."""
    state, name = live
    master, slave = os.openpty()
    proc = subprocess.Popen([VBDECL, "--state-dir", str(state), "exec", "-t", name, "--", "/bin/sh", "-c",
                             "echo ready; sleep 30; echo after"], stdin=subprocess.PIPE, stdout=slave,
                            stderr=slave, start_new_session=True,
                            env=dict(os.environ, VBDECL_CACHE_DIR=str(state.parent / "cache")),
                            preexec_fn=lambda: fcntl.ioctl(1, termios.TIOCSCTTY, 0))
    out = b""
    try:
        deadline = time.monotonic() + 30
        while b"ready" not in out:
            assert time.monotonic() < deadline, out
            if select.select([master], [], [], 0.1)[0]:
                out += os.read(master, 4096)
        os.write(master, b"\x03")       # ^C on the caller's (cooked) terminal
        assert proc.wait(15) == 130 and b"after" not in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdin is not None
        proc.stdin.close()
        os.close(master)
        os.close(slave)


def test_without_a_dev_entry_it_says_what_is_missing(tmp_path: Path) -> None:
    state = tmp_path / "state"
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
