"""Helpers for the security tests: spawn a payload after apply_in_child.

No tests here. A payload runs in a forked child that optionally unshares a
user namespace (identity-mapped by the parent), applies the security part of
a spec with :func:`vbdecl.ops.sec.apply_in_child`, and execs. The tests then
read what the kernel shows from inside (/proc/self/status, errnos, files).
"""

from __future__ import annotations

import ctypes
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vbdecl.ops import sec

CLONE_NEWUSER = 0x10000000
CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


@dataclass
class Result:
    code: int
    out: str
    err: str


def spec(security: dict[str, Any] | None = None, *, user: int = 0, group: int = 0,
         userns: bool = False, **extra: Any) -> dict[str, Any]:
    sec_part = {"no_new_privs": True, "capabilities": None, "seccomp": "off", "landlock": None,
                "disable_userns": False}
    sec_part.update(security or {})
    out: dict[str, Any] = {"security": sec_part, "process": {"user": user, "group": group},
                           "namespaces": {"user": userns}}
    out.update(extra)
    return out


def run(tmp: Path, the_spec: dict[str, Any], argv: list[str], *, userns: bool = False,
        netns: bool = False, env: dict[str, str] | None = None, cwd: str | None = None,
        timeout: float = 60.0) -> Result:
    """Run argv under the_spec's security settings; return exit code and output."""
    import select
    import time

    # Import what the child needs before forking (the child should only exec).
    from vbdecl.sys import caps, landlock, seccomp  # noqa: F401

    if the_spec["security"].get("seccomp") not in (None, "off"):
        seccomp.binding()
    out_path, err_path = tmp / f"out-{os.getpid()}-{time.monotonic_ns()}", tmp / "err.txt"
    out_fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    err_fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    sync_r, sync_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    environ = env if env is not None else {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.dup2(out_fd, 1)
            os.dup2(err_fd, 2)
            os.close(sync_r)
            os.close(go_w)
            flags = (CLONE_NEWUSER if userns else 0) | (CLONE_NEWNET if netns else 0)
            if flags and _libc.unshare(flags) != 0:
                raise OSError(ctypes.get_errno(), "unshare")
            os.write(sync_w, b"u")
            if os.read(go_r, 1) != b"g":
                raise RuntimeError("parent did not map ids")
            if cwd:
                os.chdir(cwd)
            sec.apply_in_child(the_spec)
            os.execve(argv[0], argv, environ)
        except BaseException as e:
            try:
                os.write(2, f"SETUP-ERROR: {type(e).__name__}: {e}\n".encode())
            finally:
                os._exit(125)
        os._exit(126)
    os.close(out_fd)
    os.close(err_fd)
    os.close(sync_w)
    os.close(go_r)
    try:
        ready, _, _ = select.select([sync_r], [], [], timeout)
        if ready and os.read(sync_r, 1) == b"u" and userns:
            Path(f"/proc/{pid}/uid_map").write_text("0 0 65536\n")
            Path(f"/proc/{pid}/gid_map").write_text("0 0 65536\n")
        os.write(go_w, b"g")
    finally:
        os.close(sync_r)
        os.close(go_w)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise TimeoutError(f"payload {argv} did not finish in {timeout}s")
        time.sleep(0.005)
    out, err = out_path.read_text(), err_path.read_text()
    out_path.unlink()
    return Result(os.waitstatus_to_exitcode(status), out, err)


# The system interpreter: the venv's lives under /root, which a non-root payload cannot reach.
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def python(tmp: Path, the_spec: dict[str, Any], code: str, *, extra_args: list[str] | None = None,
           **kw: Any) -> Result:
    return run(tmp, the_spec, [PYTHON, "-S", "-I", "-c", code, *(extra_args or [])], **kw)


STATUS_PAYLOAD = """
import json
out = {}
for line in open('/proc/self/status'):
    k, _, v = line.partition(':')
    if k.startswith('Cap') or k in ('NoNewPrivs', 'Seccomp', 'Seccomp_filters', 'Uid', 'Gid', 'Groups'):
        out[k] = v.strip()
print(json.dumps(out))
"""


def status(tmp: Path, the_spec: dict[str, Any], **kw: Any) -> dict[str, Any]:
    import json

    r = python(tmp, the_spec, STATUS_PAYLOAD, **kw)
    assert r.code == 0, r
    data: dict[str, Any] = json.loads(r.out)
    for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        data[k] = int(data[k], 16)
    return data
