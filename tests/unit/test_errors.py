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
