"""``vbdecl exec`` and ``limits.pids``: the kernel checks pids.max only when a process
forks, so a process that joins the environment's pids cgroup (exec's command) is let
in above the limit. exec joins, counts, and backs out with a clear error when the
environment was already at its limit.

vbdecl runs as ``python -m vbdecl`` with this tree on PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from testmanifests import head

REPO = Path(__file__).resolve().parents[2]
LIMIT = 6
# init + sh + 4 sleeps = 6. The sleeps start once the helpers that start the process
# (in the cgroup for a moment) are gone.
MANIFEST = head("{name}") + """\
    - {{type: proc, target: /proc}}
    - {{type: dev, target: /dev}}
  limits: {{pids: {limit}}}
  process:
    command: ["/bin/sh", "-c", "sleep 1; sleep 600 & sleep 600 & sleep 600 & sleep 600 & wait"]
"""


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vbdecl", *args], env=env, capture_output=True,
                          text=True, timeout=60)


def _pids_dir(env: dict[str, str], name: str) -> Path:
    state = json.loads(_cli(env, "status", "--json", name).stdout)
    group: dict[str, Any] = next(r for r in state["resources"] if r["id"] == "cgroup")["record"]
    return Path(group["controllers"]["pids"])


def _current(pids_dir: Path) -> int:
    return int((pids_dir / "pids.current").read_text())


def test_exec_refuses_an_environment_at_its_pids_limit(tmp_path: Path) -> None:
    name = "h3pids-" + os.urandom(3).hex()
    env = dict(os.environ, PYTHONPATH=str(REPO), VBDECL_STATE_DIR=str(tmp_path / "state"),
               VBDECL_CACHE_DIR=str(tmp_path / "cache"))
    manifest = tmp_path / "m.yaml"
    manifest.write_text(MANIFEST.format(name=name, limit=LIMIT))
    r = _cli(env, "apply", "-y", str(manifest))
    assert r.returncode == 0, r.stderr
    try:
        pids = _pids_dir(env, name)
        assert (pids / "pids.max").read_text().strip() == str(LIMIT)
        deadline = time.monotonic() + 30
        while _current(pids) < LIMIT and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _current(pids) == LIMIT

        r = _cli(env, "exec", name, "--", "/bin/echo", "ran")
        assert r.returncode == 125, (r.stdout, r.stderr)
        assert r.stdout == ""
        assert f"cannot run the command in {name}: its pids cgroup is at its limit" in r.stderr
        assert f"limits.pids: {LIMIT}" in r.stderr and "raise limits.pids" in r.stderr
        assert _current(pids) == LIMIT     # the command backed out: nothing above the limit

        # one process fewer: exec's command fits (and makes the count the limit)
        sleeps = [int(p) for p in (pids / "cgroup.procs").read_text().split()
                  if Path(f"/proc/{p}/comm").read_text().strip() == "sleep"]
        os.kill(sleeps[0], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _current(pids) >= LIMIT and time.monotonic() < deadline:
            time.sleep(0.02)
        r = _cli(env, "exec", name, "--", "/bin/echo", "ran")
        assert (r.returncode, r.stdout) == (0, "ran\n"), r.stderr
    finally:
        r = _cli(env, "destroy", "-y", name)
        assert r.returncode == 0, r.stderr
