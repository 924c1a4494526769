"""Planner benchmark: compile 1,000 and 10,000 filesystem entries.

Run: .venv/bin/python benchmarks/bench_plan.py

Prints, for each size, the best of several runs of:
- compile: normalized document -> ordered plan (vbdecl.plan.compile.compile_doc);
- diff: that plan against its own recorded state (every action compared);
- file: the whole miss path of the cache (YAML load + validation + normalize +
  compile) for a manifest file of that size, and the cache hit;
and the ratio 10,000 / 1,000 (target: compile of 1,000 under 0.5 s, the
ratio at most 12, i.e. linear growth). Times are the best of several runs;
the "linear baseline" row (one dict per entry, no algorithm) shows what 10x
more data costs on this machine by itself (caches), for comparison.
"""

from __future__ import annotations

import gc
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "plans"))

from normalized import doc, fs

from vbdecl.engine.plancache import plans_for_file
from vbdecl.plan.compile import compile_doc
from vbdecl.plan.diff import changes, state_of


def entries(n: int) -> list[tuple[str, str, dict[str, Any]]]:
    """A realistic mix: binds and tmpfs per directory, files and dirs below
    them, symlinks, and every 250 entries a tmpfs over a whole subtree."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    for i in range(n):
        d = f"/srv/g{i // 50}"
        k = i % 50
        if k == 0:
            out.append(("bind", d, {"source": f"/data{d}"}))
        elif k == 1:
            out.append(("tmpfs", f"{d}/tmp", {"size": 1 << 20}))
        elif i % 250 == 249:
            out.append(("tmpfs", f"/srv/g{i // 50 - 1}", {}))
        elif k % 3 == 0:
            out.append(("dir", f"{d}/d{k}", {"mode": 0o755}))
        elif k % 3 == 1:
            out.append(("file", f"{d}/d{k - 1}/f{k}", {"content": "x\n", "mode": 0o644}))
        else:
            out.append(("symlink", f"{d}/l{k}", {"points_to": "d0"}))
    return out


def make_doc(n: int) -> dict[str, Any]:
    return doc(filesystem=[fs(t, target, **extra) for t, target, extra in entries(n)])


def make_yaml(n: int) -> str:
    lines = ["apiVersion: vbdecl/v1", "kind: Environment", "metadata:", "  name: bench", "spec:",
             "  filesystem:"]
    for t, target, extra in entries(n):
        item = [f"type: {t}", f"target: {target}"]
        for key, value in extra.items():
            if key == "mode":
                item.append(f'mode: "{value:04o}"')
            elif key == "content":
                item.append('content: "x\\n"')
            else:
                item.append(f"{key}: {value}")
        lines.append("    - {" + ", ".join(item) + "}")
    return "\n".join(lines) + "\n"


def baseline(d: dict[str, Any]) -> list[dict[str, Any]]:
    """A trivially linear loop: one action-like dict per entry (for context:
    how much 10x more data costs on this machine with no algorithm at all)."""
    return [{"id": f"x[{e['target']}]", "kind": "fs." + e["type"], "deps": [str(i)], "params": e,
             "describe": f"{e['type']} on {e['target']}"}
            for i, e in enumerate(d["spec"]["filesystem"])]


def best(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    results: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="vbdecl-bench-") as tmp:
        os.environ["VBDECL_CACHE_DIR"] = os.path.join(tmp, "cache")
        for n in (1000, 10000):
            d = make_doc(n)
            runs = 15 if n == 1000 else 7
            r: dict[str, float] = {}
            r["compile"] = best(lambda d=d: compile_doc(d), runs)
            r["linear baseline"] = best(lambda d=d: baseline(d), runs)
            plan = compile_doc(d)
            state = state_of(plan)
            r["diff"] = best(lambda p=plan, s=state: changes(p, s), runs)
            path = os.path.join(tmp, f"bench{n}.yaml")
            Path(path).write_text(make_yaml(n))
            r["file (miss)"] = best(lambda p=path: plans_for_file(p, use_cache=False), 2)
            plans_for_file(path)
            r["file (cache hit)"] = best(lambda p=path: plans_for_file(p), runs)
            results[n] = r
    print(f"{'step':<18}{'1,000':>10}{'10,000':>10}{'ratio':>8}")
    for step in results[1000]:
        a, b = results[1000][step], results[10000][step]
        print(f"{step:<18}{a * 1000:>8.1f}ms{b * 1000:>8.0f}ms{b / a:>8.1f}")
    ok = results[1000]["compile"] < 0.5 and results[10000]["compile"] / results[1000]["compile"] <= 12
    print(f"targets (compile 1,000 < 0.5 s; 10,000 at most 12x): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
