"""GitOps: ``apply DIR`` applies every manifest of a directory and the ones below
it (as ``plan DIR`` and ``validate DIR`` find them), records the git
commit and dirty flag of each revision, and ``--prune`` destroys environments
that came from the directory and are no longer in it (and nothing else)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import testops
from testmanifests import head

MANIFEST = head('{name}') + """\
    - {{type: dev, target: /dev}}
    - {{type: file, target: /etc/motd, content: "{motd}"}}
  process:
    command: ["/bin/sleep", "300"]
"""


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t",
                           *args], check=True, capture_output=True, text=True).stdout.strip()


def _body(tmp: Path) -> None:
    repo, sd = tmp / "repo", tmp / "state"
    envs = repo / "envs"
    envs.mkdir(parents=True)
    other = tmp / "elsewhere.yaml"
    other.write_text(MANIFEST.format(name="keep", motd="k"))
    (envs / "team").mkdir()
    for n, where in (("alpha", envs), ("beta", envs / "team")):
        (where / f"{n}.yaml").write_text(MANIFEST.format(name=n, motd=n))
    (envs / ".draft.yaml").write_text(MANIFEST.format(name="draft", motd="d"))   # hidden: skipped
    (tmp / "empty").mkdir()
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "one")
    head = _git(repo, "rev-parse", "HEAD")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VBDECL_") or k == "VBDECL_CACHE_DIR"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "vbdecl", "--state-dir", str(sd), *args],
                              env=env, capture_output=True, text=True, timeout=120)

    out = cli("apply", str(other), "-y")
    assert out.returncode == 0, out.stderr
    (envs / ".drafts").mkdir()
    (envs / ".drafts" / "wip.yaml").write_text(MANIFEST.format(name="wip", motd="w"))
    out = cli("apply", str(envs / ".drafts" / "wip.yaml"), "-y")   # applied by hand: not DIR's
    assert out.returncode == 0, out.stderr
    out = cli("plan", str(envs))
    assert out.returncode == 0, out.stderr
    assert "Environment alpha:" in out.stdout and "Environment beta:" in out.stdout
    assert "draft" not in out.stdout
    for cmd in ("plan", "apply"):
        out = cli(cmd, str(tmp / "empty"), "-y") if cmd == "apply" else cli(cmd, str(tmp / "empty"))
        assert out.returncode == 1 and "no manifest files" in out.stderr, out
    out = cli("apply", str(envs), "-y")
    assert out.returncode == 0, out.stderr
    assert "alpha: applied revision 1" in out.stdout and "beta: applied revision 1" in out.stdout
    assert "draft" not in out.stdout
    hist: list[dict[str, Any]] = json.loads(cli("--json", "history", "alpha").stdout)
    assert hist[0]["git"]["commit"] == head and hist[0]["git"]["dirty"] is False
    assert hist[0]["source"] == str(envs / "alpha.yaml")

    # an uncommitted edit is recorded as dirty
    (envs / "alpha.yaml").write_text(MANIFEST.format(name="alpha", motd="edited"))
    out = cli("apply", str(envs), "-y")
    assert out.returncode == 0, out.stderr
    hist = json.loads(cli("--json", "history", "alpha").stdout)
    assert [h["revision"] for h in hist] == [1, 2] and hist[1]["git"]["dirty"] is True
    state = json.loads((sd / "envs" / "alpha" / "state.json").read_text())
    pid = state["resources"]["env"]["record"]["pid"]
    assert Path(f"/proc/{pid}/root/etc/motd").read_text() == "edited"

    # a manifest moved to another directory (a user review): applied from there, with
    # nothing to change on the host, it is recorded as that directory's, and a prune of
    # the old one leaves it alone
    moved = tmp / "moved"
    moved.mkdir()
    (moved / "alpha.yaml").write_text((envs / "alpha.yaml").read_text())
    out = cli("apply", str(moved), "-y")
    assert out.returncode == 0 and "alpha: applied revision 3 (0 steps" in out.stdout, out
    assert json.loads(cli("--json", "history", "alpha").stdout)[-1]["source"] == str(moved / "alpha.yaml")
    (envs / "alpha.yaml").unlink()
    out = cli("plan", str(envs), "--prune")
    assert out.returncode == 0 and "alpha" not in out.stdout, out
    (envs / "alpha.yaml").write_text((moved / "alpha.yaml").read_text())
    assert cli("apply", str(envs), "-y").returncode == 0      # (takes it back: envs is its home again)

    # beta leaves the directory: plan --prune shows what --prune destroys: it, and only it
    (envs / "team" / "beta.yaml").unlink()
    out = cli("plan", str(envs), "--prune", "--detailed-exitcode")
    assert out.returncode == 2, out
    assert f"Environment beta: no longer in {envs}; apply --prune destroys it:" in out.stdout
    assert "- env  # destroy" in out.stdout and "keep" not in out.stdout and "wip" not in out.stdout
    # a prune that fails is said to be the prune's, not blamed on the last environment
    # applied (a review: "gamma: failed (the error follows)")
    (envs / "gamma.yaml").write_text(MANIFEST.format(name="gamma", motd="g"))
    fault = {**env, "VBDECL_FAULT": "process:revert"}
    out = subprocess.run([sys.executable, "-m", "vbdecl", "--state-dir", str(sd), "apply", str(envs), "-y",
                          "--prune"], env=fault, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "gamma: applied revision 1" in out.stdout, out
    assert "error: process: destroy of 'beta' failed: injected revert fault" in out.stderr, out.stderr
    assert "failed (the error follows)" not in out.stderr, out.stderr
    assert cli("recover").returncode == 0
    out = cli("apply", str(envs), "-y", "--prune")
    assert out.returncode == 0, out.stderr
    names = {r["name"] for r in json.loads(cli("--json", "ls", "--no-probe").stdout)}
    assert names == {"alpha", "gamma", "keep", "wip"}
    for n in ("alpha", "gamma", "keep", "wip"):
        out = cli("destroy", n, "-y")
        assert out.returncode == 0, out.stderr
    assert json.loads(cli("--json", "ls").stdout) == []
    assert [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(sd) in line] == []


def test_apply_dir_git_history_and_prune(tmp_path: Path) -> None:
    testops.in_private_mount_ns(testops.with_cleanup(_body), tmp_path)


def _destroy_body(tmp: Path) -> None:
    sd = tmp / "state"
    two = tmp / "two.yaml"
    one = tmp / "one.yaml"
    one.write_text(MANIFEST.format(name="second", motd="s"))
    two.write_text(MANIFEST.format(name="first", motd="f") + "---\n" + one.read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith("VBDECL_") or k == "VBDECL_CACHE_DIR"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "vbdecl", "--state-dir", str(sd), *args],
                              env=env, capture_output=True, text=True, timeout=120)

    assert cli("apply", str(one), "-y").returncode == 0
    out = cli("destroy", str(two), "-y")
    assert out.returncode == 0, out
    assert "first: nothing to destroy (never applied)" in out.stdout and "second: destroyed" in out.stdout
    out = cli("--json", "destroy", str(two), "-y")      # and again: nothing is there
    assert out.returncode == 0, out
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["absent"] == ["first", "second"] and result["destroyed"] == [], result
    out = cli("destroy", "second", "-y")                 # by name, it is an error as before
    assert out.returncode == 1 and "environment 'second' was destroyed" in out.stderr, out


def test_destroy_of_a_file_goes_on_past_environments_that_are_not_there(tmp_path: Path) -> None:
    """A review: `destroy FILE` stopped at the first environment of the file that did not
    exist (never applied, or destroyed before) and left the later ones running; a second
    destroy of a file failed. It says so for those, destroys the others, and exits 0."""
    testops.in_private_mount_ns(testops.with_cleanup(_destroy_body), tmp_path)
