"""Journal overhead per action, next to the cost of the actions themselves.

Applies a plan of N trivial actions (default 1,000) through the engine with
the durability recovery needs (an fdatasync'ed journal entry before and after
every action, atomic state and revision writes), then the same without
fsync, and calls the ops directly without any engine. Then the same for
actions that do real work (create a file), and destroys.

    .venv/bin/python benchmarks/bench_journal.py [N]
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import testops

from vbdecl.engine.executor import Engine
from vbdecl.ops import op_for
from vbdecl.ops.base import Context


def null_plan(name: str, n: int) -> dict[str, Any]:
    acts = [testops.action(f"null[{i}]", "test.null", {"n": i}) for i in range(n)]
    return {"format": 1, "tool_version": "bench", "name": name, "labels": {},
            "manifest_hash": f"sha256:{name}", "source": None, "spec": {}, "actions": acts}


def file_plan(name: str, root: Path, n: int) -> dict[str, Any]:
    return testops.make_plan(name, root, files=n - 1, mounts=0)


def direct(plan: dict[str, Any], instance: str) -> float:
    ctx = Context(name=plan["name"], instance=instance, state_dir="/nonexistent", runtime_dir="/nonexistent")
    start = time.perf_counter()
    records = [(op_for(a["kind"]), op_for(a["kind"]).apply(ctx, a["params"])) for a in plan["actions"]]
    mid = time.perf_counter()
    for op, rec in reversed(records):
        op.revert(ctx, rec)
    return mid - start


def engine_run(sd: Path, plan: dict[str, Any], sync: bool) -> tuple[float, float]:
    eng = Engine(sd, sync=sync)
    start = time.perf_counter()
    eng.apply(plan)
    mid = time.perf_counter()
    eng.destroy(plan["name"])
    return mid - start, time.perf_counter() - mid


def fdatasync_cost(tmp: Path, n: int = 200) -> float:
    """Seconds per 100-byte append + fdatasync on this filesystem (the floor)."""
    fd = os.open(tmp / "sync-probe", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        start = time.perf_counter()
        for _ in range(n):
            os.write(fd, b"x" * 99 + b"\n")
            os.fdatasync(fd)
        return (time.perf_counter() - start) / n
    finally:
        os.close(fd)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    repeats = int(os.environ.get("BENCH_REPEATS", "3"))
    testops.register()
    tmp = Path(tempfile.mkdtemp(prefix="vbdecl-bench-", dir=os.environ.get("BENCH_DIR")))
    try:
        rows = []
        runs = 0
        for label, make in (("trivial (no-op)", lambda i: null_plan(f"null{i}", n)),
                            ("create a file", lambda i: file_plan(f"file{i}", tmp / "root", n))):
            (tmp / "root").mkdir(exist_ok=True)
            samples = []
            for _ in range(repeats):
                runs += 1
                d = direct(make(runs * 10), "vb-00000000")
                a_sync, d_sync = engine_run(tmp / f"s{runs}", make(runs * 10 + 1), True)
                a_nosync, _ = engine_run(tmp / f"n{runs}", make(runs * 10 + 2), False)
                samples.append((a_sync, d, d_sync, a_nosync))
            samples.sort()
            a_sync, d, d_sync, a_nosync = samples[len(samples) // 2]  # the median run
            rows.append((label, d, a_sync, d_sync, a_nosync, samples[0][0]))
        sync = fdatasync_cost(tmp)
        per = 1e6 / n
        print(f"{n} actions per plan, median of {repeats} runs; microseconds per action "
              f"(state dir on the filesystem of {tmp})")
        print(f"{'actions':17} {'op alone':>9} {'apply':>9} {'(best)':>9} {'overhead':>9} "
              f"{'no fsync':>9} {'destroy':>9}")
        for label, d, a_sync, d_sync, a_nosync, best in rows:
            print(f"{label:17} {d * per:9.1f} {a_sync * per:9.1f} {best * per:9.1f} "
                  f"{(a_sync - d) * per:9.1f} {(a_nosync - d) * per:9.1f} {d_sync * per:9.1f}")
        print(f"one append + fdatasync on this filesystem: {sync * 1e6:.1f} us")
        print("overhead = apply (journaled, durable) minus the ops alone. Per action the engine\n"
              "writes an intent (fdatasync'ed before the op runs) and a record (made durable by\n"
              "the next fdatasync), so the floor is about one fdatasync per action; 'no fsync'\n"
              "is the engine's own CPU cost. The machine is shared: fsync latency varies.")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
