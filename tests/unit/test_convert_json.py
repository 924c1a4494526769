"""``vbdecl --json convert``: JSON in both directions, the same content as the text forms."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from vbdecl.cli.main import main

ARGS = ["--ro-bind", "/usr", "/usr", "--proc", "/proc", "--unshare-pid", "true"]


def test_json_convert_from_and_to_bwrap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["convert", "--from-bwrap", "--", *ARGS]) == 0
    text = capsys.readouterr().out
    assert main(["--json", "convert", "--from-bwrap", "--", *ARGS]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["kind"] == "Environment" and manifest["spec"]["process"]["command"] == ["true"]
    (tmp_path / "env.yaml").write_text(text)
    (tmp_path / "env.json.yaml").write_text(json.dumps(manifest))     # JSON is YAML too
    outs = []
    for name in ("env.yaml", "env.json.yaml"):
        assert main(["convert", "--to-bwrap", str(tmp_path / name)]) == 0
        line = capsys.readouterr().out
        assert main(["--json", "convert", "--to-bwrap", str(tmp_path / name)]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["argv"] == shlex.split(line) and doc["name"] == "vb"
        outs.append(doc["argv"])
    assert outs[0] == outs[1]


def _refused(path: Path, capsys: pytest.CaptureFixture[str], *problems: str) -> str:
    """`convert --to-bwrap PATH` fails, names each of ``problems`` of environment web,
    and prints no command line; its stderr."""
    assert main(["convert", "--to-bwrap", str(path)]) == 1
    out, err = capsys.readouterr()
    for words in problems:
        assert f"{path}: environment web: {words}" in err, (words, err)
    assert out == ""
    return err


def test_to_bwrap_reports_everything_bubblewrap_cannot_express_at_once(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "env.yaml"
    path.write_text("apiVersion: vbdecl/v1\nkind: Environment\nmetadata: {name: web}\nspec:\n"
                    "  rootfs: /srv/root\n  network: {mode: bridge}\n  limits: {memory: 64Mi}\n"
                    "  filesystem:\n    - {type: file, target: /etc/motd, content: hi}\n"
                    "  security: {landlock: {read: [/usr]}}\n  process: {command: [\"true\"]}\n"
                    "---\napiVersion: vbdecl/v1\nkind: Environment\nmetadata: {name: db}\nspec:\n"
                    "  security: {seccomp: 'off'}\n  process: {command: [\"true\"]}\n")
    err = _refused(path, capsys, "spec.rootfs", "network.mode bridge", "limits", "filesystem file /etc/motd",
                   "security.seccomp", "security.landlock")
    assert "6 things bubblewrap cannot express" in err and "vbdecl run" in err
    assert "environment db" not in err      # nothing half done
    # with --json the reasons are in the error's problems (a day-2 review found them only
    # on stderr, as text)
    assert main(["--json", "convert", "--to-bwrap", str(path)]) == 1
    out, err = capsys.readouterr()
    error = json.loads(out.splitlines()[-1])["error"]
    assert error["message"].startswith("6 things bubblewrap cannot express")
    assert [p["where"] for p in error["problems"][1:]] == [f"{path}: environment web"] * 6
    assert any("security.landlock" in p["message"] for p in error["problems"])


def test_seccomp_out_writes_a_program_for_each_environment_with_a_profile(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "envs.yaml"
    path.write_text("apiVersion: vbdecl/v1\nkind: Environment\nmetadata: {name: web}\nspec:\n"
                    "  process: {command: [\"true\"]}\n"
                    "---\napiVersion: vbdecl/v1\nkind: Environment\nmetadata: {name: db}\nspec:\n"
                    "  security: {seccomp: {deny: [keyctl], errno: EACCES}}\n  process: {command: [\"true\"]}\n"
                    "---\napiVersion: vbdecl/v1\nkind: Environment\nmetadata: {name: off}\nspec:\n"
                    "  security: {seccomp: 'off'}\n  process: {command: [\"true\"]}\n")
    out = tmp_path / "p.bpf"
    assert main(["--json", "convert", "--to-bwrap", str(path), "--seccomp-out", str(out)]) == 0
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [d["name"] for d in docs] == ["web", "db", "off"]
    for d in docs[:2]:
        program = Path(d["fds"]["3"])
        assert program == tmp_path / f"p.bpf.{d['name']}" and program.stat().st_size % 8 == 0
        assert d["argv"][d["argv"].index("--seccomp") + 1] == "3"
    assert docs[2]["fds"] == {} and "--seccomp" not in docs[2]["argv"]
    assert (tmp_path / "p.bpf.web").read_bytes() != (tmp_path / "p.bpf.db").read_bytes()

    assert main(["convert", "--from-bwrap", "--seccomp-out", str(out), "--", "true"]) == 1
    assert "--seccomp-out goes with --to-bwrap" in capsys.readouterr().err


def test_seccomp_out_writes_through_a_link_as_any_output(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A review: the program replaced whatever was at the path by a rename (a link,
    a device: /dev/full became a regular file)."""
    path = tmp_path / "env.yaml"
    path.write_text("apiVersion: vbdecl/v1\nkind: Environment\nmetadata: {name: web}\nspec:\n"
                    "  process: {command: [\"true\"]}\n")
    target = tmp_path / "real.bpf"
    target.write_bytes(b"")
    link = tmp_path / "link.bpf"
    link.symlink_to(target)
    assert main(["convert", "--to-bwrap", str(path), "--seccomp-out", str(link)]) == 0
    assert link.is_symlink() and target.stat().st_size > 0 and target.stat().st_size % 8 == 0


