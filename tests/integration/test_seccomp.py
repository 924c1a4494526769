"""seccomp as the payload sees it: the default profile, deny/allow lists, profile files, raw BPF.

Every denial is checked against a control run: the same call with the same
(harmless, invalid) arguments, executed for real with seccomp off, must give
a different result, so an EPERM seen under the filter comes from the filter.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from test_security_support import python, run, spec

from vbdecl.ops import sec
from vbdecl.sys import seccomp as ssc

CALLS = r'''import ctypes, json, sys
libc = ctypes.CDLL(None, use_errno=True)
P = ctypes.c_void_p
BAD = P(1)  # an invalid user pointer: EFAULT if the kernel gets that far
NUMS = json.loads(sys.argv[1])
ARGS = {
 "kexec_load": (0, 0, None, 0xFFFF0000),
 "kexec_file_load": (-1, -1, 0, None, 0xFFFF0000),
 "reboot": (0, 0, 0, None),
 "init_module": (None, 0, None), "finit_module": (-1, None, 0),
 "delete_module": (b"vbdecl_no_such_module", 0x800),
 "create_module": (None, 0), "query_module": (None, 0, None, 0, None), "get_kernel_syms": (None,),
 "swapon": (BAD, 0), "swapoff": (BAD,),
 "keyctl": (-1, 0, 0, 0, 0), "add_key": (BAD, BAD, None, 0, 0), "request_key": (BAD, BAD, BAD, 0),
 "bpf": (-1, None, 0), "perf_event_open": (BAD, -1, -1, -1, 0xFFFF0000), "userfaultfd": (0xFFFF0000,),
 "io_uring_setup": (0, BAD), "io_uring_enter": (-1, 0, 0, 0, None, 0), "io_uring_register": (-1, 0, None, 0),
 "open_by_handle_at": (-1, BAD, 0),
 "mount": (BAD, BAD, BAD, 0, None), "umount2": (b"/vbdecl-no-such-mount", 0), "pivot_root": (BAD, BAD),
 "move_mount": (-1, BAD, -1, BAD, 0xFFFF0000), "open_tree": (-1, BAD, 0xFFFF0000), "fsopen": (BAD, 0xFFFF0000),
 "fsconfig": (-1, 0xFFFF, None, None, 0), "fsmount": (-1, 0xFFFF0000, 0), "fspick": (-1, BAD, 0xFFFF0000),
 "mount_setattr": (-1, BAD, 0xFFFF0000, None, 0),
 "settimeofday": (BAD, BAD), "clock_settime": (0x7FFF, BAD), "acct": (BAD,),
 "iopl": (17,), "ioperm": (0xFFFFFFF0, 0x100, 0), "syslog": (0x7FFF, None, 0),
 "quotactl": (0x7FFF0000, BAD, 0, None), "quotactl_fd": (-1, 0x7FFF0000, 0, None),
 "lookup_dcookie": (0, None, 0), "nfsservctl": (0, None, None), "uselib": (BAD,), "_sysctl": (BAD,),
}
out = {}
for name, nr in NUMS.items():
    args = ARGS[name]
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
    out[name] = ctypes.get_errno() if r == -1 else f"ret={r}"
print(json.dumps(out))
'''


def _native_numbers(names: list[str]) -> dict[str, int]:
    s = ssc.binding()
    nums = {n: s.resolve_syscall(s.Arch.NATIVE, n) for n in names}
    return {n: v for n, v in nums.items() if v >= 0}


def _default_names() -> list[str]:
    """The calls the default profile denies whatever their arguments."""
    return [n for r in sec.default_profile()["syscalls"] if not r.get("args") for n in r["names"]]


# TIOCSTI on a terminal of our own (our controlling one, in a session of our own), as
# the request and with bits above the 32 the kernel reads set (how a filter comparing
# the whole 64-bit argument was passed, CVE-2019-10063)
TIOCSTI = r'''import ctypes, json, os, termios
libc = ctypes.CDLL(None, use_errno=True)
master, slave = os.openpty()
r, w = os.pipe()
if os.fork() == 0:
    os.setsid()
    tty = os.open(os.ttyname(slave), os.O_RDWR)
    res = {}
    for label, req in (("plain", termios.TIOCSTI), ("high bits", termios.TIOCSTI | 1 << 32)):
        ok = libc.ioctl(tty, ctypes.c_ulong(req), ctypes.c_char_p(b"x"))
        res[label] = 0 if ok == 0 else ctypes.get_errno()
    os.write(w, json.dumps(res).encode())
    os._exit(0)
os.close(w)
print(os.read(r, 4096).decode())
os.wait()
'''


def test_default_profile_denies_pushing_input_into_a_terminal(tmp_path: Path) -> None:
    """A security review's finding: without new_session (the default) the process could
    push a command into the terminal of the shell that started vbdecl (TIOCSTI)."""
    control = python(tmp_path, spec({"seccomp": "off"}), TIOCSTI)
    assert control.code == 0, control
    if json.loads(control.out) != {"plain": 0, "high bits": 0}:
        pytest.skip(f"TIOCSTI is refused here anyway (dev.tty.legacy_tiocsti 0?): {control.out}")
    denied = python(tmp_path, spec({"seccomp": "default"}), TIOCSTI)
    assert denied.code == 0, denied
    assert json.loads(denied.out) == {"plain": 1, "high bits": 1}


def test_default_profile_denies_each_listed_call_with_eperm(tmp_path: Path) -> None:
    nums = _native_numbers(_default_names())
    assert len(nums) >= 35, nums
    code = CALLS
    argv = [json.dumps(nums)]
    denied = python(tmp_path, spec({"seccomp": "default", "capabilities": {"add": ["ALL"]}}),
                    code, extra_args=argv, netns=True)
    assert denied.code == 0, denied
    got = json.loads(denied.out)
    assert got == dict.fromkeys(nums, 1), {k: v for k, v in got.items() if v != 1}
    # Control: with seccomp off (and every capability), the same calls reach the kernel.
    control = python(tmp_path, spec({"seccomp": "off", "capabilities": {"add": ["ALL"]}}),
                     code, extra_args=argv, netns=True)
    assert control.code == 0, control
    ctl = json.loads(control.out)
    assert all(v != 1 for v in ctl.values()), ctl


@pytest.mark.skipif(os.uname().machine != "x86_64" or not shutil.which("gcc"), reason="x86_64 + gcc")
def test_default_profile_covers_the_32bit_abi(tmp_path: Path) -> None:
    src = tmp_path / "i386.c"
    src.write_text(r"""
