"""Round trips: bubblewrap argv -> manifest -> argv' runs the same sandbox.

``vb --print-manifest ARGS`` must give a manifest ``vbdecl validate``
accepts, equal to ``vbdecl convert --from-bwrap -- ARGS``;
``vbdecl convert --to-bwrap`` of that manifest gives ARGS', and the
payload sees the same sandbox through ``vb ARGS``, ``vb ARGS'`` and
Debian's ``bwrap ARGS'``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
VB = str(BIN / "vb")
VBDECL = str(BIN / "vbdecl")
BWRAP = shutil.which("bwrap")

PROBE = r"""
echo "ids $(id -u) $(id -g) cwd $(pwd) pid $([ $$ -lt 10 ] && echo $$ || echo host)"
for p in / /t /d /d/e /s; do echo "stat $p $(stat -c '%a %F' "$p" 2>&1)"; done
awk '{ split($0, a, " - "); split(a[2], b, " "); print "mnt", $5, b[1], $6 }' /proc/self/mountinfo \
  | sed -E 's/,(relatime|noatime|nosymfollow)//g' | sort
grep -E '^(CapEff|CapPrm|CapInh|NoNewPrivs):' /proc/self/status
env | grep -vE '^(_|SHLVL|OLDPWD|VBDECL_CACHE_DIR)=' | sort | sed 's/^/env /'
"""

BASE = ["--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
        "--symlink", "usr/bin", "/bin", "--proc", "/proc"]

CASES = {
    "plain": [],
    "namespaces": ["--unshare-pid", "--unshare-uts", "--hostname", "box", "--unshare-ipc", "--dev", "/dev"],
    "fs": ["--perms", "0700", "--tmpfs", "/t", "--perms", "0750", "--dir", "/d/e", "--tmpfs", "/s",
           "--symlink", "../usr", "/s/u", "--chmod", "0711", "/s", "--remount-ro", "/s"],
    "env-chdir": ["--clearenv", "--setenv", "A", "1", "--chdir", "/usr"],
    "user": ["--unshare-user", "--uid", "5", "--gid", "6", "--unshare-net"],
    "user-dev": ["--unshare-user", "--uid", "5", "--unshare-pid", "--dev", "/dev"],
}


def _payload(tool: str, args: list[str], probe: Path) -> str:
    r = subprocess.run([tool, *args], capture_output=True, text=True, timeout=30, cwd="/",
                       env={"PATH": "/usr/bin:/bin", "HOME": "/root", "LANG": "C"})
    return f"{r.stdout}{r.stderr}exit {r.returncode}\n"


@pytest.mark.parametrize("case", sorted(CASES))
def test_argv_manifest_argv_runs_the_same(case: str, tmp_path: Path) -> None:
    probe = tmp_path / "probe.sh"
    probe.write_text(PROBE)
    argv = [*BASE, "--ro-bind", str(probe), "/probe.sh", *CASES[case], "sh", "/probe.sh"]

    printed = subprocess.run([VB, "--print-manifest", *argv], capture_output=True, text=True, timeout=30)
    assert printed.returncode == 0, printed.stderr
    converted = subprocess.run([VBDECL, "convert", "--from-bwrap", "--", *argv], capture_output=True,
                               text=True, timeout=30)
    assert converted.returncode == 0, converted.stderr
    assert converted.stdout == printed.stdout

    manifest = tmp_path / "env.yaml"
    manifest.write_text(printed.stdout)
    valid = subprocess.run([VBDECL, "validate", str(manifest)], capture_output=True, text=True, timeout=30)
    assert valid.returncode == 0, valid.stdout + valid.stderr

    back = subprocess.run([VBDECL, "convert", "--to-bwrap", str(manifest)], capture_output=True, text=True,
                          timeout=30)
    assert back.returncode == 0, back.stderr
    words = shlex.split(back.stdout)
    assert words[0] == "bwrap"
    argv2 = words[1:]

    first = _payload(VB, argv, probe)
    assert "exit 0" in first
    assert _payload(VB, argv2, probe) == first
    if BWRAP is not None:
        assert _payload(BWRAP, argv2, probe) == _payload(BWRAP, argv, probe)


@pytest.mark.parametrize(("spec", "named"), [
    ("  network: {mode: bridge}\n  process: {command: [\"true\"]}\n", "bridge"),
    # as root without a user namespace vbdecl switches to these ids; bubblewrap cannot
    ("  process: {command: [id], user: 1000, group: 100}\n", "process.user/group"),
])
def test_to_bwrap_refuses_what_bubblewrap_cannot_say(tmp_path: Path, spec: str, named: str) -> None:
    manifest = tmp_path / "env.yaml"
    manifest.write_text("apiVersion: vbdecl/v1\nkind: Environment\nmetadata: {name: web}\nspec:\n"
                        f"{spec}  security: {{seccomp: 'off'}}\n")
    r = subprocess.run([VBDECL, "convert", "--to-bwrap", str(manifest)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode != 0
    assert named in r.stderr and "vbdecl run" in r.stderr


SECCOMP_PROBE = r"""import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
for name, nr in (("keyctl", int(sys.argv[1])), ("getpid", int(sys.argv[2]))):
    r = libc.syscall(ctypes.c_long(nr), ctypes.c_long(-1), ctypes.c_long(0), ctypes.c_long(0))
    print(name, "errno", ctypes.get_errno() if r == -1 else 0)
