"""The process's last steps (vbdecl.sys.laststep, compiled): what the exec'd program
gets, and which step a failure names. Each case runs in a forked child (no root
needed: no ids or capabilities change here; the security steps are covered by the
security and runtime tests)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from vbdecl.sys import laststep as ls

SH = b"/bin/sh"


def plan(script: str = "", **fields: object) -> ls.LastStep:
    p = ls.LastStep()
    if script:
        p.argv = [SH, b"-c", script.encode()]
        p.paths = [SH]
    p.envp = [b"PATH=/usr/bin:/bin"]
    for key, value in fields.items():
        setattr(p, key, value)
    return p


def in_child(make: Callable[[], ls.LastStep]) -> tuple[str, ls.Failure | None, int]:
    """Run the plan in place in a forked child: (its stdout, its Failure, exit status)."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(out_r)
            os.close(err_r)
            os.dup2(out_w, 1)
            os.set_inheritable(err_w, False)
            failed = ls.exec_in_place(make())
            if failed is not None:
                os.write(err_w, f"{failed.step} {failed.index} {failed.errno} {failed.cwd}".encode())
        finally:
            os._exit(99)
    os.close(out_w)
    os.close(err_w)
    with os.fdopen(out_r) as f:
        out = f.read()
    with os.fdopen(err_r) as f:
        report = f.read()
    _, status = os.waitpid(pid, 0)
    failure = ls.Failure(*map(int, report.split())) if report else None
    return out, failure, os.waitstatus_to_exitcode(status)


def test_the_step_numbers_are_the_compiled_codes() -> None:
    from vbdecl.sys import _linux

    assert len(_linux.LAST_STEPS) == ls.EXEC_NOT_FOUND
    for number, name in enumerate(_linux.LAST_STEPS, 1):
        assert getattr(ls, name) == number, name


def test_the_program_runs_with_the_given_argv_and_environment() -> None:
    script = b'echo "$0 $1 $FOO"; exit 7'
    out, failed, code = in_child(lambda: plan(argv=[SH, b"-c", script, b"zero", b"one"], paths=[SH],
                                              envp=[b"FOO=bar"]))
    assert (out, failed, code) == ("zero one bar\n", None, 7)


def test_path_search_tries_each_path_in_order(tmp_path: Path) -> None:
    out, failed, _ = in_child(lambda: plan(argv=[b"sh", b"-c", b"echo found"],
                                           paths=[str(tmp_path / "sh").encode(), b"/nonexistent/sh", SH]))
    assert (out, failed) == ("found\n", None)


def test_nothing_to_execute_is_not_found() -> None:
    _, failed, _ = in_child(lambda: plan(argv=[b"x"], paths=[b"/nonexistent/x", b"/nope/x"]))
    assert failed is not None and failed.step == ls.EXEC_NOT_FOUND


def test_a_directory_is_denied_and_named_by_its_index(tmp_path: Path) -> None:
    _, failed, _ = in_child(lambda: plan(argv=[b"x"], paths=[b"/nonexistent/x", str(tmp_path).encode()]))
    assert failed is not None and (failed.step, failed.index) == (ls.EXEC_DENIED, 1)


def test_a_script_whose_interpreter_is_missing_is_told_apart(tmp_path: Path) -> None:
    script = tmp_path / "script"
    script.write_text("#!/nonexistent/interpreter\n")
    script.chmod(0o755)
    _, failed, _ = in_child(lambda: plan(argv=[b"script"], paths=[str(script).encode()]))
    assert failed is not None and (failed.step, failed.index) == (ls.EXEC_NO_INTERPRETER, 0)


def test_the_first_cwd_that_works_becomes_cwd_and_pwd(tmp_path: Path) -> None:
    cwds = [b"/nonexistent", str(tmp_path).encode(), b"/"]
    out, failed, _ = in_child(lambda: plan('echo "$(pwd -P) $PWD"', cwds=cwds,
                                           envp=[b"PATH=/usr/bin:/bin", b"PWD=placeholder"], pwd_slot=1))
    real = os.path.realpath(tmp_path)
    assert (out, failed) == (f"{real} {tmp_path}\n", None)


