"""Validate a 20-entry and a 1,000-entry manifest; report wall time and peak memory.

Run with the project's interpreter:  .venv/bin/python benchmarks/bench_validate.py
Each figure is the median of several runs of a fresh process:

- "cli": ``vbdecl validate FILE`` end to end (interpreter start, imports, load, validate);
- "load": inside one process, the time of ``load_path`` alone after imports (warm).

Target (issue 2): 1,000 filesystem entries validate in under 0.5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

TYPES = [
    "    - {{type: ro-bind, source: /usr/lib/x{i}, target: /opt/x{i}}}\n",
    "    - type: tmpfs\n      target: /scratch/t{i}\n      size: 64Mi\n      mode: \"1777\"\n",
    "    - {{type: dir, target: /run/d{i}, mode: \"0755\"}}\n",
    "    - {{type: file, target: /etc/f{i}, content: \"line {i}\\n\", mode: \"0644\"}}\n",
    "    - {{type: symlink, target: /l{i}, points_to: usr/bin}}\n",
]


def manifest(entries: int) -> str:
    out = ["apiVersion: vbdecl/v1\nkind: Environment\nmetadata: {name: bench}\nspec:\n",
           "  hostname: bench\n  limits: {memory: 512Mi, pids: 256}\n",
           "  network: {mode: bridge, ports: ['8080:80/tcp']}\n",
           "  process: {command: [/bin/true], env: {LANG: C.UTF-8}}\n",
           "  filesystem:\n"]
    out.extend(TYPES[i % len(TYPES)].format(i=i) for i in range(entries))
    return "".join(out)


INNER = """
import resource, sys, time
t0 = time.perf_counter()
from vbdecl.model.load import load_path
t1 = time.perf_counter()
r = load_path(sys.argv[1])
t2 = time.perf_counter()
assert not r.problems, [str(p) for p in r.problems[:3]]
for _ in range(3):
    t3 = time.perf_counter(); load_path(sys.argv[1]); t4 = time.perf_counter()
print(t1 - t0, t2 - t1, t4 - t3, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def run_cli(path: str) -> tuple[float, int]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "vbdecl", "validate", path], capture_output=True)
    elapsed = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"validate failed: {p.stderr.decode()[:500]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return elapsed, max(peak, before)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--loader", choices=["libyaml", "ruamel"], default="libyaml")
    args = ap.parse_args()
    if args.loader == "ruamel":
        os.environ["VBDECL_YAML"] = "ruamel"
    results = []
    with tempfile.TemporaryDirectory(prefix="vbdecl-bench-") as tmp:
        for entries in (20, 1000):
            path = os.path.join(tmp, f"m{entries}.yaml")
            with open(path, "w") as f:
                f.write(manifest(entries))
            cli = [run_cli(path) for _ in range(args.runs)]
            inner = []
            for _ in range(args.runs):
                p = subprocess.run([sys.executable, "-c", INNER, path], capture_output=True, text=True, check=True)
                inner.append([float(x) for x in p.stdout.split()])
            res = {
                "entries": entries,
                "bytes": os.path.getsize(path),
                "cli_wall_s": statistics.median(t for t, _ in cli),
                "cli_peak_rss_mib": max(m for _, m in cli) / 1024,
                "import_s": statistics.median(r[0] for r in inner),
                "load_cold_s": statistics.median(r[1] for r in inner),
                "load_warm_s": statistics.median(r[2] for r in inner),
                "inproc_peak_rss_mib": max(r[3] for r in inner) / 1024,
            }
            results.append(res)
    if args.json:
        print(json.dumps({"loader": args.loader, "python": sys.version.split()[0], "results": results}, indent=2))
        return 0
    print(f"vbdecl validate benchmark (loader: {args.loader}, Python {sys.version.split()[0]}, "
          f"median of {args.runs} fresh processes)")
    print(f"{'entries':>8} {'bytes':>8} {'cli wall':>9} {'cli peak':>9} {'imports':>8} "
          f"{'load cold':>10} {'load warm':>10}")
    for r in results:
        print(f"{r['entries']:>8} {r['bytes']:>8} {r['cli_wall_s'] * 1000:>7.0f}ms {r['cli_peak_rss_mib']:>6.1f}MiB "
              f"{r['import_s'] * 1000:>6.0f}ms {r['load_cold_s'] * 1000:>8.1f}ms {r['load_warm_s'] * 1000:>8.1f}ms")
    big = results[-1]
    verdict = "meets" if big["cli_wall_s"] < 0.5 else "MISSES"
    print(f"1,000 entries end to end: {big['cli_wall_s']:.3f} s ({verdict} the 0.5 s target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
