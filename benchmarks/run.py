"""Run every benchmark in this directory, one after the other, with this interpreter.

    .venv/bin/python benchmarks/run.py [NAME...]     e.g. run.py run vb

Each benchmark compares vbdecl with a peer measured in the same run and
prints its own figures; the README quotes them.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    wanted = set(argv)
    failed = []
    for script in sorted(HERE.glob("bench_*.py")):
        name = script.stem.removeprefix("bench_")
        if wanted and name not in wanted:
            continue
        print(f"\n=== {name} ({script.name})", flush=True)
        start = time.monotonic()
        code = subprocess.call([sys.executable, str(script)])
        print(f"--- {name}: exit {code}, {time.monotonic() - start:.1f} s", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
