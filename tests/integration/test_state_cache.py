"""The user trial's case: `vbdecl exec` caches a marshal copy of the environment's state
(process.env values included) under $VBDECL_CACHE_DIR/state; `vbdecl destroy` removes it,
also when destroy finishes an interrupted destroy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from testmanifests import head

MANIFEST = head("{name}") + """\
  process:
    command: [/bin/sleep, "300"]
    env: {{API_TOKEN: {secret}}}
"""


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vbdecl", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def _holding(cache: Path, secret: str) -> list[str]:
    return sorted(str(p) for p in cache.rglob("*") if p.is_file() and secret.encode() in p.read_bytes())


def test_destroy_removes_the_cached_state(tmp_path: Path) -> None:
    secret = "tok-" + os.urandom(8).hex()
    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VBDECL_") or k == "VBDECL_CACHE_DIR"}
    env.update(VBDECL_CACHE_DIR=str(cache), VBDECL_STATE_DIR=str(tmp_path / "state"))
    for i, crash in enumerate((None, 3)):
        name = f"cached{i}"
        manifest = tmp_path / f"{name}.yaml"
        manifest.write_text(MANIFEST.format(name=name, secret=secret))
        out = _cli(env, "apply", str(manifest), "-y")
        assert out.returncode == 0, out.stderr
        out = _cli(env, "exec", name, "--", "/bin/sh", "-c", "echo $API_TOKEN")
        assert out.returncode == 0 and out.stdout.strip() == secret, out.stderr
        copies = [p for p in _holding(cache, secret) if "/state/" in p]
        assert copies, "exec keeps a copy of the state in the cache"
        if crash is not None:      # a destroy killed half-way, finished by the next one
            out = _cli(dict(env, VBDECL_TEST_CRASH_AFTER=str(crash)), "destroy", name, "-y")
            assert out.returncode == -signal.SIGKILL, out.stderr
        out = _cli(env, "destroy", name, "-y")
        assert out.returncode == 0, out.stderr
        assert [p for p in _holding(cache, secret) if "/state/" in p] == []
