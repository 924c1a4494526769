"""The bad-input corpus: every broken manifest under tests/bad gives its precise error.

Each file is checked through the real CLI entry (``vbdecl validate``, in
process for speed; a few through a real subprocess): exit 1, the expected
``file:line:col``, the expected message fragment, and never a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vbdecl.cli.main import main

BAD = Path(__file__).resolve().parent.parent / "bad"
ROOT = BAD.parent.parent


def _expected() -> list[tuple[str, str, str]]:
    rows = []
    for line in (BAD / "EXPECTED.tsv").read_text().splitlines():
        if line and not line.startswith("#"):
            name, loc, fragment = line.split("\t")
            rows.append((name, loc, fragment))
    return rows


EXPECTED = _expected()


def test_corpus_is_large_and_complete() -> None:
    files = {p.name for p in BAD.glob("*.yaml")}
    listed = {name for name, _loc, _frag in EXPECTED}
    assert files == listed, f"files without expectation: {files - listed}; missing files: {listed - files}"
    assert len(listed) >= 100


@pytest.mark.parametrize(("name", "loc", "fragment"), EXPECTED, ids=[r[0] for r in EXPECTED])
def test_bad_manifest(name: str, loc: str, fragment: str, capsys: pytest.CaptureFixture[str],
                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(BAD)
    rc = main(["validate", name])
    out, err = capsys.readouterr()
    assert rc == 1
    assert "Traceback" not in out + err and "this is a bug in vbdecl" not in err
    problems = err.split(f"\n{name}:")
    problems[0] = problems[0].removeprefix(f"{name}:")
    located = [p for p in problems if p.startswith(f"{loc}:")]
    assert located, f"no problem at {name}:{loc}:\n{err}"
    assert any(fragment in p for p in located), f"{fragment!r} not at {loc}:\n{err}"


def test_json_output(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(BAD)
    rc = main(["validate", "--json", "net-address-outside.yaml", str(ROOT / "manifests" / "hello.yaml")])
    out = json.loads(capsys.readouterr().out)
    assert rc == 1 and out["ok"] is False
    bad, good = out["files"]
    assert bad["problems"][0]["where"] == "net-address-outside.yaml:6:49"
    assert "outside the subnet" in bad["problems"][0]["message"]
    assert bad["problems"][0]["hint"]
    assert good == {"path": str(ROOT / "manifests" / "hello.yaml"), "ok": True,
                    "environments": ["hello"], "problems": []}


def test_all_problems_of_a_file_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "many.yaml"
    f.write_text("apiVersion: vbdecl/v1\nkind: Environment\nmetadata: {name: Many}\nspec:\n"
                 "  hostnme: x\n  filesystem:\n    - {type: tmpfs, target: tmp}\n"
                 "    - {type: dir, target: /d, mode: 755}\n  limits: {memory: 1Xi}\n"
                 "---\napiVersion: vbdecl/v1\nkind: Environment\nmetadata: {name: ok}\nspec: {hostname: 5}\n")
    assert main(["validate", str(f)]) == 1
    err = capsys.readouterr().err
    for loc in ("3:18", "5:3", "7:29", "8:37", "9:20", "14:18"):
        assert f"{f}:{loc}:" in err, (loc, err)
    assert "6 problems in 1 of 1 file" in err


def _cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "vbdecl", *args], cwd=BAD, input=stdin,
                          capture_output=True, timeout=60)


def test_real_process_bad_inputs_no_traceback() -> None:
    names = ["yaml-billion-laughs.yaml", "bytes-nul.yaml", "syntax-tab-indent.yaml",
             "fs-mode-unquoted.yaml", "yaml-recursive-alias.yaml"]
    p = _cli("validate", *names)
    err = p.stderr.decode()
    assert p.returncode == 1
    assert "Traceback" not in err
    for name in names:
        assert f"{name}:" in err
    assert "5 problems in 5 of 5 files" in err


def test_ten_megabyte_file_is_refused_fast(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with open(big, "w") as f:
        f.write("apiVersion: vbdecl/v1\nkind: Environment\nmetadata: {name: big}\nspec:\n  filesystem:\n")
        line = "    - {type: tmpfs, target: /t, size: 64Mi}\n"
        f.write(line * (10 * 1024 * 1024 // len(line) + 1))
    assert big.stat().st_size > 10 * 1000 * 1000
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "vbdecl", "validate", str(big)], capture_output=True, timeout=60)
    elapsed = time.monotonic() - t0
    err = p.stderr.decode()
    assert p.returncode == 1
    assert f"{big}:1:1: the file is {big.stat().st_size} bytes; the limit is 8 MiB" in err
    assert "Traceback" not in err
    assert elapsed < 5


def test_stdin_and_oversized_stdin() -> None:
    good = (ROOT / "manifests" / "hello.yaml").read_bytes()
    assert _cli("validate", "-", stdin=good).returncode == 0
    p = _cli("validate", "-", stdin=b"a: 1\n" * (2 * 1024 * 1024))
    assert p.returncode == 1 and b"larger than the limit" in p.stderr and b"Traceback" not in p.stderr


def test_missing_file_and_empty_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 1
    err = capsys.readouterr().err
    assert "nope.yaml: cannot read the file: No such file or directory" in err
    assert main(["validate", str(tmp_path)]) == 1
    assert "no manifest files" in capsys.readouterr().err


SAME_WITH_RUAMEL = [r for r in EXPECTED if not r[0].startswith(("syntax-", "yaml-deep", "yaml-bad-int"))]


def test_ruamel_loader_agrees(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without libyaml (VBDECL_YAML=ruamel) the same problems come out at the same places."""
    from vbdecl.model.load import load_path

    monkeypatch.chdir(BAD)
    for name, loc, fragment in SAME_WITH_RUAMEL[::3]:
        monkeypatch.delenv("VBDECL_YAML", raising=False)
        fast = [str(p) for p in load_path(name).problems]
        monkeypatch.setenv("VBDECL_YAML", "ruamel")
        slow = [str(p) for p in load_path(name).problems]
        assert fast == slow, name
        assert any(s.startswith(f"{name}:{loc}:") and fragment in s for s in slow), name
    monkeypatch.setenv("VBDECL_YAML", "ruamel")
    assert not load_path(str(ROOT / "manifests" / "service.yaml")).problems


def test_manifests_directory_validates() -> None:
    p = subprocess.run([sys.executable, "-m", "vbdecl", "validate", "manifests/"], cwd=ROOT,
                       capture_output=True, timeout=60, env={**os.environ})
    assert p.returncode == 0, p.stderr.decode()
    out = p.stdout.decode()
    for name in ("hello", "devshell", "service", "build"):
        assert f"manifests/{name}.yaml: ok ({name})" in out


@pytest.mark.parametrize("command", ["validate", "schema", "doctor"])
def test_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "Exit code" in out and "--json" in out


def test_ruamel_loader_reports_every_syntax_error_as_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without libyaml the files with syntax errors are problems too, at the line
    where to look: ruamel failed on a %YAML directive with an IndexError (a crash
    report), and an unclosed bracket or quote is reported where it opens."""
    from vbdecl.model.load import load_path

    monkeypatch.chdir(BAD)
    monkeypatch.setenv("VBDECL_YAML", "ruamel")
    for name, loc, _fragment in [r for r in EXPECTED if r[0].startswith("syntax-")]:
        problems = [str(p) for p in load_path(name).problems]
        assert len(problems) == 1 and problems[0].startswith(f"{name}:"), (name, problems)
        if "unclosed" in name:
            assert problems[0].startswith(f"{name}:{loc}:"), problems
