"""YAML loading: positions, YAML 1.2 scalars, multi-document files, defences."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from vbdecl.errors import ManifestError
from vbdecl.model.load import load_file, load_path, load_text
from vbdecl.model.yamlsafe import resolve_plain

HEAD = "apiVersion: vbdecl/v1\nkind: Environment\nmetadata: {name: %s}\n"


@pytest.mark.parametrize(("text", "value"), [
    ("yes", "yes"), ("no", "no"), ("on", "on"), ("0755", 755), ("0o755", 0o755), ("0x1f", 31),
    ("1.5", 1.5), ("true", True), ("False", False), ("~", None), ("null", None), ("", None),
    ("1_000", "1_000"), ("64Mi", "64Mi"), ("-3", -3), ("1e3", 1000.0), (".inf", float("inf")),
])
def test_yaml_12_core_scalars(text: str, value: object) -> None:
    assert resolve_plain(text) == value


def test_quoted_and_tagged_scalars_stay_strings() -> None:
    (env,) = load_text(HEAD % "t" + "spec:\n  process:\n    env: {A: '0755', B: !!str 0755, C: \"yes\"}\n"
                       "  filesystem: [{type: dir, target: /d, mode: !!str 0755}]\n")
    assert env.spec.process.env == {"A": "0755", "B": "0755", "C": "yes"}
    assert env.spec.filesystem[0].mode == 0o755  # type: ignore[union-attr]


def test_multi_document_file(tmp_path: Path) -> None:
    f = tmp_path / "two.yaml"
    f.write_text("---\n" + HEAD % "one" + "---\n" + HEAD % "two" + "spec: {hostname: two}\n")
    envs = load_file(f)
    assert [e.name for e in envs] == ["one", "two"]
    assert envs[1].spec.hostname == "two"


def test_load_file_raises_with_every_problem(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(HEAD % "x" + "spec:\n  hostnam: a\n  limits: {pids: 0}\n---\n" + HEAD % "Y")
    with pytest.raises(ManifestError) as err:
        load_file(f)
    wheres = [p.where for p in err.value.problems]
    assert wheres == [f"{f}:5:3", f"{f}:6:18", f"{f}:10:18"]
    assert "did you mean 'hostname'" in str(err.value)
    assert isinstance(err.value, ValueError)


def test_a_name_used_twice_is_said_once_and_with_the_documents_other_problems(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A contract review: a name used twice in one file was said three times (once by
    the file's check, twice by the check across files), and not at all when the first
    document had another problem."""
    from vbdecl.cli.main import main

    f = tmp_path / "dup.yaml"
    f.write_text(HEAD % "one" + "spec: {hostnam: a}\n---\n" + HEAD % "two" + "---\n" + HEAD % "one")
    problems = [(p.where, p.message) for p in load_path(str(f)).problems]
    assert problems == [(f"{f}:4:8", "unknown key 'hostnam' in spec"),
                        (f"{f}:12:18", "environment 'one' is defined twice in this file (documents 1 and 3)")]
    f.write_text(HEAD % "one" + "---\n" + HEAD % "one")
    for argv in (["validate", str(f)], ["validate", str(f), str(f)]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.count("'one'") == 1 and "1 problem in 1 of" in err, err
    # and in another file too: once at each position (the file's own second use: the
    # file's check; each file's first: the check across files)
    g = tmp_path / "other.yaml"
    g.write_text(HEAD % "one")
    assert main(["validate", str(f), str(g)]) == 1
    err = capsys.readouterr().err
    assert [line.split(": ", 1)[0] for line in err.splitlines() if "'one'" in line] == \
        [f"{f}:7:18", f"{f}:3:18", f"{g}:3:18"], err


def test_merge_keys_and_anchors() -> None:
    (env,) = load_text(HEAD % "m" + "spec:\n  filesystem:\n"
                       "    - &ro {type: ro-bind, source: /usr, target: /usr}\n"
                       "    - {<<: *ro, target: /opt}\n")
    assert [e.target for e in env.spec.filesystem] == ["/usr", "/opt"]


def test_duplicate_keys_are_all_reported() -> None:
    r = load_path("<s>", (HEAD % "d" + "spec:\n  hostname: a\n  hostname: b\n  hostname: c\n").encode())
    assert [p.where for p in r.problems] == ["<s>:6:3", "<s>:7:3"]
    assert all("first at line 5" in p.message for p in r.problems)


def test_billion_laughs_fails_fast_in_bounded_memory() -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i, name in enumerate("bcdefghijk"):
        prev = "abcdefghijk"[i]
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.monotonic()
    r = load_path("<bomb>", "\n".join(lines).encode())
    assert time.monotonic() - t0 < 2
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KiB
    assert "alias bomb" in r.problems[0].message


def test_bom_is_accepted_and_crlf_positions() -> None:
    data = ("\ufeff" + HEAD % "b" + "spec:\r\n  hostnme: x\r\n").encode()
    r = load_path("<crlf>", data)
    assert [p.where for p in r.problems] == ["<crlf>:5:3"]


def test_big_manifest_is_fast() -> None:
    body = "".join(f"    - {{type: tmpfs, target: /t{i}, size: 1Mi, mode: '0755'}}\n" for i in range(1000))
    t0 = time.perf_counter()
    (env,) = load_text(HEAD % "big" + "spec:\n  filesystem:\n" + body)
    elapsed = time.perf_counter() - t0
    assert len(env.spec.filesystem) == 1000
    assert elapsed < 2.0  # the benchmark holds the real target (0.5 s end to end)


# --- fuzz: no input makes the loader raise or crash ----------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

VALID = (HEAD % "fuzz" + "spec:\n  hostname: fuzz\n  filesystem:\n"
         "    - {type: tmpfs, target: /tmp, size: 64Mi, mode: '1777'}\n"
         "    - {type: bind, source: ./d, target: /d}\n"
         "  network: {mode: bridge, ports: ['8080:80/tcp']}\n"
         "  security: {seccomp: {deny: [ptrace]}, capabilities: {drop: [ALL]}}\n").encode()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_random_bytes_never_raise(data: bytes) -> None:
    r = load_path("<fuzz>", data)
    assert all(p.where.startswith("<fuzz>") and p.message for p in r.problems)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(VALID) - 1), st.integers(0, 8), st.binary(min_size=0, max_size=6))
def test_mutated_manifest_never_raises(pos: int, cut: int, insert: bytes) -> None:
    data = VALID[:pos] + insert + VALID[pos + cut:]
    r = load_path("<fuzz>", data)
    if r.problems:
        for p in r.problems:
            line, col = p.where.split(":")[1:3]
            assert int(line) >= 1 and int(col) >= 1, str(p)
    else:
        assert r.environments
