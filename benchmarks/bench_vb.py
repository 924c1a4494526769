"""vb against Debian's bwrap with identical flags running /usr/bin/true.

Runs both alternately (so drift in the machine's load hits both alike),
prints the median and quartiles of the wall time of each and the ratio of
the medians (target: vb at most 5 times bwrap's), and the page faults per run
of each tool and the processes it waits for (bwrap does not wait for its pid
1). Page faults cost ~4 us each on the development VM and are most of what
vb spends beyond bubblewrap; unlike wall time they hardly vary between runs.
Needs root (or user namespaces) and /usr/bin/bwrap.

    .venv/bin/python benchmarks/bench_vb.py [-n RUNS]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

FLAGS = {
    "minimal": ["--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
                "--symlink", "usr/bin", "/bin"],
    "typical": ["--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
                "--symlink", "usr/bin", "/bin", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
                "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent"],
}


def wall(argv: list[str]) -> tuple[float, int]:
    """(wall time, page faults) of one run of ``argv`` and what it waits for."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    took = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)   # reaped here: Popen must not wait
    proc.stderr.close()
    if proc.returncode != 0:
        sys.exit(f"{argv[0]} failed ({proc.returncode}): {err.decode().strip()}")
    return took, usage.ru_minflt


def q(values: list[float]) -> str:
    qs = statistics.quantiles(values, n=4)
    return f"median {statistics.median(values) * 1000:7.1f} ms  (q1 {qs[0] * 1000:.1f}, q3 {qs[2] * 1000:.1f})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--runs", type=int, default=30)
    args = ap.parse_args()
    bwrap = shutil.which("bwrap") or "/usr/bin/bwrap"
    vb = str(Path(sys.executable).with_name("vb"))
    worst = 0.0
    for name, flags in FLAGS.items():
        tools = {"bwrap": [bwrap], "vb": [vb]}   # (vb as installed: no site, see the Makefile)
        times: dict[str, list[float]] = {k: [] for k in tools}
        faults: dict[str, list[int]] = {k: [] for k in tools}
        for argv in tools.values():     # warm the page cache
            wall([*argv, *flags, "/usr/bin/true"])
        for _ in range(args.runs):
            for key, argv in tools.items():
                took, flt = wall([*argv, *flags, "/usr/bin/true"])
                times[key].append(took)
                faults[key].append(flt)
        base = statistics.median(times["bwrap"])
        print(f"{name} ({len(flags)} flags, {args.runs} runs each)")
        for key in tools:
            ratio = statistics.median(times[key]) / base
            if key == "vb":
                worst = max(worst, ratio)
            print(f"  {key:5} {q(times[key])}   {ratio:5.2f}x bwrap   "
                  f"{statistics.median(faults[key]):6.0f} page faults")
    print("target: vb at most 5x bwrap's median")
    return 0 if worst <= 5 else 1


if __name__ == "__main__":
    sys.exit(main())