#include <stdio.h>
int main(void) {
    long ret;
    __asm__ volatile ("int $0x80" : "=a"(ret) : "a"(88L), "b"(0L), "c"(0L), "d"(0L) : "memory");
    printf("%ld\n", ret);                       /* 32-bit reboot */
    __asm__ volatile ("int $0x80" : "=a"(ret) : "a"(20L) : "memory");
    printf("%ld\n", ret > 0 ? 1L : ret);        /* 32-bit getpid */
    return 0;
}
""")
    exe = tmp_path / "i386"
    subprocess.run(["gcc", "-O0", "-o", str(exe), str(src)], check=True)
    r = run(tmp_path, spec({"seccomp": "default"}), [str(exe)])
    assert r.code == 0, r
    assert r.out.split() == ["-1", "1"]          # -EPERM; getpid still works (not killed)
    ctl = run(tmp_path, spec({"seccomp": "off", "capabilities": {"add": ["ALL"]}}), [str(exe)])
    assert ctl.out.split() == ["-22", "1"]       # -EINVAL: the call ran


def test_default_profile_runs_shell_python_coreutils_and_gcc(tmp_path: Path) -> None:
    s = spec({"seccomp": "default"})
    r = run(tmp_path, s, ["/bin/sh", "-c",
                          "ls / >/dev/null && cat /etc/hostname >/dev/null && sort </etc/passwd | "
                          "head -1 >/dev/null && mkdir -p d/e && cp /etc/hostname d/e/x && "
                          "sha256sum d/e/x >/dev/null && rm -r d && echo shell-ok"],
            cwd=str(tmp_path))
    assert (r.code, r.out.strip()) == (0, "shell-ok"), r
    r = python(tmp_path, s, "import json, subprocess, threading, hashlib; "
                            "t = threading.Thread(target=print, args=('thread',)); t.start(); t.join(); "
                            "print(subprocess.run(['true']).returncode)")
    assert (r.code, r.out.split()) == (0, ["thread", "0"]), r
    if shutil.which("gcc"):
        (tmp_path / "h.c").write_text('#include <stdio.h>\nint main(void){puts("cc-ok");return 0;}\n')
        r = run(tmp_path, s, ["/bin/sh", "-c", "gcc -o h h.c && ./h"], cwd=str(tmp_path))
        assert (r.code, r.out.strip()) == (0, "cc-ok"), r


MKDIR = "import os, sys\ntry:\n    os.mkdir(sys.argv[1])\n    print('ok')\nexcept OSError as e:\n    print(e.errno)\n"


def test_deny_list_with_groups_and_errno_adds_to_the_default(tmp_path: Path) -> None:
    target = str(tmp_path / "made")
    s = spec({"seccomp": {"deny": ["mkdir", "mkdirat", "@swap"], "errno": "EROFS"}})
    r = python(tmp_path, s, MKDIR, extra_args=[target])
    assert r.out.strip() == "30", r                       # EROFS from the filter
    assert not os.path.exists(target)
    nums = _native_numbers(["swapoff", "reboot"])
    r = python(tmp_path, s, CALLS, extra_args=[json.dumps(nums)])
    assert json.loads(r.out) == {"swapoff": 30, "reboot": 1}, r   # group expanded; default kept
    r = python(tmp_path, spec({"seccomp": "default"}), MKDIR, extra_args=[target])
    assert r.out.strip() == "ok"


def test_unknown_names_in_lists_are_setup_errors(tmp_path: Path) -> None:
    r = run(tmp_path, spec({"seccomp": {"deny": ["no_such_call"]}}), ["/bin/true"])
    assert r.code == 125 and "unknown system call 'no_such_call'" in r.err, r
    r = run(tmp_path, spec({"seccomp": {"deny": ["@nope"]}}), ["/bin/true"])
    assert r.code == 125 and "unknown system call group" in r.err, r


@pytest.mark.skipif(not shutil.which("gcc"), reason="gcc")
def test_allow_list_denies_everything_else(tmp_path: Path) -> None:
    (tmp_path / "a.c").write_text(r"""