def test_to_bwrap_warns_when_bubblewrap_leaves_a_larger_bounding_set(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A new-user review, as root: `vbdecl run` of capabilities {drop: [ALL], add:
    [NET_BIND_SERVICE]} left CapBnd 0x400, the printed bwrap command the whole bounding
    set (bubblewrap narrows it only in a user namespace). --to-bwrap says so on stderr;
    the command line itself is unchanged."""
    import os

    from vbdecl.model.names import CAPABILITIES
    from vbdecl.vb import manifest as vbm
    from vbdecl.vb import parse as vbp

    full = sum(1 << bit for bit in CAPABILITIES.values())
    root = {"CapInh": 0, "CapPrm": full, "CapEff": full, "CapBnd": full, "CapAmb": 0}
    monkeypatch.setattr(os, "getuid", lambda: 0)
    monkeypatch.setattr(vbm.os, "geteuid", lambda: 0)
    monkeypatch.setattr(vbp, "caller_cap_masks", lambda: dict(root))
    monkeypatch.setattr(vbp, "_caller_caps", lambda known: set(known))
    head = "apiVersion: vbdecl/v1\nkind: Environment\nmetadata: {name: caps}\nspec:\n" \
           "  process: {command: [/bin/true]}\n"
    cases = {
        "  security: {seccomp: 'off', capabilities: {drop: [ALL], add: [NET_BIND_SERVICE]}}\n": True,
        "  namespaces: {user: true}\n"
        "  security: {seccomp: 'off', capabilities: {drop: [ALL], add: [NET_BIND_SERVICE]}}\n": False,
        # vbdecl's default set narrows the bounding set too
        "  security: {seccomp: 'off'}\n": True,
    }
    for extra, warned in cases.items():
        path = tmp_path / "caps.yaml"
        path.write_text(head + extra)
        assert main(["convert", "--to-bwrap", str(path)]) == 0
        out, err = capsys.readouterr()
        assert out.startswith("bwrap ") and out[-1] == "\n"
        said = (f"warning: {path}: environment caps: the bubblewrap command leaves the bounding set at "
                "all, where `vbdecl run` of this manifest keeps only ")
        assert (said in err) is warned, (extra, err)
        assert ("warning" in err) is warned, (extra, err)
        assert ("keeps only NET_BIND_SERVICE in it" in err) is ("NET_BIND" in extra and warned)
        assert main(["--json", "convert", "--to-bwrap", str(path)]) == 0
        out, err = capsys.readouterr()
        assert json.loads(out)["name"] == "caps" and (said in err) is warned


def test_to_bwrap_refuses_what_its_line_would_drop_or_mean_otherwise(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A conversion review: these came out of --to-bwrap without a word, and the line
    ran otherwise. Worst: a user namespace mapping root inside to uid 1234 became a
    line that, run as root, maps host root (bubblewrap maps the caller's ids only)."""
    import os

    me = f"{os.getuid()}:{os.getgid()}"
    path = tmp_path / "env.yaml"
    path.write_text("apiVersion: vbdecl/v1\nkind: Environment\nmetadata: {name: web}\nspec:\n"
                    "  namespaces: {user: true}\n"
                    "  idmap: {uid: [{inside: 0, outside: 1234}], gid: [{inside: 0, outside: 1234}]}\n"
                    "  limits: {rlimits: {nofile: 64}}\n  network: {dns: [192.0.2.53], mtu: 1400}\n"
                    "  process: {command: [\"true\"], tty: true}\n"
                    "  security: {seccomp: 'off', no_new_privs: false}\n"
                    "  status: {lock_file: /run/x.lock, events: /run/x.events}\n")
    _refused(path, capsys, f"idmap outside 1234:1234: bubblewrap maps the ids of the user who runs it ({me} here)",
             "security.no_new_privs false", "status.lock_file", "status.events", "network.dns/hosts",
             "network.mtu", "process.tty true", "limits.rlimits")
    # the caller's own ids are what bubblewrap maps: that line is written
    path.write_text(path.read_text().split("  idmap")[0].replace("user: true}", "user: true}\n  idmap: "
                    f"{{uid: [{{inside: 0, outside: {os.getuid()}}}], gid: [{{inside: 0, outside: {os.getgid()}}}]}}")
                    + "  process: {command: [\"true\"]}\n  security: {seccomp: 'off'}\n")
    assert main(["convert", "--to-bwrap", str(path)]) == 0, capsys.readouterr().err
    assert " --uid 0 --gid 0 " in capsys.readouterr().out


def test_from_bwrap_refuses_what_no_manifest_can_hold(capsys: pytest.CaptureFixture[str]) -> None:
    """A conversion review: a path with a byte that is not UTF-8 and a relative --chdir
    gave manifests that did not load; a newline in a path broke the header comment."""
    bad = "/x/bad" + b"\xff".decode("utf-8", "surrogateescape")
    for args, words in ((["--bind", bad, "/mnt", "true"], "spec.filesystem[0].source: /x/bad\\xff is not UTF-8"),
                        (["--ro-bind", "/usr", "/usr", "--chdir", "tmp", "true"], "--chdir tmp: a manifest's "
                         "process.cwd is absolute")):
        for json_out in ([], ["--json"]):
            assert main([*json_out, "convert", "--from-bwrap", "--", *args]) == 1
            out, err = capsys.readouterr()
            assert words in err, err
            assert out == "" if not json_out else json.loads(out)["error"]["exit_code"] == 1
    assert main(["convert", "--from-bwrap", "--", "--ro-bind", "/", "/", "--tmpfs", "/mnt", "--dir",
                 "/mnt/new\nline/x", "true"]) == 0
    text = capsys.readouterr().out
    from vbdecl.model.load import load_text

    assert load_text(text)[0].spec.filesystem[2].target == "/mnt/new\nline/x"


def _to_bwrap(tmp_path: Path, capsys: pytest.CaptureFixture[str], entries: str) -> tuple[Path, str, str]:
    """`convert --to-bwrap` of environment web with the filesystem ``entries``, which
    succeeds: (the manifest's path, stdout, stderr)."""
    path = tmp_path / "env.yaml"
    path.write_text("apiVersion: vbdecl/v1\nkind: Environment\nmetadata: {name: web}\nspec:\n  filesystem:\n"
                    f"{entries}  process: {{command: [\"true\"]}}\n  security: {{seccomp: 'off'}}\n")
    assert main(["convert", "--to-bwrap", str(path)]) == 0
    out, err = capsys.readouterr()
    return path, out, err


def test_to_bwrap_warns_of_a_dir_mode_bubblewrap_would_not_set(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A conversion review: tmpfs /tmp then dir /tmp 0700 gave `--perms 0700 --dir /tmp`,
    which leaves /tmp 0755 (bubblewrap's --perms is for a directory --dir creates)."""
    path, out, err = _to_bwrap(tmp_path, capsys, "    - {type: tmpfs, target: /tmp}\n"
                               "    - {type: dir, target: /tmp, mode: '0700'}\n    - {type: dir, target: /new, mode: '0700'}\n"
                               "    - {type: dir, target: /etc/sub}\n    - {type: dir, target: /etc, mode: '0700'}\n")
    assert "--perms 0700 --dir /tmp" in out
    assert (f"warning: {path}: environment web: dir /tmp: an earlier entry made it, and bubblewrap's --perms "
            "sets the mode only of a directory --dir creates") in err and "/new" not in err
    assert "dir /etc: an earlier entry made it" in err      # (a parent it made: a review)


def test_bwrap_arguments_without_dashes_are_told_to_go_after_them(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["convert", "--from-bwrap", *ARGS])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "error: unknown option --ro-bind" in err
    assert "hint: put bubblewrap's arguments after --: vbdecl convert --from-bwrap -- ARGS" in err


def test_to_bwrap_refuses_arguments_after_the_manifest(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "env.yaml").write_text("apiVersion: vbdecl/v1\nkind: Environment\nmetadata: {name: web}\n"
                                       "spec:\n  security: {seccomp: 'off'}\n")
    for extra in (["--", "extra", "junk"], ["extra"]):
        assert main(["convert", "--to-bwrap", str(tmp_path / "env.yaml"), *extra]) == 1
        out, err = capsys.readouterr()
        assert out == "" and "error: --to-bwrap takes only the manifest FILE, not extra" in err


def test_to_bwrap_warns_that_bubblewrap_s_proc_shows_the_host_s_keys_and_timers(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, out, err = _to_bwrap(tmp_path, capsys, "    - {type: proc, target: /proc}\n")
    assert "--proc /proc" in out
    assert (f"warning: {path}: environment web: proc /proc: bubblewrap's --proc shows the host's keys and "
            "timer_list there, which `vbdecl run` of this manifest shows empty") in err


def test_from_bwrap_takes_the_environment_s_name(capsys: pytest.CaptureFixture[str]) -> None:
    """A review: the manifest was always environment vb, to be renamed by hand."""
    assert main(["convert", "--from-bwrap", "--name", "web", "--", *ARGS]) == 0
    assert "metadata:\n  name: web\n" in capsys.readouterr().out
    assert main(["--json", "convert", "--from-bwrap", "--name", "web", "--", *ARGS]) == 0
    assert json.loads(capsys.readouterr().out)["metadata"]["name"] == "web"
    for args, said in ((["--from-bwrap", "--name", "Web!", "--", *ARGS], "invalid environment name 'Web!'"),
                       (["--to-bwrap", "env.yaml", "--name", "web"], "--name goes with --from-bwrap")):
        assert main(["convert", *args]) == 1
        assert said in capsys.readouterr().err
