from pathlib import Path

import pytest

from vbdecl.entry import _command_of
from vbdecl.errors import ActionError, ManifestError, Problem


def test_manifest_error_lists_every_problem_with_position():
    err = ManifestError("bad", problems=[
        Problem("env.yaml:3:5", "unknown key 'nmae'", "did you mean 'name'?"),
        Problem("env.yaml:9:7", "mode must be a quoted string"),
    ])
    text = str(err)
    assert "env.yaml:3:5: unknown key 'nmae'\n  hint: did you mean 'name'?" in text
    assert "env.yaml:9:7: mode must be a quoted string" in text


def test_action_error_keeps_original_and_revert_failures():
    revert = ActionError("umount failed", action="mount[/usr]")
    err = ActionError("mkdir failed", action="dir[/x]", revert_errors=[revert])
    assert str(err).startswith("dir[/x]: mkdir failed")
    assert "revert also failed: mount[/usr]: umount failed" in str(err)


def test_fast_commands_are_found_after_global_options():
    assert _command_of(["--state-dir", "/s", "run", "x.yaml"]) == "run"
    assert _command_of(["--debug", "exec", "web"]) == "exec"
    assert _command_of(["plan", "x.yaml"]) == "plan"
    assert _command_of([]) is None


def test_help_flags_of_the_sandboxed_command_keep_run_on_the_fast_path(monkeypatch):
    import vbdecl.cli.fast
    from vbdecl import entry

    seen = []
    monkeypatch.setattr(vbdecl.cli.fast, "main", lambda argv, **kw: seen.append(argv) or 0)
    assert entry.main(["run", "env.yaml", "--", "ls", "-h"]) == 0
    assert seen == [["run", "env.yaml", "--", "ls", "-h"]]


def _json_lines(text):
    import json

    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_errors_are_json_on_stdout_and_words_on_stderr(tmp_path, monkeypatch, capsys):
    from vbdecl.cli.main import main

    monkeypatch.setenv("VBDECL_STATE_DIR", str(tmp_path / "state"))
    assert main(["--json", "status", "nosuch"]) == 1
    out, err = capsys.readouterr()
    (line,) = _json_lines(out)
    assert line["event"] == "error"
    assert line["error"]["message"] == "environment 'nosuch' does not exist"
    assert line["error"]["hint"] and line["error"]["exit_code"] == 1
    assert err.startswith("error: environment 'nosuch' does not exist")

    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: vbdecl/v1\nkind: Environment\nmetadata: {name: x}\nnmae: y\n")
    assert main(["plan", "--json", str(bad)]) == 1
    (line,) = _json_lines(capsys.readouterr().out)
    (problem,) = line["error"]["problems"]
    assert problem["where"].startswith(f"{bad}:4:") and "nmae" in problem["message"]


def test_without_json_errors_stay_off_stdout(tmp_path, monkeypatch, capsys):
    from vbdecl.cli.main import main

    monkeypatch.setenv("VBDECL_STATE_DIR", str(tmp_path / "state"))
    assert main(["status", "nosuch"]) == 1
    assert capsys.readouterr().out == ""


def test_json_error_of_a_failed_action_lists_its_failed_reverts(capsys):
    from vbdecl.cli.main import report_error

    err = ActionError("mkdir failed", action="dir[/x]",
                      revert_errors=[ActionError("umount failed", action="mount[/usr]")])
    assert report_error(err, False, True) == 1
    (line,) = _json_lines(capsys.readouterr().out)
    assert line["error"]["where"] == "dir[/x]"
    assert line["error"]["revert_errors"] == [{"where": "mount[/usr]", "message": "umount failed"}]


def test_a_state_dir_that_is_a_file_is_a_usage_error_naming_it(tmp_path, monkeypatch, capsys):
    from vbdecl.cli.main import main
    from vbdecl.entry import main as entry_main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.yaml").write_text("")
    for given in ("m.yaml", "m.yaml/sub"):
        assert main(["--state-dir", given, "ls"]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: cannot use {given} as the state directory: ")
        assert "bug" not in err and "envs" not in err, err
    monkeypatch.setenv("VBDECL_STATE_DIR", "m.yaml")
    assert main(["status", "x"]) == 1
    assert "cannot use m.yaml as the state directory" in capsys.readouterr().err
    # the fast path too, before it touches anything (exit 125: before the process started)
    assert entry_main(["exec", "x", "--", "true"]) == 125
    assert "cannot use m.yaml as the state directory" in capsys.readouterr().err
    monkeypatch.setenv("VBDECL_STATE_DIR", "fresh/state")
    assert main(["ls"]) == 0      # a path that does not exist yet is fine


def test_a_state_dir_behind_a_dangling_link_or_on_proc_is_an_error_not_a_bug(tmp_path, monkeypatch, capsys):
    """A UX review: a state directory that is a link to a missing path (a disk not
    mounted) crashed apply as "a bug in vbdecl" (FileExistsError), and /proc/x as
    FileNotFoundError; ls said "no environments"."""
    from vbdecl.cli.main import main
    from vbdecl.engine import paths
    from vbdecl.errors import StateError

    (tmp_path / "dangling").symlink_to(tmp_path / "missing")
    for given in ("dangling", "dangling/sub"):
        assert main(["--state-dir", str(tmp_path / given), "ls"]) == 1
        err = capsys.readouterr().err
        assert f"is a symbolic link to {tmp_path / 'missing'}, which does not exist" in err, err
        assert "bug" not in err, err
    # where no --state-dir names it (the default, /var/lib/vbdecl, a link to a disk not mounted)
    with pytest.raises(StateError, match=r"dangling is a symbolic link to .*missing, which does not exist"):
        paths.ensure_dir(str(tmp_path / "dangling" / "envs" / "x"))
    with pytest.raises(StateError, match="cannot make the directory /proc/vbdecl-x/envs: "):
        paths.ensure_dir("/proc/vbdecl-x/envs")


def test_an_interrupted_run_says_so(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                    tmp_path: Path) -> None:
    """A new-user review: `vbdecl run` interrupted during its setup exited 130 without
    a word; every other command says "interrupted"."""
    import vbdecl.cli.fast

    def interrupted(*args: object, **kw: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(vbdecl.cli.fast, "run_file", interrupted)
    assert vbdecl.cli.fast.main(["run", str(tmp_path / "m.yaml")]) == 130
    assert capsys.readouterr().err == "interrupted\n"