with open("/proc/self/status") as f:
    print(*[" ".join(line.split()) for line in f if line.startswith(("Seccomp:", "NoNewPrivs:"))])
"""


@pytest.mark.skipif(BWRAP is None, reason="needs Debian's bubblewrap")
def test_to_bwrap_with_seccomp_out_gives_bubblewrap_the_manifests_profile(tmp_path: Path) -> None:
    """A manifest with the default profile (most manifests) was refused: bubblewrap
    reads programs from fds only. --seccomp-out writes the program a run installs,
    and the command line reads it from fd 3: the payload meets the same filter."""
    from vbdecl.sys import seccomp as ssc

    s = ssc.binding()
    nums = [str(s.resolve_syscall(s.Arch.NATIVE, n)) for n in ("keyctl", "getpid")]
    probe = tmp_path / "probe.py"
    probe.write_text(SECCOMP_PROBE)
    manifest = tmp_path / "env.yaml"
    manifest.write_text(
        "apiVersion: vbdecl/v1\nkind: Environment\nmetadata: {name: sc}\nspec:\n  filesystem:\n"
        "    - {type: ro-bind, source: /usr, target: /usr}\n"
        "    - {type: symlink, target: /lib, points_to: usr/lib}\n"
        "    - {type: symlink, target: /lib64, points_to: usr/lib64}\n"
        "    - {type: symlink, target: /bin, points_to: usr/bin}\n"
        "    - {type: proc, target: /proc}\n"
        f"    - {{type: ro-bind, source: {probe}, target: /probe.py}}\n"
        f"  process: {{command: [python3, /probe.py, '{nums[0]}', '{nums[1]}']}}\n")
    refused = subprocess.run([VBDECL, "convert", "--to-bwrap", str(manifest)], capture_output=True,
                             text=True, timeout=30)
    assert refused.returncode == 1 and "--seccomp-out" in refused.stderr
    program = tmp_path / "env.bpf"
    line = subprocess.run([VBDECL, "convert", "--to-bwrap", str(manifest), "--seccomp-out", str(program)],
                          capture_output=True, text=True, timeout=30)
    assert line.returncode == 0, line.stderr
    assert line.stdout.startswith("bwrap ") and line.stdout.rstrip().endswith(f"3<{program}")
    assert program.stat().st_size % 8 == 0 and "--seccomp 3" in line.stdout
    through_bwrap = subprocess.run(["sh", "-c", line.stdout.replace("bwrap ", f"{BWRAP} ", 1)],
                                   capture_output=True, text=True, timeout=30)
    run = subprocess.run([VBDECL, "run", str(manifest)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "keyctl errno 1\ngetpid errno 0\nNoNewPrivs: 1 Seccomp: 2\n"
    assert through_bwrap.stdout == run.stdout, through_bwrap.stderr
    without = subprocess.run(["sh", "-c", line.stdout.replace("bwrap ", f"{BWRAP} ", 1)
                              .replace("--seccomp 3 ", "")], capture_output=True, text=True, timeout=30)
    assert "keyctl errno 1\n" not in without.stdout and "Seccomp: 0" in without.stdout, without


def test_print_manifest_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    r = subprocess.run([VB, "--print-manifest", "--bind", "/", "/", "touch", str(marker)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "kind: Environment" in r.stdout
    assert not marker.exists()


RUN_PROBE = r"""
awk '{ split($0, a, " - "); split(a[2], b, " "); print "mnt", $5, b[1], b[2], $6 }' /proc/self/mountinfo \
  | sed -E 's/,(relatime|noatime|nosymfollow)//g' | sort
