"""Limit setup + teardown per environment, on every layout this machine has.

Per environment: create the cgroup dirs, write and read back the limits
(memory, memory_swap, cpu, cpu_weight, pids), then tear down (kill check,
rmdir). Also the same with one process joined and killed on teardown.
Target: < 2 ms per environment. Needs root. Holds the test leak-guard lock
while it runs, so it never disturbs a running test suite.

    .venv/bin/python benchmarks/bench_cgroup.py [-n 200]
"""

from __future__ import annotations

import argparse
import fcntl
import os
import secrets
import statistics
import sys
import time

from vbdecl.sys import cgroupfs as cg

LIMITS = {"memory": 256 << 20, "memory_swap": 0, "cpu": 1.5, "cpu_weight": 200, "pids": 256,
          "io_weight": None}


def one(layout: cg.Layout, limits: dict[str, object], with_process: bool) -> tuple[float, float]:
    inst = "vb-" + secrets.token_hex(4)
    t0 = time.perf_counter()
    rec = cg.create_group(layout, inst, cg.needed_controllers(limits))
    for name in cg.LIMITS:
        if limits.get(name) is not None:
            cg.set_limit(rec, name, limits[name], limits)
    t1 = time.perf_counter()
    pid = 0
    if with_process:
        pid = os.fork()
        if pid == 0:  # a small process, as a sandbox payload is: exec sleep
            try:
                os.execv("/bin/sleep", ["sleep", "30"])
            finally:
                os._exit(127)
        cg.join(rec, pid)
        time.sleep(0.002)  # let it exec
    t2 = time.perf_counter()
    cg.remove_group(rec)
    t3 = time.perf_counter()
    if pid:
        os.waitpid(pid, 0)
    return (t1 - t0) * 1e3, (t3 - t2) * 1e3


def bench(name: str, layout: cg.Layout, limits: dict[str, object], n: int,
          with_process: bool = False) -> None:
    for _ in range(5):
        one(layout, limits, with_process)
    setup, teardown = [], []
    for _ in range(n):
        s, t = one(layout, limits, with_process)
        setup.append(s)
        teardown.append(t)
    total = [a + b for a, b in zip(setup, teardown, strict=True)]
    proc = " +1 process" if with_process else ""
    print(f"{name + proc:<28} setup {statistics.median(setup):6.3f} ms  "
          f"teardown {statistics.median(teardown):6.3f} ms  "
          f"total median {statistics.median(total):6.3f} ms  p90 "
          f"{sorted(total)[int(len(total) * 0.9)]:6.3f} ms  (n={n}, target < 2 ms)")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=200)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 1
    real = cg.current_layout()
    print(f"layout: {real.mode}; v1: {sorted(real.v1)}; cgroup2: {real.unified} "
          f"controllers {sorted(real.v2_controllers)}")
    lock = os.open("/tmp/vbdecl-leakguard.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        if real.mode == "hybrid":
            bench("hybrid (v1 limits + v2 dir)", real, LIMITS, args.n)
            bench("hybrid (v1 limits + v2 dir)", real, LIMITS, max(20, args.n // 5), True)
        if real.v1:
            v1 = cg.Layout(unified=None, v1=dict(real.v1))
            bench("v1 only", v1, LIMITS, args.n)
            bench("v1 only", v1, LIMITS, max(20, args.n // 5), True)
        if real.unified:
            v2 = cg.Layout(unified=real.unified, v2_controllers=real.v2_controllers)
            lim = {k: v for k, v in LIMITS.items()
                   if v is not None and cg.LIMIT_CONTROLLER[k] in v2.v2_controllers}
            label = "v2" if lim else "v2 (no controllers: group only)"
            bench(label, v2, lim, args.n)
            bench(label, v2, lim, max(20, args.n // 5), True)
    finally:
        os.close(lock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
