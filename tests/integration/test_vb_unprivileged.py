"""vb as a non-root user works through a user namespace, as a non-setuid bubblewrap does.

A throw-away user (created here, removed after) runs the same flags through
Debian's bwrap and through vb (the system python3 running vb from the work
tree: the venv's interpreter lives under /root); the payload's view must be
the same.
"""

from __future__ import annotations

import os
import pwd
import random
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import testops

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"
BWRAP = shutil.which("bwrap")

PROBE = r"""
echo "ids $(id -u) $(id -g) cwd $(pwd) pid $([ $$ -lt 10 ] && echo $$ || echo host)"
for p in / /t /d /d/e /dev/shm; do echo "stat $p $(stat -c '%a %U %F' "$p" 2>&1)"; done
awk '{ split($0, a, " - "); split(a[2], b, " "); print "mnt", $5, b[1], $6 }' /proc/self/mountinfo \
  | sed -E 's/,(relatime|noatime|nosymfollow)//g' | sort
grep -E '^(CapInh|CapEff|CapPrm|CapBnd|CapAmb|NoNewPrivs):' /proc/self/status
cat /proc/self/uid_map /proc/self/gid_map | tr -s ' '
[ "$(awk 'NR>2' /proc/net/dev | wc -l)" -le 2 ] && awk 'NR>2 {print "if", $1}' /proc/net/dev | sort
env | grep -vE '^(_|SHLVL|OLDPWD)=' | sort | sed 's/^/env /'
"""

BASE = ["--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
        "--symlink", "usr/bin", "/bin"]

CASES = {
    "implied-userns": [],
    "pid-proc-dev": ["--unshare-pid", "--proc", "/proc", "--dev", "/dev"],
    "uid-gid": ["--unshare-user", "--uid", "0", "--gid", "0", "--proc", "/proc"],
    "all": ["--unshare-all", "--proc", "/proc", "--dev", "/dev", "--hostname", "x"],
    "fs": ["--proc", "/proc", "--perms", "0700", "--tmpfs", "/t", "--dir", "/d/e", "--chdir", "/d"],
    "implied-userns-uid-gid": ["--uid", "5", "--gid", "6", "--proc", "/proc"],
    "caps": ["--unshare-user", "--uid", "0", "--cap-drop", "ALL", "--cap-add", "CAP_CHOWN", "--proc", "/proc"],
    "caps-add": ["--cap-add", "CAP_NET_RAW", "--proc", "/proc"],
    "caps-add-all-uid0": ["--uid", "0", "--cap-add", "ALL", "--cap-drop", "CAP_SYS_ADMIN", "--proc", "/proc"],
    "caps-drop-all": ["--cap-add", "ALL", "--cap-drop", "ALL", "--proc", "/proc"],
}

pytestmark = pytest.mark.skipif(BWRAP is None or not os.path.exists(SYSTEM_PYTHON)
                                or shutil.which("useradd") is None,
                                reason="needs Debian's bubblewrap, the system python3 and useradd")


@pytest.fixture(scope="module")
def setup():  # type: ignore[no-untyped-def]
    name = f"vbu{os.getpid() % 100000}"
    subprocess.run(["useradd", "--no-create-home", "--home-dir", "/nonexistent", "--shell",
                    "/usr/sbin/nologin", name], check=True)
    base = Path(tempfile.mkdtemp(prefix="vbdecl-vb-unpriv-", dir="/var/tmp"))
    try:
        base.chmod(0o755)
        probe = base / "probe.sh"
        probe.write_text(PROBE)
        probe.chmod(0o644)
        vb = base / "vb"
        vb.write_text(f"#!{SYSTEM_PYTHON} -I\nimport sys\nsys.dont_write_bytecode = True\n"
                      f"sys.path.insert(0, {str(REPO)!r})\nfrom vbdecl.entry import console_vb\nconsole_vb()\n")
        vb.chmod(0o755)
        pw = pwd.getpwnam(name)
        yield pw.pw_uid, pw.pw_gid, str(vb), str(probe)
    finally:
        shutil.rmtree(base, ignore_errors=True)
        subprocess.run(["userdel", name], check=False)


def _run(tool: str, args: list[str], uid: int, gid: int, probe: str) -> str:
    r = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", tool, *BASE,
                        "--ro-bind", probe, "/probe.sh", *args, "sh", "/probe.sh"],
                       capture_output=True, text=True, timeout=30, cwd="/",
                       env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "LANG": "C"})
    return f"{r.stdout}{r.stderr}exit {r.returncode}\n"


@pytest.mark.parametrize("case", sorted(CASES))
def test_unprivileged_vb_sees_what_bwrap_sees(case: str, setup: tuple[int, int, str, str]) -> None:
    uid, gid, vb, probe = setup
    expected = _run(BWRAP, CASES[case], uid, gid, probe)  # type: ignore[arg-type]
    if "--dev" in CASES[case]:
        # Known difference (docs/vb.md): for --dev, bubblewrap sets up as uid 0 of a first user
        # namespace and runs the command in a second one nested in it, so its maps read
        # "UID 0 1"; vb uses one user namespace, mapped "UID UID 1". The ids seen are the same.
        expected = expected.replace(f" {uid} 0 1\n", f" {uid} {uid} 1\n").replace(
            f" {gid} 0 1\n", f" {gid} {gid} 1\n")
    got = _run(vb, CASES[case], uid, gid, probe)
    assert "exit 0" in got and f"{uid}" in got     # it ran, mapped to the user outside
    assert got == expected


