"""The plan, diff and graph commands, the plan cache and saved plans."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vbdecl.cli.main import main
from vbdecl.engine import sources
from vbdecl.engine.plancache import plans_for_file
from vbdecl.engine.sources import is_saved_plan
from vbdecl.errors import StalePlanError
from vbdecl.plan import saved
from vbdecl.plan.diff import state_of

CASES = Path(__file__).resolve().parents[1] / "plans"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VBDECL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("VBDECL_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("NO_COLOR", "1")
    # its bind source exists (plan refuses a missing one, as apply does)
    (tmp_path / "data").mkdir()
    text = (CASES / "network-bridge" / "manifest.yaml").read_text()
    (tmp_path / "web.yaml").write_text(text.replace("source: /srv/data", f"source: {tmp_path}/data"))
    return tmp_path


def _record_state(tmp: Path, manifest: Path, serial: int = 1) -> dict:
    (plan,) = plans_for_file(str(manifest))
    state = state_of(plan)
    state.update(lineage="lin-1", serial=serial, instance="vb-00000001")
    d = tmp / "state" / "envs" / plan["name"]
    d.mkdir(parents=True, exist_ok=True)
    (d / "state.json").write_text(json.dumps(state))
    return state


def test_plan_text_and_exit_codes(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(env / "web.yaml")]) == 0
    out = capsys.readouterr().out
    assert "+ net.veth  # veth pair" in out
    assert "  + create" in out and "  ~ update" not in out
    assert out.rstrip().endswith("Plan: 20 to add, 0 to change, 0 to destroy.")
    assert main(["plan", "--detailed-exitcode", str(env / "web.yaml")]) == 2


def test_a_usage_error_exits_1_never_the_2_of_changes_found(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["plan", "--detailed-exitcode", "--no-refersh", str(env / "web.yaml")],
                 ["plan", "--detailed-exitcode"], ["frobnicate"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 1, argv
        assert "error:" in capsys.readouterr().err


def test_an_unknown_option_of_a_command_shows_that_commands_usage(
        env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A review: `vbdecl plan --bogus FILE` printed vbdecl's usage (argparse hands a
    subparser's unknown arguments back to the top-level parser), not plan's."""
    for argv, wrong in ((["plan", "--bogus", str(env / "web.yaml")], "unknown option --bogus"),
                        (["destroy", "web", "extra"], "unexpected argument: extra")):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 1, argv     # (2 is plan --detailed-exitcode's "changes")
        err = capsys.readouterr().err
        assert err.startswith(f"usage: vbdecl {argv[0]} "), err
        assert f"vbdecl {argv[0]}: error: {wrong}" in err, err


