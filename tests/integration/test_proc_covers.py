"""A manifest's proc: the host's sysctls and the rest bubblewrap covers are read-only,
and host-wide information (the kernel keys, the host's timers) reads as empty.

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


def _run(tmp_path: Path, userns: bool, probe: str) -> str:
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
        f"  process: {{command: {json.dumps(['/bin/sh', '-c', probe])}}}\n")
    r = subprocess.run([VBDECL, "--state-dir", str(tmp_path / "state"), "run", str(manifest)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.parametrize("userns", [False, True], ids=["root", "userns"])
def test_a_manifests_proc_covers_the_hosts_sysctls(tmp_path: Path, userns: bool) -> None:
    out = _run(tmp_path, userns, PROBE)
    assert "Read-only file system" in out and "wrote" not in out, out
    covered = {line.split()[0] for line in out.splitlines() if line.endswith(" ro")}
    assert {"/proc/sys", "/proc/irq", "/proc/bus"} <= covered, out


@pytest.mark.parametrize("userns", [False, True], ids=["root", "userns"])
def test_a_manifests_proc_hides_the_hosts_keys_and_timers(tmp_path: Path, userns: bool) -> None:
    """A security review: /proc/keys listed the host root's keyrings, and /proc/timer_list
    (root's) every timer of the host, to a root process without a user namespace."""
    assert Path("/proc/keys").read_bytes(), "the host shows no key: nothing to hide"
    out = _run(tmp_path, userns, "for f in keys timer_list; do echo $f $(cat /proc/$f 2>&1 | wc -c); done; "
                                 "echo status $(wc -l < /proc/self/status)")
    lines = out.splitlines()
    assert lines[:2] == ["keys 0", "timer_list 0"], out
    assert int(lines[2].split()[1]) > 10, out   # (the rest of proc as ever)