# Interactions: fixed combinations of 2-3 of those flag sets and a few more options.
MORE = {
    "cap-raw": ["--cap-add", "CAP_NET_RAW"], "net": ["--unshare-net"], "ipc": ["--unshare-ipc"],
    "uts": ["--unshare-uts", "--hostname", "h"], "tmp": ["--tmpfs", "/tmp"], "setenv": ["--setenv", "Z", "1"],
    "new-session": ["--new-session"], "die": ["--die-with-parent"], "dir": ["--dir", "/x/y"],
    "uid7": ["--unshare-user", "--uid", "7"], "disable-userns": ["--unshare-user", "--disable-userns"],
}
_SWEEP = random.Random(2026)
COMBINED = [_SWEEP.sample(sorted({**CASES, **MORE}), _SWEEP.randint(2, 3)) for _ in range(16)]


@pytest.mark.parametrize("names", COMBINED, ids="+".join)
def test_combined_flag_sets_see_what_bwrap_sees(names: list[str], setup: tuple[int, int, str, str]) -> None:
    uid, gid, vb, probe = setup
    args = [arg for name in names for arg in {**CASES, **MORE}[name]]
    expected = _run(BWRAP, args, uid, gid, probe)  # type: ignore[arg-type]
    if "--dev" in args or "--disable-userns" in args:
        # Known difference (docs/vb.md): bubblewrap runs the command in a second user
        # namespace nested in the one it set up in, mapped to that one's uid 0
        outside = iter((uid, gid))     # the probe prints uid_map, then gid_map
        expected = re.sub(r"^ (\d+) 0 1$", lambda m: f" {m.group(1)} {next(outside)} 1", expected,
                          flags=re.M)
    got = _run(vb, args, uid, gid, probe).replace("vb: ", "bwrap: ")
    assert "exit 0" in got
    assert got == expected


@pytest.mark.parametrize("option", ["--userns", "--pidns"])
def test_joining_a_namespace_the_user_may_not_join_fails_in_bubblewraps_words(
        option: str, setup: tuple[int, int, str, str]) -> None:
    """A namespace of root's (a process of ours in new user and pid namespaces): the
    throw-away user may not join it. bubblewrap's first line (its parent may add one
    when its child dies) and exit status."""
    uid, gid, vb, _ = setup
    kind = "user" if option == "--userns" else "pid"
    args = [option] if kind == "user" else ["--unshare-user", option]
    outputs = {}
    with testops.namespace_fds("--user", "--pid", kinds=(kind,)) as fds:
        for tool in (BWRAP, vb):
            r = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", tool,
                                *args, str(fds[kind]), *BASE, "true"], pass_fds=(fds[kind],),
                               capture_output=True, text=True, timeout=30, cwd="/",
                               env={"PATH": "/usr/bin:/bin", "LANG": "C"})
            first = r.stderr.splitlines()[0] if r.stderr else ""
            outputs[tool] = (r.returncode, first.split(": ", 1)[-1])
    assert outputs[BWRAP][0] == 1 and "Operation not permitted" in outputs[BWRAP][1]
    assert outputs[vb] == outputs[BWRAP]


def test_joining_a_user_namespace_of_ones_own_keeps_the_ids_it_maps_to(setup: tuple[int, int, str, str]) -> None:
    """--userns FD without --uid/--gid: the ids the namespace maps the caller's to (vb
    set the caller's own, unmapped there: EINVAL)."""
    uid, gid, vb, _ = setup
    script = ('unshare -U --map-root-user sleep 30 & n=0; '
              'while [ "$(readlink /proc/$!/ns/user)" = "$(readlink /proc/self/ns/user)" ] && [ $n -lt 300 ]; '
              'do sleep 0.01; n=$((n+1)); done; '
              '"$0" --ro-bind / / --userns 3 id 3</proc/$!/ns/user; echo "exit $?"; kill $!')
    outputs = {}
    for tool in (BWRAP, vb):
        r = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "sh", "-c", script,
                            tool], capture_output=True, text=True, timeout=30, cwd="/",  # type: ignore[list-item]
                           env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "LANG": "C"})
        outputs[tool] = r.stdout + r.stderr
    assert outputs[BWRAP] == "uid=0(root) gid=0(root) groups=0(root)\nexit 0\n"
    assert outputs[vb] == outputs[BWRAP]


def test_limits_without_root_are_told_with_vbs_options(setup: tuple[int, int, str, str]) -> None:
    """A user's review: vb --limit-memory without root said `vb: limits.memory: ... (cgroup
    not delegated)`, a manifest key the user never wrote, with no hint."""
    uid, gid, vb, probe = setup
    got = _run(vb, ["--limit-memory", "64M", "--limit-pids", "10"], uid, gid, probe)
    assert got.endswith("exit 1\n") and "limits." not in got, got
    assert "vb: --limit-memory: " in got and "; --limit-pids: " in got, got
    assert "vb: hint: run as root" in got and "leave out --limit-memory and --limit-pids" in got, got