def test_a_usage_error_with_json_is_also_a_json_error_line(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A UX review: with --json, usage errors printed nothing on stdout, where every
    other error of a --json command is its last line; a mistyped command gets a
    suggestion."""
    for argv, said in ((["--json", "aply", "x.yaml"], "invalid choice: 'aply'"),
                       (["--json", "apply"], "the following arguments are required"),
                       (["rollback", "web", "--to", "abc", "--json"], "invalid int value: 'abc'"),
                       (["--json", "plan", "--bogus", str(env / "web.yaml")], "unknown option --bogus")):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 1, argv
        out = capsys.readouterr().out
        (line,) = [json.loads(x) for x in out.splitlines()]
        assert line["event"] == "error" and said in line["error"]["message"], line
        assert line["error"]["exit_code"] == 1
        if argv[1] == "aply":
            assert line["error"]["hint"].startswith("did you mean apply?"), line
    with pytest.raises(SystemExit):
        main(["aply", "x.yaml", "--", "--json"])     # (a command's argument, not ours)
    assert capsys.readouterr().out == ""


def test_plan_graph_and_diff_of_a_bad_path_say_what_is_wrong(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(env / "missing.yaml")
    for argv in (["plan", missing], ["plan", "--no-cache", missing], ["graph", str(env)],
                 ["diff", str(env / "web.yaml"), missing]):
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert ("cannot read the file" in err or "is a directory" in err) and "bug" not in err, err


@pytest.mark.parametrize(("out", "hint"), [
    ("missing-dir/x.plan", "create the directory"),
    ("a-dir", "is a directory: give a file name"),
    ("web.yaml/x.plan", "is not a directory"),
])
def test_plan_out_that_cannot_be_written_names_the_path_given(
        env: Path, capsys: pytest.CaptureFixture[str], out: str, hint: str) -> None:
    (env / "a-dir").mkdir()
    assert main(["plan", "-o", str(env / out), str(env / "web.yaml")]) == 1
    err = capsys.readouterr().err
    assert f"error: cannot save the plan to {env / out}: " in err and hint in err
    assert ".tmp" not in err and "bug" not in err, err
    assert sorted(os.listdir(env / "a-dir")) == []      # no temp file left


def test_vbdecl_vb_is_the_vb_command(capsys: pytest.CaptureFixture[str]) -> None:
    from vbdecl.entry import main as entry_main

    assert entry_main(["vb", "--version"]) == 0
    assert capsys.readouterr().out.startswith("vb (vbdecl ")
    assert entry_main(["vb", "--bogus"]) == 1
    assert capsys.readouterr().err == "vb: Unknown option --bogus\n"


def test_no_changes_against_own_state(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _record_state(env, env / "web.yaml")
    assert main(["plan", "--no-refresh", "--detailed-exitcode", str(env / "web.yaml")]) == 0
    assert "No changes: web matches its manifest." in capsys.readouterr().out
    assert main(["plan", "--no-refresh", "-v", str(env / "web.yaml")]) == 0
    assert "  mount[/usr]  # unchanged" in capsys.readouterr().out


def test_update_in_place_json(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _record_state(env, env / "web.yaml")
    text = (env / "web.yaml").read_text().replace("memory: 256Mi", "memory: 1Gi")
    (env / "web.yaml").write_text(text)
    assert main(["plan", "--no-refresh", "--json", "--detailed-exitcode", str(env / "web.yaml")]) == 2
    doc = json.loads(capsys.readouterr().out)
    (plan,) = doc["plans"]
    assert plan["state"] == {"lineage": "lin-1", "serial": 1}
    assert plan["summary"] == {"add": 0, "change": 1, "destroy": 0, "drift": 0}
    (change,) = plan["changes"]
    assert change["id"] == "cgroup.memory" and change["symbol"] == "~"
    assert change["reason"] == "limits.memory 256Mi -> 1Gi"
    # docs/plan-format.md: "unchanged" lists the ids of the actions that do not change,
    # without -v too (-v adds them to the text)
    (compiled,) = plans_for_file(str(env / "web.yaml"))
    ids = [a["id"] for a in compiled["actions"]]
    assert plan["unchanged"] == [i for i in ids if i != "cgroup.memory"]
    assert main(["plan", "--no-refresh", "--json", "-v", str(env / "web.yaml")]) == 0
    assert json.loads(capsys.readouterr().out)["plans"][0]["unchanged"] == plan["unchanged"]


def test_saved_plan_records_state_and_goes_stale(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = env / "web.plan"
    assert main(["plan", "-o", str(out), str(env / "web.yaml")]) == 0
    data = json.loads(out.read_text())
    assert data["state"] == {"lineage": None, "serial": 0}
    assert data["summary"]["add"] == 20
    assert data["saved"]["tool_version"] and data["saved"]["file_hash"].startswith("sha256:")
    assert is_saved_plan(out) and not is_saved_plan(env / "web.yaml")
    saved.check_fresh(data, None)
    assert saved.plan_of(data)["actions"] == plans_for_file(str(env / "web.yaml"))[0]["actions"]
    # the state moved on
    state = _record_state(env, env / "web.yaml", serial=4)
    with pytest.raises(StalePlanError, match="serial 4"):
        saved.check_fresh(data, state)
    # the manifest changed
    (env / "web.yaml").write_text((env / "web.yaml").read_text() + "\n# edited\n")
    with pytest.raises(StalePlanError, match=r"manifest .* changed"):
        saved.check_fresh(data, None)


def test_saved_plan_is_readable_by_its_owner_only(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # it holds file contents and environment values: 0600 whatever the umask
    out = env / "web.plan"
    old_umask = os.umask(0)
    try:
        assert main(["plan", "-o", str(out), str(env / "web.yaml")]) == 0
    finally:
        os.umask(old_umask)
    assert out.stat().st_mode & 0o777 == 0o600


def test_a_saved_plan_given_for_a_manifest_is_named_as_such(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = env / "web.plan"
    assert main(["plan", "-o", str(out), str(env / "web.yaml")]) == 0
    capsys.readouterr()
    assert main(["validate", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{out}:1:1: this is a saved plan (from `vbdecl plan -o`), not a manifest\n")
    assert f"vbdecl apply {out}" in err and str(env / "web.yaml") in err
    assert "unknown key" not in err and "1 problem in 1 of 1 file" in err
    assert main(["plan", str(out)]) == 1
    assert "this is a saved plan" in capsys.readouterr().err


def test_a_name_used_in_two_files_of_a_dir_is_refused_at_each_name(
        env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(env)
    (env / "vd" / "sub").mkdir(parents=True)
    (env / "vd" / "a.yaml").write_text("apiVersion: vbdecl/v1\nkind: Environment\nmetadata:\n  name: x\n")
    (env / "vd" / "sub" / "b.yml").write_text("apiVersion: vbdecl/v1\nkind: Environment\nmetadata: {name: x}\n")
    (env / "vd" / "c.yaml").write_text("apiVersion: vbdecl/v1\nkind: Environment\nmetadata: {name: y}\n")
    a, b = "vd/a.yaml:4:9", "vd/sub/b.yml:3:18"
    for argv in (["validate", "vd"], ["plan", "vd"], ["apply", "-y", "vd"]):
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert f"{a}: environment name 'x' is also used at {b}" in err, err
        assert f"{b}: environment name 'x' is also used at {a}" in err, err
        assert "'y'" not in err
    assert main(["--json", "validate", "vd"]) == 1
    files = {f["path"]: f for f in json.loads(capsys.readouterr().out)["files"]}
    assert not files["vd/a.yaml"]["ok"] and files["vd/c.yaml"]["ok"]
    assert [p["where"] for p in files["vd/sub/b.yml"]["problems"]] == [b]
    assert main(["validate", "vd/a.yaml", "vd/a.yaml"]) == 0      # one file given twice: one environment


def test_diff_and_graph_commands(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    b = env / "b.yaml"
    b.write_text((env / "web.yaml").read_text().replace('"8080:80/tcp"', '"9090:80/tcp"'))
    assert main(["diff", "--raw", str(env / "web.yaml"), str(b)]) == 0
    out = capsys.readouterr().out
    assert '+    ports: ["9090:80/tcp"]' in out
    assert "+ nat.port[9090/tcp]" in out and "- nat.port[8080/tcp]" in out
    assert "Plan: 1 to add, 0 to change, 1 to destroy." in out
    assert main(["graph", str(env / "web.yaml")]) == 0
    out = capsys.readouterr().out
    assert "│   └── dir[/data/x]  [fs.dir]" in out
    assert main(["graph", "--dot", str(env / "web.yaml")]) == 0
    out = capsys.readouterr().out
    assert out.startswith('digraph "web" {') and '"net.veth" -> "net.address";' in out
    assert main(["--json", "graph", "--dot", str(env / "web.yaml")]) == 1   # (--dot was dropped: a review)
    assert "--dot and --json are two formats of the graph" in capsys.readouterr().err


def _stdin(monkeypatch: pytest.MonkeyPatch, data: str | bytes) -> None:
    raw = data.encode() if isinstance(data, str) else data
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw)))


def test_stdin_given_twice_and_prune_of_stdin_are_usage_errors_before_any_read(
        env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A review: `validate - -` read stdin twice (the second time empty: "empty file"),
    and `apply - --prune` compiled stdin before saying --prune needs a directory."""
    read: list[bool] = []
    monkeypatch.setattr("vbdecl.engine.sources.read_stdin", lambda: read.append(True) or b"")
    assert main(["validate", "-", "-"]) == 1
    assert "- (stdin) can be given once" in capsys.readouterr().err
    assert main(["apply", "-", "--prune", "-y"]) == 1
    assert "--prune needs a directory" in capsys.readouterr().err
    assert read == []


def test_plan_diff_graph_and_apply_read_a_manifest_from_stdin(
        env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A review: only validate took - for stdin; plan and apply said "-: no such file"."""
    text = (env / "web.yaml").read_text()
    _stdin(monkeypatch, text)
    assert main(["plan", "-"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("Plan: 20 to add, 0 to change, 0 to destroy.")
    # errors name <stdin>:line:col
    _stdin(monkeypatch, text.replace('mode: "0755"', "mode: 0755"))
    assert main(["plan", "-"]) == 1
    assert 'error: <stdin>:11:42: mode 0755 is a number' in capsys.readouterr().err
    # diff either way round; -o saves a plan that names no manifest file
    _stdin(monkeypatch, text.replace('"8080:80/tcp"', '"9090:80/tcp"'))
    assert main(["diff", "--raw", str(env / "web.yaml"), "-"]) == 0
    out = capsys.readouterr().out
    assert "+++ <stdin>" in out and "+ nat.port[9090/tcp]" in out and "- nat.port[8080/tcp]" in out
    _stdin(monkeypatch, text)
    assert main(["plan", "-", "-o", str(env / "web.plan")]) == 0
    saved_plan = json.loads((env / "web.plan").read_text())
    assert saved_plan["saved"]["file"] is None and saved_plan["summary"]["add"] == 20
    _stdin(monkeypatch, text)
    assert main(["graph", "-"]) == 0
    assert "│   └── dir[/data/x]  [fs.dir]" in capsys.readouterr().out
    # apply reads it once: relative paths are to the current directory; a saved plan goes too
    monkeypatch.chdir(env)
    _stdin(monkeypatch, text.replace(f"source: {env}/data", "source: ./data"))
    (src,) = sources.load("-")
    assert src.path == "<stdin>" and src.saved is None and src.plan["source"] is None
    assert src.plan["spec"]["filesystem"][1]["source"] == str(env / "data")
    _stdin(monkeypatch, (env / "web.plan").read_bytes())
    (src,) = sources.load("-")
    assert src.saved == saved_plan and src.plan["name"] == "web"
    # the answer to "Apply?" would be read from stdin, which holds the manifest
    _stdin(monkeypatch, text)
    assert main(["apply", "-"]) == 1
    assert "pass -y (--yes)" in capsys.readouterr().err
    # run's stdin is the process's: refused, saying so (it was "unknown option -")
    from vbdecl.cli.fast import main as fast_main

    assert fast_main(["run", "-"]) == 125
    assert "stdin is the process's" in capsys.readouterr().err


def test_cache_hit_needs_no_model(env: Path) -> None:
    manifest = str(env / "web.yaml")
    first = plans_for_file(manifest)
    assert any((env / "cache").rglob("*.marshal"))
    code = ("import sys; from vbdecl.engine.plancache import plans_for_file; "
            f"p = plans_for_file({manifest!r}); "
            "print(p[0]['name'], [m for m in ('pydantic', 'ruamel', 'rich', 'vbdecl.model.load') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ)).stdout
    assert out.strip() == "web []"
    # a changed file is a miss and compiles again
    Path(manifest).write_text(Path(manifest).read_text().replace("pids: 64", "pids: 65"))
    second = plans_for_file(manifest)
    assert second != first
    assert next(a for a in second[0]["actions"] if a["id"] == "cgroup.pids")["params"]["value"] == 65


def test_corrupt_cache_entry_is_a_miss(env: Path) -> None:
    manifest = str(env / "web.yaml")
    plans_for_file(manifest)
    entries = list((env / "cache").rglob("*.marshal"))
    assert entries
    for corrupt in (b"{not marshal", b"", b"\xe9\x01"):
        for entry in entries:
            entry.write_bytes(corrupt)
        assert plans_for_file(manifest)[0]["name"] == "web"


def test_diff_between_revisions(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (p1,) = plans_for_file(str(env / "web.yaml"))
    (env / "web.yaml").write_text((env / "web.yaml").read_text().replace("pids: 64", "pids: 128"))
    (p2,) = plans_for_file(str(env / "web.yaml"))
    revs = env / "state" / "envs" / "web" / "revisions"
    revs.mkdir(parents=True)
    for n, plan in ((1, p1), (2, p2)):
        (revs / f"{n}.json").write_text(json.dumps({"revision": n, "plan": plan}))
    state = state_of(p2)
    state.update(revision=2, lineage="l", serial=2)
    (revs.parent / "state.json").write_text(json.dumps(state))
    assert main(["diff", "web", "--from", "1", "--raw"]) == 0
    out = capsys.readouterr().out
    assert "~ cgroup.pids  # limits.pids 64 -> 128" in out
    assert '-      "pids": 64,' in out and '+      "pids": 128,' in out
    assert main(["diff", "web", "--from", "2", "--to", "1", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["plans"][0]["changes"][0]["reason"] == "limits.pids 128 -> 64"
    assert main(["diff", "web", "--from", "7"]) == 1
    err = capsys.readouterr().err
    assert "environment 'web' has no revision 7" in err and "revisions: 1-2 (see vbdecl history web)" in err
    # destroyed (its revisions kept): --to defaults to its last revision (a day-2 review
    # was told it had never been applied)
    (revs.parent / "state.json").unlink()
    assert main(["diff", "web", "--from", "1"]) == 0
    assert "~ cgroup.pids  # limits.pids 64 -> 128" in capsys.readouterr().out
    assert main(["diff", "nosuch", "--from", "1"]) == 1
    assert "environment 'nosuch' does not exist" in capsys.readouterr().err


def test_diff_of_revisions_given_as_arguments_hints_at_from_and_to(
        env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """`vbdecl diff NAME 1 3` gave argparse's bare "unexpected argument: 3" (a review):
    revisions are --from and --to."""
    monkeypatch.chdir(env)
    with pytest.raises(SystemExit) as exited:
        main(["diff", "web", "1", "3"])
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert "unexpected argument: 3\n  hint: to compare revisions of an environment: " \
        "vbdecl diff web --from 1 --to 3\n" in err
    assert main(["diff", "web", "1"]) == 1
    err = capsys.readouterr().err
    assert "neither 'web' nor '1' is a manifest file" in err and "vbdecl diff web --from 1" in err


def test_graph_json_and_multi_environment_files(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", "--json", str(CASES / "multi-doc" / "manifest.yaml")]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [g["name"] for g in doc["graphs"]] == ["one", "two"]
    assert doc["graphs"][0]["actions"][0] == {"id": "env", "kind": "env.namespaces", "scope": "host",
                                              "deps": [], "describe": "new namespaces: pid mount uts ipc net"}
    assert main(["plan", "-o", str(env / "x.plan"), str(CASES / "multi-doc" / "manifest.yaml")]) == 1
    assert "holds 2 environments" in capsys.readouterr().err


def test_plan_warns_of_bridge_without_nat_or_dns(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """nat: false and no dns: the host's resolv.conf names servers the environment
    cannot reach, so lookups hang; plan says so (a warning: the plan still stands). Not
    with `dns: []`, which is no resolv.conf at all (a review saw the warning say the
    host's file would be there)."""
    base = "apiVersion: vbdecl/v1\nkind: Environment\nmetadata: {name: quiet}\nspec:\n" \
           "  filesystem: [{type: tmpfs, target: /tmp}]\n  network: {mode: bridge, nat: NAT DNS}\n"
    cases = {("false", ""): True, ("false", ", dns: []"): False, ("false", ", dns: [10.88.0.1]"): False,
             ("true", ""): False}
    for (nat, dns), warned in cases.items():
        f = env / "quiet.yaml"
        f.write_text(base.replace("NAT", nat).replace(" DNS", dns))
        assert main(["plan", "--no-refresh", str(f)]) == 0
        err = capsys.readouterr().err
        assert ("warning:" in err and "quiet: network: nat is false and dns is not set" in err
                and "name lookups hang" in err and "hint: set network.dns" in err) is warned, (nat, dns, err)


def test_plan_warns_of_an_empty_root(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No filesystem entries and no rootfs: a new mount namespace starts in an empty root
    (as with bubblewrap), so nothing runs there; plan says so before apply finds out."""
    base = "apiVersion: vbdecl/v1\nkind: Environment\nmetadata: {name: bare}\nspec:\n"
    cases = {"": True, "  filesystem: []\n": True, "  filesystem: [{type: tmpfs, target: /tmp}]\n": False,
             "  namespaces: {mount: false}\n  network: {mode: host}\n": False}
    for extra, warned in cases.items():
        f = env / "bare.yaml"
        f.write_text(base + extra)
        assert main(["plan", "--no-refresh", str(f)]) == 0
        err = capsys.readouterr().err
        assert ("bare: filesystem: no filesystem entries and no rootfs: the environment starts in an "
                "empty root" in err and "hint: bind what the process needs" in err) is warned, (extra, err)


def test_prune_of_an_empty_directory_says_there_is_nothing(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A user review: `apply --prune` of an empty directory printed nothing at all."""
    empty = env / "empty"
    empty.mkdir()
    assert main(["apply", str(empty), "--prune", "-y"]) == 0
    assert capsys.readouterr().out == (f"No changes: {empty} has no manifests, and no environment "
                                       "applied from it is left\n")


def test_a_mount_that_hides_earlier_entries_is_warned_of(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A user review put a tmpfs at / after every other entry: run found no /bin/sh
    (exit 127) and nothing had said why."""
    m = env / "masked.yaml"
    m.write_text("apiVersion: vbdecl/v1\nkind: Environment\nmetadata:\n  name: masked\nspec:\n"
                 "  filesystem:\n    - {type: ro-bind, source: /usr, target: /usr}\n"
                 "    - {type: symlink, target: /bin, points_to: usr/bin}\n"
                 "    - {type: dir, target: /work}\n    - {type: tmpfs, target: /}\n")
    assert main(["plan", str(m)]) == 0
    err = capsys.readouterr().err
    assert f"warning: {m}: masked: filesystem[3]: this tmpfs at / hides what the entries before it " \
           "made there: /usr, /bin, /work\n" in err


def test_every_mount_warns_of_any_entry_it_hides_but_its_own_mount_point() -> None:
    """A review: a tmpfs at /tmp after `dir /tmp/a` said nothing (dir, chmod and
    remount-ro entries were never counted as hidden, even below the mount), nor did a
    bind-data over a file entry."""
    from vbdecl.cli.cmd_plan import cover_warnings

    def warned(*entries: dict[str, str]) -> list[str]:
        return [w["message"] for w in cover_warnings({"spec": {"filesystem": list(entries)}})]

    assert warned({"type": "dir", "target": "/tmp/a"}, {"type": "chmod", "target": "/tmp/b", "mode": "0700"},
                  {"type": "remount-ro", "target": "/tmp/c"}, {"type": "tmpfs", "target": "/tmp"}) == \
        ["this tmpfs at /tmp hides what the entries before it made there: /tmp/a, /tmp/b, /tmp/c"]
    for kind in ("proc", "dev", "mqueue", "overlay", "tmp-overlay", "ro-overlay", "bind", "ro-bind", "dev-bind"):
        assert warned({"type": "dir", "target": "/m/d"}, {"type": kind, "target": "/m"}) == \
            [f"this {kind} at /m hides what the entries before it made there: /m/d"], kind
    assert warned({"type": "file", "target": "/etc/token"}, {"type": "bind-data", "target": "/etc/token"}) == \
        ["this bind-data at /etc/token hides what the entries before it made there: /etc/token"]
    # the mount point itself: made for it (dir)
    assert warned({"type": "dir", "target": "/run/app"}, {"type": "tmpfs", "target": "/run/app"},
                  {"type": "dir", "target": "/run/app/x"}) == []
    # a chmod or remount-ro there acted on what the mount then hides (a review)
    assert warned({"type": "chmod", "target": "/tmp", "mode": "1777"}, {"type": "tmpfs", "target": "/tmp"}) == \
        ["this tmpfs at /tmp hides what the entries before it made there: /tmp"]
    assert warned({"type": "remount-ro", "target": "/x"}, {"type": "bind", "target": "/x"}) == \
        ["this bind at /x hides what the entries before it made there: /x"]


def test_apply_refuses_limits_this_machine_cannot_enforce_as_plan_does(
        env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A review removed limits.memory and kept memory_swap on cgroup v1: plan refused
    it, apply went on, and the environment was stuck (every later apply and recover
    failed). apply checks the limits as plan does, before any step."""
    m = env / "swap.yaml"
    m.write_text("apiVersion: vbdecl/v1\nkind: Environment\nmetadata:\n  name: swap\nspec:\n"
                 "  limits: {memory_swap: 8Mi}\n")
    if main(["plan", str(m)]) == 0:
        pytest.skip("this machine enforces memory_swap alone (cgroup v2)")
    said = capsys.readouterr().err
    assert main(["apply", str(m), "-y"]) == 1
    assert capsys.readouterr().err == said
    assert not (env / "state" / "envs" / "swap").exists()


def test_a_file_that_takes_over_an_environment_of_another_file_is_named(
        env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A new-user review: a second file naming an applied environment showed only its
    changes, no word that it takes the environment over from the first file."""
    _record_state(env, env / "web.yaml")
    assert main(["plan", str(env / "web.yaml")]) == 0
    assert "takes it over" not in capsys.readouterr().err
    (env / "other").mkdir()
    shutil.copy(env / "web.yaml", env / "other" / "web.yaml")
    assert main(["plan", str(env / "other" / "web.yaml")]) == 0
    err = capsys.readouterr().err
    assert f"applied from {env / 'web.yaml'} so far; applying {env / 'other' / 'web.yaml'} takes it over" in err


def test_plan_refuses_missing_overlay_lowers_as_apply_does(
        env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A review: a ro-overlay's missing lowers planned fine, then the apply failed
    half-way (openat2 ... ENOENT) and rolled back. Lowers (and what stands in the way
    of an upper or work directory) are checked as a bind's source is."""
    from vbdecl.ops import op_for

    (env / "l1").mkdir()
    (env / "afile").write_text("")
    m = env / "ov.yaml"
    m.write_text("apiVersion: vbdecl/v1\nkind: Environment\nmetadata:\n  name: ov\nspec:\n"
                 "  filesystem:\n    - {type: tmpfs, target: /tmp}\n"
                 "    - {type: ro-overlay, target: /o, lower: [./nolower1, ./nolower3]}\n")
    assert main(["plan", "--no-cache", str(m)]) == 1
    cap = capsys.readouterr()
    assert "+ mount[/o]" in cap.out
    assert f"ov: mount[/o]: overlay lower {env}/nolower1 does not exist" in cap.err, cap.err
    assert "hint: apply would refuse it, changing nothing" in cap.err
    ro, ovl = op_for("fs.ro-overlay"), op_for("fs.overlay")
    assert ro.preflight({"lower": [f"{env}/l1", f"{env}/afile"]}) == (
        f"overlay lower {env}/afile is not a directory: every lower directory must exist on the "
        "host: create it, or change the manifest")
    assert op_for("fs.tmp-overlay").preflight({"lower": [f"{env}/l1"]}) is None
    # upper and work are made when missing (their parents too), unless a file is in the way
    good = {"lower": [f"{env}/l1"], "upper": f"{env}/new/a/upper", "work": f"{env}/new/a/work"}
    assert ovl.preflight(good) is None
    assert ovl.preflight({**good, "upper": f"{env}/afile/upper"}) == (
        f"overlay upper {env}/afile/upper cannot be made: {env}/afile on its way is not a "
        "directory: move that away, or change the manifest")
    assert ovl.preflight({**good, "work": f"{env}/afile"}) == (
        f"overlay work {env}/afile is not a directory: move that away, or change the manifest")
    (env / "nolower1").mkdir()
    (env / "nolower3").mkdir()
    assert main(["plan", "--no-cache", str(m)]) == 0
    capsys.readouterr()


def test_plan_refuses_missing_bind_and_file_sources_as_apply_does(
        env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A new-user review: a file entry's missing source failed apply half-way (then
    rolled back), a bind's before any step, and plan exited 0 for both. plan now runs
    apply's preflight: the plan is shown, the missing sources are an error (exit 1),
    and -o saves nothing; an optional bind and an existing source are no error."""
    m = env / "src.yaml"
    text = ("apiVersion: vbdecl/v1\nkind: Environment\nmetadata:\n  name: src\nspec:\n"
            "  filesystem:\n    - {type: tmpfs, target: /tmp}\n"
            f"    - {{type: file, target: /tmp/app.conf, source: {env}/app.conf}}\n"
            f"    - {{type: bind, source: {env}/srcdata, target: /data}}\n"
            f"    - {{type: bind, source: {env}/maybe, target: /maybe, optional: true}}\n")
    m.write_text(text)
    out = env / "src.plan"
    assert main(["plan", "--no-cache", "-o", str(out), str(m)]) == 1
    cap = capsys.readouterr()
    assert "+ file[/tmp/app.conf]" in cap.out        # the plan is still shown
    assert f"src: file[/tmp/app.conf]: file source {env}/app.conf does not exist" in cap.err
    assert f"also src: mount[/data]: bind source {env}/srcdata does not exist" in cap.err
    assert "maybe" not in cap.err and "optional: true binds it" in cap.err
    assert "file source" in cap.err and "content:" in cap.err.split("also")[0]
    assert "hint: apply would refuse it, changing nothing" in cap.err
    assert not out.exists()
    # --no-refresh reads nothing of the host: no source checks either (a review)
    assert main(["plan", "--no-cache", "--no-refresh", str(m)]) == 0
    capsys.readouterr()
    # every environment's problems, in one error (a review: only the first one's)
    m.write_text(text + "---\n" + text.replace("name: src", "name: src2"))
    assert main(["plan", "--no-cache", str(m)]) == 1
    err = capsys.readouterr().err
    assert f"also src2: file[/tmp/app.conf]: file source {env}/app.conf does not exist" in err
    # --json: one document, the error in it (a contract audit: a second one followed it)
    assert main(["--json", "plan", "--no-cache", str(m)]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert [p["name"] for p in doc["plans"]] == ["src", "src2"]
    assert doc["error"]["exit_code"] == 1 and doc["error"]["where"] == str(m)
    assert doc["error"]["message"].startswith(f"src: file[/tmp/app.conf]: file source {env}/app.conf")
    # each problem in "problems", the hint only a hint (a UX review found the others in
    # the message here and in the hint of apply's error)
    assert [p["message"].split(": ")[:2] for p in doc["error"]["problems"]] == [
        ["src", "file[/tmp/app.conf]"], ["src", "mount[/data]"],
        ["src2", "file[/tmp/app.conf]"], ["src2", "mount[/data]"]]
    assert "also" not in doc["error"]["message"] + doc["error"]["hint"]
    m.write_text(text)
    assert main(["--json", "apply", "-y", str(m)]) == 1      # (before any step)
    (line,) = [json.loads(x) for x in capsys.readouterr().out.splitlines() if '"event": "error"' in x]
    assert line["error"]["hint"] == "nothing was changed"
    assert [p["where"] for p in line["error"]["problems"]] == ["file[/tmp/app.conf]", "mount[/data]"]
    (env / "app.conf").write_text("x\n")
    (env / "srcdata").mkdir()
    assert main(["plan", "--no-cache", str(m)]) == 0, capsys.readouterr().err
    (env / "app.conf").unlink()
    (env / "app.conf").mkdir()          # a directory is no file's source either
    assert main(["plan", "--no-cache", str(m)]) == 1
    assert f"file source {env}/app.conf is a directory" in capsys.readouterr().err


def test_a_file_source_this_user_cannot_read_is_a_plan_error(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unprivileged review: plan showed `+ file[/s]` for /etc/shadow; run failed (125)."""
    from vbdecl.ops import op_for

    source = env / "secret"
    source.write_text("x\n")
    params = {"target": "/s", "source": str(source), "content": None, "mode": None}
    assert op_for("fs.file").preflight(params) is None
    real_open = os.open

    def refused(path: str, *args: int, **kwargs: int) -> int:
        if path == str(source):
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refused)
    assert op_for("fs.file").preflight(params) == (f"file source {source} cannot be read by this user: make "
                                                   "it readable, or change the manifest")


def test_plan_refuses_a_missing_rootfs_and_seccomp_profile_as_apply_does(
        env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A user review: a missing rootfs directory or seccomp profile planned cleanly, then
    failed the apply (the rootfs with a raw "[Errno 2]")."""
    m = env / "pre.yaml"
    m.write_text("apiVersion: vbdecl/v1\nkind: Environment\nmetadata:\n  name: pre\nspec:\n"
                 f"  rootfs: {env}/root\n"
                 f"  security: {{seccomp: {{profile: {env}/p.json}}}}\n")
    assert main(["plan", "--no-cache", str(m)]) == 1
    err = capsys.readouterr().err
    assert f"pre: rootfs: rootfs {env}/root does not exist: create it" in err
    assert f"also pre: process: seccomp profile {env}/p.json does not exist" in err
    (env / "root").mkdir()
    (env / "p.json").write_text("{}")
    assert main(["plan", "--no-cache", str(m)]) == 0, capsys.readouterr().err


def test_apply_of_several_environments_checks_every_source_before_the_first(
        env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A user review: a file of two environments applied the first, then stopped on the
    second's missing bind source with "nothing was changed", naming neither of them."""
    m = env / "two.yaml"
    one = "apiVersion: vbdecl/v1\nkind: Environment\nmetadata:\n  name: {}\nspec:\n  filesystem: [{}]\n"
    m.write_text(one.format("first", "{type: tmpfs, target: /tmp}") + "---\n"
                 + one.format("second", f"{{type: ro-bind, source: {env}/gone, target: /usr}}"))
    assert main(["apply", "-y", str(m)]) == 1
    err = capsys.readouterr().err
    assert f"second: mount[/usr]: bind source {env}/gone does not exist" in err
    assert "hint: no environment was applied" in err
    assert not (env / "state" / "envs" / "first").exists()


@pytest.mark.parametrize("args", [["logs", "nothere"], ["rollback", "nothere", "--to", "1", "-y"],
                                  ["status", "nothere"]])
def test_an_unknown_environment_is_said_alike_by_every_command(
        env: Path, capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    """A user review: logs showed a state file's path ('no environment named'), rollback
    said 'has no revision 1'. (recover says so too, and exits 0: it stays safe to repeat.)"""
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "error: environment 'nothere' does not exist" in err and "state.json" not in err
    assert main(["recover", "nothere"]) == 0
    assert "nothing to recover for nothere (no environment of that name exists)" in capsys.readouterr().out


def test_a_pids_limit_no_live_environment_can_start_under_is_a_plan_error(
        env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A user review: limits.pids: 2 validated and planned; apply failed (fork EAGAIN)."""
    m = env / "few.yaml"
    text = ("apiVersion: vbdecl/v1\nkind: Environment\nmetadata:\n  name: few\nspec:\n"
            "  filesystem: [{type: tmpfs, target: /tmp}]\n  limits: {pids: PIDS}\n")
    m.write_text(text.replace("PIDS", "3"))
    assert main(["plan", "--no-cache", str(m)]) == 1
    err = capsys.readouterr().err
    assert f"error: {m}:7:18: few: limits.pids 3 is too few for a live environment" in err   # (an audit:
    assert "vbdecl run needs 2" in err                                          # no line:col)
    m.write_text(text.replace("PIDS", "4"))      # (the peak count: a review's busy machine failed 7 in 10)
    assert main(["plan", "--no-cache", str(m)]) == 1
    assert "set limits.pids to 5 or more" in capsys.readouterr().err
    m.write_text(text.replace("PIDS", "5"))
    assert main(["plan", "--no-cache", str(m)]) == 0, capsys.readouterr().err


def test_plan_refuses_a_bridge_other_environments_use_with_another_subnet(
        env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A user review: plan was clean, and apply failed at the bridge step."""
    from vbdecl.net import shared

    m = env / "b.yaml"
    m.write_text("apiVersion: vbdecl/v1\nkind: Environment\nmetadata:\n  name: b\nspec:\n"
                 "  network: {mode: bridge, bridge: tbr0, subnet: 10.99.2.0/24}\n")
    root = shared.state_root_of(str(env / "state"))
    root.mkdir(parents=True, exist_ok=True)
    with shared.locked(str(root)) as st:
        st["bridges"]["tbr0"] = {"users": ["vb-00000001"], "subnet": "10.99.1.0/24"}
    assert main(["plan", "--no-cache", str(m)]) == 1
    err = capsys.readouterr().err
    assert ("b: net.bridge[tbr0]: bridge tbr0 serves 10.99.1.0/24 for other environments, but this one "
            "asks for 10.99.2.0/24") in err
    assert main(["plan", "--no-cache", "--no-refresh", str(m)]) == 0
    # another MTU (a network review: larger frames between the two were dropped without a word)
    with shared.locked(str(root)) as st:
        st["bridges"]["tbr0"] = {"users": ["vb-00000001"], "subnet": "10.99.2.0/24", "mtu": 1500}
    assert main(["plan", "--no-cache", str(m)]) == 0
    capsys.readouterr()
    m.write_text(m.read_text().replace("subnet: 10.99.2.0/24", "subnet: 10.99.2.0/24, mtu: 1400"))
    assert main(["plan", "--no-cache", str(m)]) == 1
    assert ("b: net.bridge[tbr0]: bridge tbr0 carries mtu 1500 for other environments, but this one asks "
            "for 1400: use network.mtu 1500") in capsys.readouterr().err


def test_a_live_process_cannot_inherit_fds(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A security review: inherit_fds of a live environment's process handed it vbdecl's
    own lock, journal and log at those numbers (the process wrote into the journal and
    held the lock). plan and apply refuse it; vbdecl run keeps it."""
    m = env / "fds.yaml"
    m.write_text("apiVersion: vbdecl/v1\nkind: Environment\nmetadata:\n  name: fds\nspec:\n"
                 "  filesystem: [{type: tmpfs, target: /tmp}]\n"
                 "  process: {command: [/bin/true], inherit_fds: [3, 4]}\n")
    assert main(["plan", "--no-cache", str(m)]) == 1
    assert f"error: {m}:7:48: fds: process.inherit_fds [3, 4]: a live environment's process cannot " \
        "inherit fds" in capsys.readouterr().err


def test_a_manifest_from_a_pipe_is_read_once(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A day-2 review: `vbdecl diff <(git show HEAD~1:web.yaml) web.yaml` said "the file
    has no documents (it is empty)" (plan, diff and graph read the file twice). A pipe
    is read once, as stdin is, and named by its path."""
    text = (env / "web.yaml").read_bytes()
    ends: list[int] = []

    def piped(data: bytes = text) -> str:
        r, w = os.pipe()
        os.write(w, data)
        os.close(w)
        ends.append(r)
        return f"/dev/fd/{r}"

    try:
        assert main(["plan", "--no-refresh", piped()]) == 0
        assert "Plan: 20 to add" in capsys.readouterr().out
        assert main(["diff", piped(text.replace(b"hostname: web", b"hostname: www")),
                     str(env / "web.yaml")]) == 0
        assert "hostname" in capsys.readouterr().out
        assert main(["graph", piped()]) == 0
        assert "net.veth" in capsys.readouterr().out
        assert main(["plan", "--no-refresh", piped(b"")]) == 1
        assert "/dev/fd/" in capsys.readouterr().err
    finally:
        for fd in ends:
            os.close(fd)


def test_an_apply_tells_a_manifest_edited_while_it_waited_for_the_lock(env: Path) -> None:
    """A day-2 review edited a manifest while its apply waited for the lock: the apply
    used the file as read and said the environment "matches its manifest". It warns."""
    m = env / "web.yaml"
    (src,) = sources.load(str(m))
    assert not sources.edited_since(src)
    m.write_text(m.read_text().replace("hostname: web", "hostname: www"))
    assert sources.edited_since(src)
    m.write_text(m.read_text().replace("hostname: www", "hostname: web"))
    assert not sources.edited_since(src)
    m.unlink()
    assert sources.edited_since(src)
    assert not sources.edited_since(sources.Source(src.plan, None, "<stdin>"))


def test_plan_warns_and_apply_refuses_a_caller_who_cannot_keep_a_live_environment(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A review: the live-environment preflight made a user's `plan --detailed-exitcode`
    exit 1 (plan as a user, apply as root). It is about who runs vbdecl: plan warns."""
    from vbdecl.cli.cmd_plan import source_problems
    from vbdecl.ops.env import Namespaces
    from vbdecl.plan.diff import Change

    monkeypatch.setattr(Namespaces, "preflight", lambda self, params: "a live environment needs root")
    found = [Change("+", "env", "env.namespaces", action={"id": "env", "kind": "env.namespaces", "params": {}})]
    assert source_problems(found, "web") == []
    assert capsys.readouterr().err == "warning: env: a live environment needs root\n"


def test_status_of_a_destroyed_environment_says_it_was_destroyed(
        env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A UX review: status said 'does not exist / vbdecl ls lists the environments' of
    an environment ls hides (ls -a shows it) and whose history and logs are kept."""
    revisions = env / "state" / "envs" / "gone" / "revisions"
    revisions.mkdir(parents=True)
    (revisions / "1.json").write_text("{}")
    assert main(["status", "gone"]) == 1
    err = capsys.readouterr().err
    assert "error: environment 'gone' was destroyed" in err
    for told in ("vbdecl ls -a", "vbdecl history gone", "vbdecl destroy --purge gone"):
        assert told in err


def test_diff_raw_of_revisions_shows_modes_in_octal_and_no_secret_text(
        env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A UX review: `diff --raw NAME --from 1 --to 2` showed "mode": 420 and a
    bind-data's text in full, which a plan never shows."""
    m = env / "sec.yaml"
    text = ("apiVersion: vbdecl/v1\nkind: Environment\nmetadata: {name: sec}\nspec:\n  filesystem:\n"
            "    - {type: bind-data, target: /etc/token, content: TOKEN, mode: \"0640\"}\n"
            "    - {type: file, target: /etc/motd, content: hello}\n")
    m.write_text(text.replace("TOKEN", "s3cret-one"))
    (p1,) = plans_for_file(str(m))
    m.write_text(text.replace("TOKEN", "s3cret-two"))
    (p2,) = plans_for_file(str(m))
    revs = env / "state" / "envs" / "sec" / "revisions"
    revs.mkdir(parents=True)
    for n, plan in ((1, p1), (2, p2)):
        (revs / f"{n}.json").write_text(json.dumps({"revision": n, "plan": plan}))
    assert main(["diff", "sec", "--from", "1", "--to", "2", "--raw"]) == 0
    out = capsys.readouterr().out
    assert "s3cret" not in out and "hello" not in out
    assert '"mode": "0640"' in out and '"bytes": 10,' in out
    assert f'-          "sha256": "{hashlib.sha256(b"s3cret-one").hexdigest()}"' in out


def test_plan_json_carries_the_manifest_warnings(tmp_path: Path) -> None:
    """A review: `plan --json` of a bridge with nat: false and no dns printed its warning
    on stderr only, where a script does not look."""
    m = tmp_path / "w.yaml"
    m.write_text("apiVersion: vbdecl/v1\nkind: Environment\nmetadata: {name: w}\nspec:\n"
                 "  filesystem: [{type: ro-bind, source: /usr, target: /usr}]\n"
                 "  network: {mode: bridge, bridge: vbtw0, subnet: 10.231.9.0/24, nat: false}\n")
    out = subprocess.run([sys.executable, "-m", "vbdecl", "--state-dir", str(tmp_path / "s"), "--json", "plan",
                          str(m), "--no-refresh"], capture_output=True, text=True,
                         env={**os.environ, "VBDECL_CACHE_DIR": str(tmp_path / "c")})
    assert out.returncode == 0, out.stderr
    warnings = json.loads(out.stdout)["warnings"]
    assert [(w["name"], w["file"], w["where"]) for w in warnings] == [("w", str(m), "network")]
    assert "nat is false and dns is not set" in warnings[0]["message"] and warnings[0]["hint"]


def test_an_environment_deleted_or_renamed_in_its_file_is_said_to_stay(
        env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A day-2 review: deleting an environment from its file, or renaming it there, left
    it running without a word from plan or apply (only `apply DIR --prune` saw it)."""
    _record_state(env, env / "web.yaml")
    manifest = env / "web.yaml"
    manifest.write_text(manifest.read_text().replace("name: web", "name: web2"))
    assert main(["plan", "--no-refresh", str(manifest)]) == 0
    err = capsys.readouterr().err
    assert f"warning: {manifest}: web was applied from {manifest}, which no longer holds it: it stays " \
           "as it is\n  hint: `vbdecl destroy web` removes it" in err, err
    assert main(["--json", "plan", "--no-refresh", str(env)]) == 0
    warnings = json.loads(capsys.readouterr().out)["warnings"]
    assert [(w["name"], w["where"]) for w in warnings] == [("web", "metadata.name")]
    assert f"`vbdecl apply {env} --prune` removes" in warnings[0]["hint"]
    # with --prune the directory's plan shows it as going: no warning then
    assert main(["plan", "--no-refresh", "--prune", str(env)]) == 0
    assert "no longer holds it" not in capsys.readouterr().err


def test_a_name_command_given_a_file_and_history_of_an_unknown_name_say_so(
        env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A day-2 review gave `status` a manifest file (destroy takes one) and was told only
    of the name pattern; `history` of an unknown name said "has no history", where the
    other commands say it does not exist."""
    for command in ("status", "history", "logs"):
        assert main([command, str(env / "web.yaml")]) == 1
        err = capsys.readouterr().err
        assert "looks like a file: give the environment's name (its metadata.name)" in err, (command, err)
    assert main(["history", "nosuch"]) == 1
    assert "environment 'nosuch' does not exist" in capsys.readouterr().err


def test_a_damaged_state_of_another_environment_does_not_stop_a_plan(
        env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The review of the left-out warning: it read every environment's state, and one
    that could not be parsed stopped the plan of any other manifest."""
    broken = env / "state" / "envs" / "broken"
    broken.mkdir(parents=True)
    (broken / "state.json").write_text("{not json")
    assert main(["plan", "--no-refresh", str(env / "web.yaml")]) == 0, capsys.readouterr().err


def test_history_of_an_environment_whose_revisions_were_removed_says_so(
        env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _record_state(env, env / "web.yaml")
    assert main(["history", "web"]) == 1
    err = capsys.readouterr().err
    assert "environment 'web' has no revisions left" in err and "vbdecl status web" in err