def test_no_cwd_that_works_names_the_last() -> None:
    _, failed, _ = in_child(lambda: plan("true", cwds=[b"/nonexistent", b"/nope"]))
    assert failed is not None and (failed.step, failed.index) == (ls.CHDIR, 1)


def test_inherited_fds_stay_open_and_every_other_is_closed() -> None:
    def make() -> ls.LastStep:
        kept = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        other = os.open("/dev/null", os.O_RDONLY)      # inheritable: only the close step stops it
        return plan(f"ls /proc/self/fd; echo other={other}", inherit=[kept], keep=[kept])

    out, failed, _ = in_child(make)
    fds = {int(x) for x in out.split()[:-1]}
    other = int(out.split()[-1].split("=")[1])
    assert failed is None and other not in fds and fds - {0, 1, 2} and len(fds - {0, 1, 2}) <= 2


def test_an_inherited_fd_that_is_not_open_is_named() -> None:
    _, failed, _ = in_child(lambda: plan("true", inherit=[987]))
    assert failed is not None and (failed.step, failed.index, failed.errno) == (ls.INHERIT, 987, 9)


def test_signals_start_at_their_defaults_with_an_empty_mask() -> None:
    def make() -> ls.LastStep:
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        signal.signal(signal.SIGUSR1, lambda *_: None)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        return plan("grep -E '^Sig(Blk|Ign|Cgt)' /proc/self/status",
                    reset_signals=[signal.SIGPIPE])

    out, failed, _ = in_child(make)
    masks = {line.split(":")[0]: int(line.split()[1], 16) for line in out.splitlines()}
    assert failed is None
    assert masks["SigBlk"] == 0
    assert not masks["SigIgn"] >> (signal.SIGPIPE - 1) & 1


def test_spawn_returns_the_pid_of_the_exec_d_child() -> None:
    pid, failed = ls.spawn(plan("exit 5"))
    assert failed is None
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 5


def test_spawn_reports_a_failure_of_the_child() -> None:
    pid, failed = ls.spawn(plan(argv=[b"x"], paths=[b"/nonexistent/x"]))
    _, status = os.waitpid(pid, 0)
    assert failed is not None and failed.step == ls.EXEC_NOT_FOUND
    assert os.waitstatus_to_exitcode(status) == 125


def test_spawning_needs_a_program() -> None:
    pid, failed = ls.spawn(plan())
    os.waitpid(pid, 0)
    assert failed is not None and failed.step == ls.EXEC_NOT_FOUND


@pytest.mark.parametrize("prog", [b"", b"1234567", b"\0" * 8 * 4097])
def test_a_seccomp_program_of_the_wrong_size_is_refused_before_any_step(prog: bytes) -> None:
    with pytest.raises(ValueError, match="1 to 4096 instructions"):
        ls.exec_in_place(plan(seccomp=[prog]))      # (no paths: never an exec here)


def test_plan_fields_must_be_bytes() -> None:
    with pytest.raises(TypeError, match="bytes"):
        ls.exec_in_place(plan(argv=["text"]))


def test_spawn_without_the_signal_step_keeps_the_callers_mask() -> None:
    """All signals are blocked around vfork; a child that skips the signal step gets
    the caller's mask back, not that one."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            signal.pthread_sigmask(signal.SIG_SETMASK, {signal.SIGUSR1})
            os.dup2(w, 1)
            grep = [b"/bin/grep", b"SigBlk", b"/proc/self/status"]     # (a shell would unblock)
            child, _ = ls.spawn(plan(argv=grep, paths=grep[:1]))
            os.waitpid(child, 0)
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    os.waitpid(pid, 0)
    assert int(out.split()[1], 16) == 1 << (signal.SIGUSR1 - 1)


def test_a_failure_says_which_cwd_the_process_took(tmp_path: Path) -> None:
    _, failed, _ = in_child(lambda: plan(argv=[b"x"], paths=[b"./x"],
                                         cwds=[b"/nonexistent", str(tmp_path).encode()]))
    assert failed is not None and (failed.step, failed.cwd) == (ls.EXEC_NOT_FOUND, 1)
