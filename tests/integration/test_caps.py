"""Capabilities as the payload sees them in /proc/self/status."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_security_support import python, run, spec, status

from vbdecl.model.names import CAPABILITIES, DEFAULT_CAPABILITIES
from vbdecl.sys import caps as sc


def mask(*names: str) -> int:
    return sum(1 << CAPABILITIES[n] for n in names)


HELD = sc.capget()[1]
DEFAULT = mask(*DEFAULT_CAPABILITIES) & HELD


def test_default_set_for_root(tmp_path: Path) -> None:
    st = status(tmp_path, spec())
    assert DEFAULT and st["CapEff"] == st["CapPrm"] == st["CapBnd"] == DEFAULT
    assert st["CapInh"] == st["CapAmb"] == 0
    assert not st["CapBnd"] & mask("SYS_ADMIN", "NET_ADMIN", "SYS_MODULE", "NET_RAW")
    assert st["NoNewPrivs"] == "1"


def test_drop_all(tmp_path: Path) -> None:
    st = status(tmp_path, spec({"capabilities": {"drop": ["ALL"], "add": []}}))
    assert (st["CapEff"], st["CapPrm"], st["CapBnd"], st["CapInh"], st["CapAmb"]) == (0, 0, 0, 0, 0)


def test_drop_all_add_one_any_spelling(tmp_path: Path) -> None:
    st = status(tmp_path, spec({"capabilities": {"drop": ["all"], "add": ["cap_net_admin", "Sys_Ptrace"]}}))
    want = mask("NET_ADMIN", "SYS_PTRACE")
    assert st["CapEff"] == st["CapPrm"] == st["CapBnd"] == want


def test_drop_from_default_and_add_all(tmp_path: Path) -> None:
    st = status(tmp_path, spec({"capabilities": {"drop": ["CAP_CHOWN", "kill"], "add": []}}))
    assert st["CapEff"] == st["CapBnd"] == DEFAULT & ~mask("CHOWN", "KILL")
    st = status(tmp_path, spec({"capabilities": {"drop": [], "add": ["ALL"]}}))
    assert st["CapEff"] == st["CapBnd"] == HELD


def test_non_root_default_has_none(tmp_path: Path) -> None:
    st = status(tmp_path, spec(user=1000, group=1000))
    assert st["Uid"].split() == ["1000"] * 4 and st["Gid"].split() == ["1000"] * 4
    assert st["Groups"] == ""
    assert (st["CapEff"], st["CapPrm"], st["CapInh"], st["CapAmb"]) == (0, 0, 0, 0)
    assert st["CapBnd"] == DEFAULT


BIND_80 = """
import socket
s = socket.socket()
try:
    s.bind(('127.0.0.1', 80))
    print('bound')
except OSError as e:
    print(e.errno)
"""


def test_non_root_keeps_an_added_capability_through_exec_via_ambient(tmp_path: Path) -> None:
    s = spec({"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}, user=1000, group=1000)
    st = status(tmp_path, s)
    want = mask("NET_BIND_SERVICE")
    assert st["CapEff"] == st["CapPrm"] == st["CapInh"] == st["CapAmb"] == st["CapBnd"] == want
    # And it works: a uid-1000 process binds port 80 (in a private network namespace).
    r = python(tmp_path, s, BIND_80, netns=True)
    assert r.out.strip() == "bound", r
    r = python(tmp_path, spec(user=1000, group=1000), BIND_80, netns=True)
    assert r.out.strip() == "13", r              # EACCES without it


def test_unmapped_or_unavailable_ids_and_caps_are_setup_errors(tmp_path: Path) -> None:
    r = run(tmp_path, spec({"capabilities": {"add": ["NO_SUCH_CAP"]}}), ["/bin/true"])
    assert r.code == 125 and "unknown capability 'NO_SUCH_CAP'" in r.err, r
    missing = [n for n, v in CAPABILITIES.items() if not HELD >> v & 1]
    if missing:
        r = run(tmp_path, spec({"capabilities": {"add": [missing[0]]}}), ["/bin/true"])
        assert r.code == 125 and "does not hold" in r.err, r


@pytest.fixture
def setuid_dir() -> Iterator[Path]:
    """A world-reachable directory (the pytest tmp dir is root-only)."""
    d = Path(tempfile.mkdtemp(prefix="vbdecl-sectest-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d)


@pytest.mark.skipif(not shutil.which("gcc"), reason="gcc")
def test_setuid_binaries_do_not_regain_capabilities(tmp_path: Path, setuid_dir: Path) -> None:
    src = setuid_dir / "whoami.c"
    src.write_text(r"""
#include <stdio.h>
#include <string.h>
#include <unistd.h>
int main(void) {
    char line[256];
    FILE *f = fopen("/proc/self/status", "r");
    printf("euid=%d", (int)geteuid());
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "CapEff:", 7) || !strncmp(line, "CapPrm:", 7))
            printf(" %.*s", (int)strcspn(line + 8, "\n"), line + 8);
    printf("\n");
    return 0;
}
""")
    exe = setuid_dir / "whoami"
    subprocess.run(["gcc", "-o", str(exe), str(src)], check=True)
    os.chown(exe, 0, 0)
    exe.chmod(0o4755)
    # Control: without no_new_privs a setuid-root binary does raise the uid and the caps.
    r = run(tmp_path, spec({"no_new_privs": False}, user=1000, group=1000), [str(exe)])
    euid, prm, eff = r.out.split()
    assert euid == "euid=0" and int(eff, 16) == int(prm, 16) == DEFAULT, r
    # With no_new_privs (the default): nothing is gained.
    r = run(tmp_path, spec(user=1000, group=1000), [str(exe)])
    assert r.out.split() == ["euid=1000", "0000000000000000", "0000000000000000"], r
    # Without no_new_privs but with an empty bounding set: the uid changes, caps do not.
    r = run(tmp_path, spec({"no_new_privs": False, "capabilities": {"drop": ["ALL"]}},
                           user=1000, group=1000), [str(exe)])
    assert r.out.split() == ["euid=0", "0000000000000000", "0000000000000000"], r