for p in / /t /d /dev/shm; do echo "stat $p $(stat -c '%a %F' "$p" 2>&1)"; done
grep -E '^(Cap|NoNewPrivs|Seccomp)' /proc/self/status
echo "cwd $(pwd) pid $([ $$ -lt 10 ] && echo $$ || echo host) ids $(id -u) $(id -g)"
env | grep -vE '^(_|SHLVL|OLDPWD|VBDECL_CACHE_DIR)=' | sort | sed 's/^/env /'
"""

# Flag sets whose printed manifest carries no "vb does more" comment: vbdecl run of it
# must show the payload exactly what vb shows.
EXPRESSIBLE = {
    "pid-proc": ["--unshare-pid", "--unshare-net", "--proc", "/proc", "--chdir", "/"],
    "fs": ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--proc", "/proc", "--perms", "0700",
           "--tmpfs", "/t", "--mqueue", "/mq", "--chdir", "/usr", "--setenv", "A", "1"],
    "uts-user": ["--unshare-net", "--unshare-uts", "--hostname", "h", "--unshare-user", "--uid", "0",
                 "--chdir", "/"],
    # no pid namespace of its own: bubblewrap's --proc binds the host's /proc, a bind in the manifest
    "user-host-proc": ["--unshare-net", "--unshare-user", "--uid", "0", "--proc", "/proc", "--chdir", "/"],
}


def _run_manifest(manifest: Path, state: Path) -> str:
    r = subprocess.run([VBDECL, "--state-dir", str(state), "run", str(manifest)], capture_output=True,
                       text=True, timeout=30, cwd="/", env={"PATH": "/usr/bin:/bin", "HOME": "/root", "LANG": "C",
                                                            "VBDECL_CACHE_DIR": os.environ["VBDECL_CACHE_DIR"]})
    return f"{r.stdout}{r.stderr}exit {r.returncode}\n"


@pytest.mark.parametrize("case", sorted(EXPRESSIBLE))
def test_vbdecl_run_of_the_printed_manifest_is_vbs_sandbox(case: str, tmp_path: Path) -> None:
    probe = tmp_path / "probe.sh"
    probe.write_text(RUN_PROBE)
    argv = [*BASE[:-2], "--ro-bind", "/etc", "/etc", "--ro-bind", str(probe), "/probe.sh",
            *EXPRESSIBLE[case], "sh", "/probe.sh"]
    printed = subprocess.run([VB, "--print-manifest", *argv], capture_output=True, text=True, timeout=30)
    assert printed.returncode == 0, printed.stderr
    assert not printed.stdout.startswith("#"), printed.stdout    # nothing vb-only left
    manifest = tmp_path / "env.yaml"
    manifest.write_text(printed.stdout)
    first = _payload(VB, argv, probe)
    assert "exit 0" in first
    # A manifest's proc also covers /proc/sys read-only, which bubblewrap's access(2) test leaves
    # writable for root, and masks the host's keys and timers (docs/vb.md): the lines the
    # manifest's run may add.
    got = _run_manifest(manifest, tmp_path / "state")
    added = ("mnt /proc/sys ", "mnt /proc/keys ", "mnt /proc/timer_list ")
    assert "\n".join(line for line in got.split("\n") if not line.startswith(added)) == first


def test_print_manifest_says_what_it_cannot_express(tmp_path: Path) -> None:
    argv = [*BASE, "--ro-bind", "/etc", "/etc", "--dev", "/dev", "--perms", "0700", "--dir", "/a/b",
            "--cap-drop", "CAP_CHOWN", "true"]
    printed = subprocess.run([VB, "--print-manifest", *argv], capture_output=True, text=True, timeout=30)
    assert printed.returncode == 0, printed.stderr
    head = [line for line in printed.stdout.splitlines() if line.startswith("#")]
    text = "\n".join(head)
    for words in ("/dev/shm is a plain 0755 directory", "vb creates for /a/b",
                  "--dir /a/b", "no --chdir", "bounding set", "--proc without a pid namespace"):
        assert words in text, words
    # no resolv.conf, as vb's: the manifest says so itself
    assert "/etc/resolv.conf" not in text and "    dns: []\n" in printed.stdout, printed.stdout
