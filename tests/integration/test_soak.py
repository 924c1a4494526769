"""Soak: many ``vbdecl run`` cycles of one manifest (fresh root with binds,
proc, tmpfs, a file; cgroup limits; its own network namespace), sampling the
host as it goes. Nothing may grow: mounts, links, cgroup directories, live
processes started by the test, the test's open fds, the state directory
(size and entries), the run's own temporary entries.

1,000 cycles with VBDECL_FULL=1 (run before releases); 100 otherwise (CI);
VBDECL_SOAK_CYCLES=N overrides.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import conftest
from test_reliability_support import (
    FULL,
    REPO,
    assert_clean,
    cleanup_envs,  # noqa: F401  (autouse fixture)
    host,
)
from testmanifests import head

CYCLES = int(os.environ.get("VBDECL_SOAK_CYCLES", "1000" if FULL else "100"))

MANIFEST = head('soak', hostname='soak', template=False) + """\
    - {type: proc, target: /proc}
    - {type: dev, target: /dev}
    - {type: tmpfs, target: /tmp, size: 8Mi}
    - {type: file, target: /etc/motd, content: "soak\\n"}
  limits:
    memory: 64Mi
    pids: 32
  process:
    command: ["/bin/sh", "-c", "read x < /etc/motd && test \\"$x\\" = soak && echo ok"]
"""


def _du(d: Path) -> tuple[int, int]:
    files = size = 0
    for dirpath, dirnames, filenames in os.walk(d):
        for n in [*dirnames, *filenames]:
            files += 1
            try:
                size += os.lstat(os.path.join(dirpath, n)).st_size if n in filenames else 0
            except OSError:
                pass
    return files, size


def _sample(sd: Path) -> dict[str, int]:
    s = conftest.snapshot()
    files, size = _du(sd)
    nr = Path("/proc/sys/fs/file-nr").read_text().split()
    return {
        "mounts": len(s["mounts"]),  # type: ignore[arg-type]
        "links": len(s["links"]),  # type: ignore[arg-type]
        "cgroups": len(s["cgroups"]),  # type: ignore[arg-type]
        "processes": len(s["processes"]),  # type: ignore[arg-type]
        "children": len(s["children"]),  # type: ignore[arg-type]
        "fds": len(s["fds"]),  # type: ignore[arg-type]
        "tmp": len(s["tmp"]),  # type: ignore[arg-type]
        "state entries": files,
        "state bytes": size,
        "host file handles": int(nr[0]),   # machine-wide, reported only (others work too)
    }


def test_run_cycles(tmp_path: Path) -> None:
    sd = tmp_path / "state"
    f = tmp_path / "soak.yaml"
    f.write_text(MANIFEST)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VBDECL_") or k == "VBDECL_CACHE_DIR"}
    env["VBDECL_CACHE_DIR"] = str(tmp_path / "cache")
    argv = [sys.executable, "-m", "vbdecl", "--state-dir", str(sd), "run", str(f)]
    before = host()

    def one(i: int) -> None:
        out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, cwd=REPO)
        assert out.returncode == 0 and out.stdout == "ok\n", (i, out.returncode, out.stdout, out.stderr)

    for i in range(5):   # warm up: plan cache, state root layout
        one(i)
    base = _sample(sd)
    samples = [base]
    t0 = time.monotonic()
    every = max(1, CYCLES // 10)
    for i in range(CYCLES):
        one(i)
        if (i + 1) % every == 0:
            samples.append(_sample(sd))
    elapsed = time.monotonic() - t0
    last = samples[-1]
    print(f"\nsoak: {CYCLES} runs in {elapsed:.1f}s ({1000 * elapsed / CYCLES:.0f} ms/run); "
          f"first/last sample: {base} / {last}")
    for key in base:
        if key == "host file handles":
            continue
        grown = [s[key] for s in samples]
        assert max(grown) <= base[key], f"{key} grew over {CYCLES} runs: {grown}"
    assert_clean(before, f"after {CYCLES} runs")
