"""Security settings end to end: manifests through `vbdecl run`, seen from inside."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from testmanifests import head

from vbdecl.model.names import CAPABILITIES, DEFAULT_CAPABILITIES

BASE = head('{name}') + """\
    - {{type: proc, target: /proc}}
    - {{type: dev, target: /dev}}
    - {{type: tmpfs, target: /tmp, mode: "1777"}}
{extra}
"""

PROBE = ("grep -E '^(CapEff|CapPrm|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status; "
         "mkdir /tmp/m && echo mkdir-ok; mount -t tmpfs x /mnt 2>/dev/null || echo mount-denied; "
         "echo x > /tmp/w && echo write-ok; unshare -U true 2>/dev/null && echo userns-ok || "
         "echo userns-denied")


def vbdecl_run(tmp: Path, name: str, extra: str, cmd: str) -> tuple[int, dict[str, str], list[str], str]:
    manifest = tmp / f"{name}.yaml"
    manifest.write_text(BASE.format(name=name, extra=extra))
    state = tmp / "state"
    p = subprocess.run([sys.executable, "-m", "vbdecl", "--state-dir", str(state), "run",
                        str(manifest), "--", "/bin/sh", "-c", cmd],
                       capture_output=True, text=True, timeout=120)
    fields: dict[str, str] = {}
    rest: list[str] = []
    for line in p.stdout.splitlines():
        key, sep, value = line.partition(":\t")
        if sep:
            fields[key] = value.strip()
        else:
            rest.append(line)
    return p.returncode, fields, rest, p.stderr


def test_defaults(tmp_path: Path) -> None:
    code, f, out, err = vbdecl_run(tmp_path, "secdefault", "", PROBE)
    assert code == 0, err
    assert f["NoNewPrivs"] == "1" and f["Seccomp"] == "2"
    default = sum(1 << CAPABILITIES[n] for n in DEFAULT_CAPABILITIES)
    assert int(f["CapEff"], 16) == int(f["CapBnd"], 16) == default
    assert out == ["mkdir-ok", "mount-denied", "write-ok", "userns-ok"], (out, err)


def test_drop_all_and_custom_seccomp_and_landlock(tmp_path: Path) -> None:
    extra = """  security:
    capabilities: {drop: [ALL], add: [NET_BIND_SERVICE]}
    seccomp: {deny: [mkdir, mkdirat], errno: EROFS}
    landlock: {read: [/usr, /proc], execute: [/usr], read_write: [/dev]}"""
    code, f, out, err = vbdecl_run(tmp_path, "seccustom", extra, PROBE)
    assert code == 0, err
    assert int(f["CapEff"], 16) == int(f["CapBnd"], 16) == 1 << 10
    assert out == ["mount-denied", "userns-ok"], (out, err)
    assert "Read-only file system" in err                   # mkdir: EROFS from the deny list
    assert "Permission denied" in err                       # /tmp write: Landlock


def test_non_root_user_with_ambient_cap_and_disable_userns(tmp_path: Path) -> None:
    extra = """  namespaces: {user: true}
  idmap:
    uid: [{inside: 0, outside: 0, count: 2000}]
    gid: [{inside: 0, outside: 0, count: 2000}]
  process: {user: 1000, group: 1000}
  security:
    capabilities: {add: [NET_BIND_SERVICE]}
    disable_userns: true"""
    host_limit = Path("/proc/sys/user/max_user_namespaces").read_text()
    code, f, out, err = vbdecl_run(tmp_path, "secuser", extra,
                                   PROBE + "; cat /proc/sys/user/max_user_namespaces")
    assert code == 0, err
    assert int(f["CapEff"], 16) == int(f["CapAmb"], 16) == 1 << 10
    assert out == ["mkdir-ok", "mount-denied", "write-ok", "userns-denied", "0"], (out, err)
    assert Path("/proc/sys/user/max_user_namespaces").read_text() == host_limit


def test_setup_errors_exit_125_with_a_message(tmp_path: Path) -> None:
    extra = """  security:
    landlock: {read: [/nonexistent-path], execute: [/usr]}"""
    code, _, _, err = vbdecl_run(tmp_path, "secerr", extra, "true")
    assert code == 125, err
    assert "/nonexistent-path" in err and "Traceback" not in err
