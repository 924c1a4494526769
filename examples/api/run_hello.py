"""Run manifests/hello.yaml from Python and print its lifecycle events.

    sudo .venv/bin/python examples/api/run_hello.py
"""

import os
import sys

import vbdecl

HERE = os.path.dirname(os.path.abspath(__file__))
MANIFEST = os.path.join(HERE, "..", "..", "manifests", "hello.yaml")


def on_event(event: dict) -> None:
    extra = {k: v for k, v in event.items() if k not in ("event", "ts")}
    print(f"[{event['event']}] {extra}", file=sys.stderr)


result = vbdecl.run(MANIFEST, on_event=on_event)
if result.error is not None:
    print(f"setup failed: {result.error}", file=sys.stderr)
print(f"exit code {result.code}", file=sys.stderr)
sys.exit(result.code)