#include <errno.h>
#include <stdio.h>
#include <sys/utsname.h>
#include <unistd.h>
int main(void) {
    struct utsname u;
    int r = uname(&u);
    printf("uname=%d errno=%d pid=%d\n", r, r ? errno : 0, getpid() > 0);
    return 0;
}
""")
    subprocess.run(["gcc", "-static", "-o", str(tmp_path / "a"), str(tmp_path / "a.c")], check=True)
    allow = ["write", "getpid", "brk", "arch_prctl", "set_tid_address", "set_robust_list", "rseq",
             "prlimit64", "readlinkat", "mprotect", "newfstatat", "fstat", "getrandom"]
    r = run(tmp_path, spec({"seccomp": {"allow": allow, "errno": "ENOSYS"}}), [str(tmp_path / "a")])
    assert (r.code, r.out.strip()) == (0, "uname=-1 errno=38 pid=1"), r
    r = run(tmp_path, spec({"seccomp": {"allow": [*allow, "uname"]}}), [str(tmp_path / "a")])
    assert (r.code, r.out.strip()) == (0, "uname=0 errno=0 pid=1"), r


SOCKETS = """
import socket
for fam in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX):
    try:
        socket.socket(fam, socket.SOCK_STREAM).close()
        print('ok')
    except OSError as e:
        print(e.errno)
