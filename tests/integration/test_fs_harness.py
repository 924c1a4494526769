"""Helpers for the filesystem tests: build a root in a forked child's own mount namespace.

``in_sandbox(spec, probe)`` forks; the child unshares a mount namespace (and
optionally a pid namespace), runs :func:`vbdecl.runtime.rootfs.setup_root`,
then calls ``probe()`` inside the new root and sends its JSON result back.
The host is never touched; the child's namespace dies with it.
"""

from __future__ import annotations

import ctypes
import json
import os
import time
import traceback
from collections.abc import Callable
from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
_libc = ctypes.CDLL(None, use_errno=True)


def unshare(flags: int) -> None:
    if _libc.unshare(flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def base_spec(filesystem: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"rootfs": None, "hostname": None, "filesystem": filesystem,
                            "network": {"mode": "isolated", "dns": None, "hosts": {}}}
    spec.update(kw)
    return spec


def enter_userns() -> None:
    """A new user namespace mapping only root to root (what a rootless run looks like)."""
    unshare(CLONE_NEWUSER)
    for name, text in (("setgroups", "deny"), ("uid_map", "0 0 1"), ("gid_map", "0 0 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)


def in_sandbox(spec: dict[str, Any], probe: Callable[[], Any], *, pidns: bool = False,
               userns: bool = False,
               before: Callable[[], None] | None = None, stats: dict[str, Any] | None = None,
               ) -> Any:
    """Run setup_root(spec) then probe() in a child; return probe's result.

    Raises RuntimeError with the child's error text if setup or probe failed.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            os.close(r)
            if userns:
                enter_userns()
            unshare(CLONE_NEWNS | (CLONE_NEWPID | CLONE_NEWIPC if pidns else 0))
            if pidns:
                inner = os.fork()
                if inner:
                    _, st = os.waitpid(inner, 0)
                    os._exit(os.waitstatus_to_exitcode(st))
            global _proc_fd
            _proc_fd = os.open("/proc", os.O_PATH | os.O_DIRECTORY)
            from vbdecl.runtime.rootfs import setup_root

            if before is not None:
                before()

            fds0 = open_fds()
            t0 = time.perf_counter()
            setup_root(spec)
            t1 = time.perf_counter()
            leaked = sorted(open_fds() - fds0)
            out = {"ok": probe(), "setup_s": t1 - t0, "leaked_fds": leaked}
        except BaseException as exc:  # report everything to the parent
            out = {"error": f"{type(exc).__name__}: {exc}",
                   "where": getattr(exc, "where", None), "tb": traceback.format_exc()}
            code = 1
        try:
            data = json.dumps(out).encode()
            while data:
                data = data[os.write(w, data):]
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    while True:
        b = os.read(r, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    os.waitpid(pid, 0)
    res = json.loads(b"".join(chunks) or b'{"error": "child died without a word"}')
    if "error" in res:
        raise SandboxError(res["error"], res.get("where"), res.get("tb", ""))
    if stats is not None:
        stats["setup_s"] = res["setup_s"]
        stats["leaked_fds"] = res["leaked_fds"]
    return res["ok"]


_proc_fd = -1  # the host's /proc, kept by the child so probes need no /proc inside


def open_fds() -> set[int]:
    """The child's open fds (through the host's /proc, which needs no /proc inside)."""
    fd = os.open("self/fd", os.O_RDONLY | os.O_DIRECTORY, dir_fd=_proc_fd)
    try:
        return {int(n) for n in os.listdir(fd)} - {fd}
    finally:
        os.close(fd)


class SandboxError(RuntimeError):
    def __init__(self, message: str, where: str | None, tb: str) -> None:
        super().__init__(f"{message} (where={where})\n{tb}")
        self.message = message
        self.where = where


def mountinfo() -> dict[str, dict[str, Any]]:
    """Mount point -> {fstype, opts (set), super (set), source} of the topmost mount."""
    out: dict[str, dict[str, Any]] = {}
    fd = os.open("self/mountinfo", os.O_RDONLY, dir_fd=_proc_fd) if _proc_fd >= 0 else \
        os.open("/proc/self/mountinfo", os.O_RDONLY)
    with open(fd) as f:
        for line in f:
            parts = line.split()
            sep = parts.index("-")
            out[parts[4].replace("\\040", " ")] = {
                "root": parts[3], "opts": sorted(parts[5].split(",")), "fstype": parts[sep + 1],
                "source": parts[sep + 2], "super": sorted(parts[sep + 3].split(",")),
            }
    return out
