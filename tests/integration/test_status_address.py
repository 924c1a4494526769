"""`vbdecl status` shows a bridged environment's addresses in its text output, not
only in --json's records (a new-user review looked for the address there)."""

from __future__ import annotations

import json
import os
import random
import secrets
import subprocess
import sys
from pathlib import Path

from testmanifests import bridged

VBDECL = str(Path(sys.executable).with_name("vbdecl"))


def cli(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VBDECL_") or k == "VBDECL_CACHE_DIR"}
    env["VBDECL_CACHE_DIR"] = str(state.parent / "cache")
    return subprocess.run([VBDECL, "--state-dir", str(state), *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_status_text_shows_the_address_and_address6(tmp_path: Path) -> None:
    state = tmp_path / "state"
    bridge, name = f"vbt{secrets.token_hex(4)}", f"st{secrets.token_hex(4)}"
    subnet = f"10.{random.randint(100, 250)}.{random.randrange(0, 250, 2)}.0/24"
    subnet6 = f"fd00:{random.randint(1, 0xffff):x}:{random.randint(1, 0xffff):x}::/64"
    m = tmp_path / f"{name}.yaml"
    m.write_text(bridged("{name}", f'    subnet6: "{subnet6}"\n    dns: [192.0.2.53]\n').format(
        name=name, bridge=bridge, subnet=subnet) + '  process: {command: ["/bin/sleep", "300"]}\n')
    out = cli(state, "apply", "-y", str(m))
    assert out.returncode == 0, out.stdout + out.stderr
    try:
        doc = json.loads(cli(state, "--json", "status", name).stdout)
        recs = {r["id"]: r["record"] for r in doc["resources"]}
        v4, v6 = recs["net.address"], recs["net.address6"]
        text = cli(state, "status", name).stdout
        lines = {line.split()[0]: line for line in text.splitlines()[1:]}
        assert lines["net.address"].endswith(f"ok  {v4['address']}/24 on bridge {bridge}"), text
        assert lines["net.address6"].endswith(f"ok  {v6['address']}/64 on bridge {bridge}"), text
    finally:
        assert cli(state, "destroy", "-y", name).returncode == 0