"""


def test_profile_file_in_oci_format(tmp_path: Path) -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 97,
             "args": [{"index": 0, "value": 10, "op": "SCMP_CMP_EQ"}]},           # AF_INET6 only
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 18},
            {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO",                     # needs a cap we lack
             "includes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["a_call_from_the_future"], "action": "SCMP_ACT_ERRNO"},  # skipped
        ],
    }
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(profile))
    s = spec({"seccomp": {"profile": str(path)}})
    r = python(tmp_path, s, SOCKETS + "\nimport os; os.getcwd(); print('cwd')", netns=True)
    assert r.out.split() == ["ok", "97", "ok", "cwd"], r
    r = python(tmp_path, s, MKDIR, extra_args=[str(tmp_path / "x")])
    assert r.out.strip() == "18", r
    # load_host_files reads the profile into the spec: the child no longer needs the file.
    loaded = sec.load_host_files(s)
    path.unlink()
    r = python(tmp_path, loaded, MKDIR, extra_args=[str(tmp_path / "x")])
    assert r.out.strip() == "18", r
    r = run(tmp_path, s, ["/bin/true"])
    assert r.code == 125 and "cannot read the seccomp profile" in r.err, r


def test_raw_bpf_programs_from_fds(tmp_path: Path) -> None:
    s = ssc.binding()
    filt = s.SyscallFilter(s.ALLOW)
    filt.add_rule(s.ERRNO(18), "mkdir")
    filt.add_rule(s.ERRNO(18), "mkdirat")
    prog = ssc.export_bpf(filt)
    fd = os.memfd_create("bpf")
    os.write(fd, prog)
    os.lseek(fd, 0, 0)
    try:
        r = python(tmp_path, spec({"seccomp": "off"}, vb={"seccomp_fds": [fd]}), MKDIR,
                   extra_args=[str(tmp_path / "y")])
    finally:
        os.close(fd)
    assert r.out.strip() == "18", r
    # The runtime path: the parent reads the fd (load_host_files); the child gets bytes.
    fd = os.memfd_create("bpf")
    os.write(fd, prog)
    os.lseek(fd, 0, 0)
    loaded = sec.load_host_files(spec({"seccomp": "off"}, vb={"seccomp_fds": [fd]}))
    assert loaded["vb"]["seccomp_fds"] == [] and len(loaded["vb"]["seccomp_programs"]) == 1
    r = python(tmp_path, loaded, MKDIR, extra_args=[str(tmp_path / "y")])
    assert r.out.strip() == "18", r
    bad_r, bad_w = os.pipe()
    os.write(bad_w, b"\x00" * 12)
    os.close(bad_w)
    try:
        r = run(tmp_path, spec({"seccomp": "off"}, vb={"seccomp_fds": [bad_r]}), ["/bin/true"])
    finally:
        os.close(bad_r)
    assert r.code == 125 and "not a non-empty multiple of 8" in r.err, r


def test_seccomp_without_no_new_privs_holds_sys_admin_only_for_the_load(tmp_path: Path) -> None:
    r = python(tmp_path, spec({"seccomp": "default", "no_new_privs": False}),
               "import json; print(json.dumps([l.split()[1] for l in open('/proc/self/status') "
               "if l.startswith(('NoNewPrivs', 'Seccomp:', 'CapEff'))]))")
    eff, nnp, mode = json.loads(r.out)
    assert (nnp, mode) == ("0", "2"), r
    assert not int(eff, 16) >> 21 & 1          # CAP_SYS_ADMIN dropped after the load
