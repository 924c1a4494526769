"""The process's last steps (vbdecl.sys.laststep): spawn /bin/true with the default
security against posix_spawn of it, in one run.

    .venv/bin/python benchmarks/bench_laststep.py [-n ROUNDS]

Alternating rounds of: ``posix_spawn`` of /bin/true (the peer: vfork and exec);
``laststep.spawn`` with only the process steps (signals, fds, cwd, environment);
and with the default security too (capability sets, bounding set, no_new_privs,
the default seccomp program, as ``vbdecl run`` works them out). Each waits for
/bin/true's exit. Prints the medians and what the steps add. Needs root (the
capability and id calls must succeed); changes nothing in this process.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from vbdecl.ops import sec  # noqa: E402
from vbdecl.runtime import child  # noqa: E402
from vbdecl.sys import laststep  # noqa: E402

TRUE = "/bin/true"


def plan(security: bool) -> laststep.LastStep:
    cfg = child.ChildConfig()
    cfg.spec = {"process": {"command": [TRUE]},
                "security": {"seccomp": "default" if security else "off"}}
    if security:
        sec.preload(cfg.spec)   # the seccomp program: from the cache, as a run takes it
    steps = child._prepare(cfg, os.getpid())
    if not security:
        steps.plan.security = False
    steps.plan.keep = []
    return steps.plan


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", "--rounds", type=int, default=500)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_laststep.py needs root", file=sys.stderr)
        return 1
    plans = {"laststep, process steps": plan(False), "laststep, + default security": plan(True)}

    def spawn_plan(p: laststep.LastStep) -> int:
        pid, failed = laststep.spawn(p)
        if failed is not None:
            sys.exit(f"laststep failed: {failed}")
        return pid

    runs = {"posix_spawn": lambda: os.posix_spawn(TRUE, [TRUE], os.environ)}
    runs.update({k: (lambda p=p: spawn_plan(p)) for k, p in plans.items()})
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.rounds):
        order = list(runs)
        random.shuffle(order)
        for k in order:
            t0 = time.perf_counter()
            _, status = os.waitpid(runs[k](), 0)
            times[k].append(time.perf_counter() - t0)
            if status != 0:
                sys.exit(f"{k}: /bin/true exited with {status}")
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    print(f"{args.rounds} rounds; medians (spawn to exit of /bin/true):")
    for k, v in med.items():
        print(f"  {k:32s} {v:6.3f} ms   +{v - med['posix_spawn']:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
