"""The user documentation says what the code does, where users trip over it."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _row(text: str, start: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(start))


def test_diff_raw_is_described_as_it_behaves() -> None:
    # two files: their YAML; revisions: the stored normalized spec, as JSON
    # (tests/unit/test_plan_cli.py checks both outputs)
    row = _row((ROOT / "README.md").read_text(), "| `vbdecl diff")
    assert "manifest files" in row and "normalized spec" in row and "JSON" in row
    assert "adds the YAML diff" not in row


def test_published_ports_turn_on_host_forwarding_and_hairpin() -> None:
    security = " ".join((ROOT / "docs" / "security.md").read_text().split())
    assert "Publishing a port (`network.ports`, with or without `nat`) or `nat: true` turns on " \
           "`net.ipv4.ip_forward`" in security
    assert "restores it when the last environment that needed forwarding is destroyed" in security
    assert "Hairpin: an environment reaches its own published port through an address of the host" in security
    manifest = " ".join((ROOT / "docs" / "manifest.md").read_text().split())
    assert "Publishing a port (even with `nat: false`) turns on the host-wide `ip_forward`" in manifest
    assert "An environment reaches its own published port through a host address too" in manifest


def test_the_manifest_formats_own_example_validates(tmp_path: Path) -> None:
    """The contract (docs/manifest.md, a copy of the manifest format's) says every key
    of its example is accepted; its idmap with namespaces.user: false was refused."""
    import re
    import subprocess
    import sys

    text = (ROOT / "docs" / "manifest.md").read_text()
    example = tmp_path / "full.yaml"
    example.write_text(re.findall(r"```yaml\n(.*?)```", text, re.S)[0])
    r = subprocess.run([sys.executable, "-m", "vbdecl", "validate", str(example)], capture_output=True, text=True)
    assert (r.returncode, r.stdout.strip()) == (0, f"{example}: ok (web)"), r.stderr
    # (a UX review: its dev at /dev hid the dev-bind of /dev/fuse before it, and plan said so)
    from vbdecl.cli.cmd_plan import cover_warnings
    from vbdecl.model import load_normalized

    (doc,) = load_normalized(str(example))
    assert cover_warnings(doc) == []


def test_memory_swap_is_documented_as_the_code_writes_it() -> None:
    """A new-user review: docs/manifest.md did not say whether limits.memory_swap is
    swap alone or memory + swap (Docker's --memory-swap is the sum). It is swap alone:
    v2 writes it to memory.swap.max, v1 writes memory + it to memsw."""
    from vbdecl.sys import cgroupfs as cg

    mem, swap = 512 << 20, 64 << 20
    assert cg.limit_writes(2, "memory_swap", swap, {"memory": mem}) == [("memory.swap.max", str(swap))]
    assert cg.limit_writes(1, "memory_swap", swap, {"memory": mem}) == \
        [("memory.memsw.limit_in_bytes", str(mem + swap))]
    manifest = " ".join((ROOT / "docs" / "manifest.md").read_text().split())
    assert "`limits.memory_swap` is swap alone, on top of `limits.memory`" in manifest
    assert "A value smaller than `memory` is valid and means just that, less swap than RAM" in manifest
    assert "the value goes to `memory.swap.max` as it is" in manifest
    assert "`memory.memsw.limit_in_bytes` (RAM + swap) to `memory + memory_swap`" in manifest


def test_process_group_default_is_documented_next_to_user(tmp_path: Path) -> None:
    """A new-user review: `process.user: 1000` alone ran with gid 0, and nothing next to
    `user` said the group does not follow it."""
    from vbdecl.model import load_normalized

    m = tmp_path / "u.yaml"
    m.write_text("apiVersion: vbdecl/v1\nkind: Environment\nmetadata: {name: u}\nspec:\n"
                 "  process: {command: [/bin/true], user: 1000}\n")
    proc = load_normalized(str(m))[0]["spec"]["process"]
    assert (proc["user"], proc["group"]) == (1000, 0)
    text = (ROOT / "docs" / "manifest.md").read_text()
    assert "    group: 0                # gid inside; 0 when left out, whatever user is\n" in text
    flat = " ".join(text.split())
    assert "`process.group` is 0 when left out, whatever `process.user` is: `user: 1000` alone " \
           "runs the command as uid 1000 with gid 0" in flat


def test_plan_format_says_what_ro_overlay_and_metadata_changes_do(tmp_path: Path) -> None:
    """A review: docs/plan-format.md said a ro-overlay with one lower is a read-only bind
    (validation refuses one: overlayfs needs two without an upper), and that a
    labels-only change lists a `metadata` line in `plan --json`'s changes (they are
    empty; metadata_changed says it)."""
    import sys

    import pytest

    sys.path.insert(0, str(ROOT / "tests" / "plans"))
    from normalized import doc

    from vbdecl.errors import ManifestError
    from vbdecl.model.load import load_text
    from vbdecl.plan.compile import compile_doc
    from vbdecl.plan.diff import changes, state_of
    from vbdecl.plan.text import plan_json

    text = " ".join((ROOT / "docs" / "plan-format.md").read_text().split())
    assert "a `ro-overlay` with one lower is a read-only recursive bind" not in text
    assert "A `ro-overlay` has at least two lowers" in text
    (tmp_path / "l1").mkdir()
    with pytest.raises(ManifestError, match="at least 2"):
        load_text("apiVersion: vbdecl/v1\nkind: Environment\nmetadata: {name: w}\nspec:\n"
                  "  filesystem: [{type: ro-overlay, target: /o, lower: [./l1]}]\n",
                  str(tmp_path / "m.yaml"))

    assert "the changes list a line `metadata`" not in text
    assert "`changes` stays without it" in text
    old = compile_doc(doc())
    labelled = doc()
    labelled["labels"] = {"tier": "db"}
    new = compile_doc(labelled)
    found = changes(new, state_of(old))
    out = plan_json(new, found, state_of(old))
    assert (out["changes"], out["metadata_changed"]) == ([], True)
