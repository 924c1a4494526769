"""Ten live environments applied in parallel on one shared bridge: all succeed,
no host name or address collides (instance ids, veths, cgroups, addresses),
and destroying them in parallel leaves nothing behind."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import testops
from testmanifests import head

MANIFEST = head('{name}') + """\
  limits:
    pids: 16
    optional: true
  network:
    mode: bridge
    bridge: {bridge}
    subnet: {subnet}
    nat: false
  process:
    command: ["/bin/sleep", "300"]
"""


def _body(tmp: Path) -> None:
    sd = tmp / "state"
    bridge = "vbp" + secrets.token_hex(4)
    subnet = f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(250)}.0/24"
    names = [f"par{i}" for i in range(10)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("VBDECL_") or k == "VBDECL_CACHE_DIR"}
    procs = []
    for n in names:
        m = tmp / f"{n}.yaml"
        m.write_text(MANIFEST.format(name=n, bridge=bridge, subnet=subnet))
        procs.append(subprocess.Popen([sys.executable, "-m", "vbdecl", "--state-dir", str(sd),
                                       "apply", str(m), "-y", "--lock-timeout", "60"],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    states = [json.loads((sd / "envs" / n / "state.json").read_text()) for n in names]
    instances = {s["instance"] for s in states}
    assert len(instances) == 10
    addrs = {json.dumps(s["resources"]["net.address"]["record"], sort_keys=True) for s in states}
    assert len(addrs) == 10
    for inst in instances:
        assert Path(f"/sys/class/net/{inst.replace('-', '')}h").exists()
    pids = {s["resources"]["env"]["record"]["pid"] for s in states}
    assert len(pids) == 10 and all(Path(f"/proc/{p}").exists() for p in pids)
    procs = [subprocess.Popen([sys.executable, "-m", "vbdecl", "--state-dir", str(sd), "destroy", n,
                               "-y"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for n in names]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    assert not Path(f"/sys/class/net/{bridge}").exists()
    assert [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(sd) in line] == []


def test_ten_live_environments_in_parallel(tmp_path: Path) -> None:
    testops.in_private_mount_ns(testops.with_cleanup(_body), tmp_path)
