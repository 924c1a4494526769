"""A manifest's proc: the host's sysctls and the rest bubblewrap covers are read-only.

A root process without a user namespace (the default as root) would otherwise
write host-wide sysctls through its new proc (kernel.modprobe, core_pattern:
code run as root on the host). The probe writes vm.swappiness's own value back
(nothing changes if the kernel took it) and reads the mount table.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

VBDECL = str(Path(sys.executable).with_name("vbdecl"))

# (no /dev here: errors go to stdout, where the test reads them)
PROBE = ("v=$(cat /proc/sys/vm/swappiness); (echo $v > /proc/sys/vm/swappiness) 2>&1 && echo wrote; "
         "grep -oE ' /proc/[a-z-]+ [a-z]+' /proc/self/mountinfo")

USERNS = ("  namespaces: {user: true}\n  idmap: {uid: [{inside: 0, outside: 100000, count: 65536}], "
          "gid: [{inside: 0, outside: 100000, count: 65536}]}\n")


@pytest.mark.parametrize("userns", [False, True], ids=["root", "userns"])
def test_a_manifests_proc_covers_the_hosts_sysctls(tmp_path: Path, userns: bool) -> None:
    manifest = tmp_path / "env.yaml"
    manifest.write_text(
        "apiVersion: vbdecl/v1\nkind: Environment\nmetadata: {name: procro}\nspec:\n"
        + (USERNS if userns else "")
        + "  filesystem:\n"
          "    - {type: ro-bind, source: /usr, target: /usr}\n"
          "    - {type: symlink, target: /bin, points_to: usr/bin}\n"
          "    - {type: symlink, target: /lib, points_to: usr/lib}\n"
          "    - {type: symlink, target: /lib64, points_to: usr/lib64}\n"
          "    - {type: proc, target: /proc}\n"
        f"  process: {{command: {json.dumps(['/bin/sh', '-c', PROBE])}}}\n")
    r = subprocess.run([VBDECL, "--state-dir", str(tmp_path / "state"), "run", str(manifest)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "Read-only file system" in r.stdout and "wrote" not in r.stdout, r.stdout
    covered = {line.split()[0] for line in r.stdout.splitlines() if line.endswith(" ro")}
    assert {"/proc/sys", "/proc/irq", "/proc/bus"} <= covered, r.stdout
