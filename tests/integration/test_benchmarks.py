"""Every benchmark runs to its figures (a few rounds each): the README quotes them, and a
benchmark that broke (bench_run's hand-made state once lacked what exec now checks)
would otherwise go unnoticed until someone measures. Targets are not checked here:
ratios belong to a quiet machine, not to a test (bench_vb exits 1 on a missed one)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
# name: (arguments for a short run, what its output shows when it got to its figures)
SHORT = {
    "cgroup": (["-n", "5"], "setup"),
    "journal": ([], "overhead = apply"),
    "laststep": (["-n", "20"], "posix_spawn"),
    "net": ([], "NAT add"),
    "plan": ([], "targets (compile"),
    "run": (["-n", "2"], "vbdecl exec / python -c pass"),
    "validate": (["--runs", "1"], "1,000 entries end to end"),
    "vb": (["-n", "2"], "target: vb at most 5x"),
}


def test_every_benchmark_is_listed() -> None:
    assert sorted(p.stem.removeprefix("bench_") for p in BENCHMARKS.glob("bench_*.py")) == sorted(SHORT)


# bench_cgroup holds the leak guard's lock itself while it runs (it must not disturb a
# test suite): under the guard it would wait for the test that runs it
PARAMS = [pytest.param(name, marks=pytest.mark.no_leak_guard) if name == "cgroup" else name
          for name in sorted(SHORT)]


@pytest.mark.parametrize("name", PARAMS)
def test_benchmark_runs_to_its_figures(name: str) -> None:
    args, shows = SHORT[name]
    r = subprocess.run([sys.executable, str(BENCHMARKS / f"bench_{name}.py"), *args],
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode in ((0, 1) if name == "vb" else (0,)), r.stdout + r.stderr
    assert shows in r.stdout, r.stdout + r.stderr
