"""Shared test fixtures: the root marker and the leak guard.

Every test under tests/integration runs inside the leak guard: host mounts,
links, addresses, routes, nftables ruleset, cgroup directories, vbdecl's
default state/runtime directories, /tmp entries named like ours, the test
process's open fds and its children (zombies included) are snapshotted
before and compared after. Any difference fails the test with a diff.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = os.geteuid() == 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason="needs root")
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.root)
        if "root" in item.keywords and not ROOT:
            item.add_marker(skip)


# --- leak guard -------------------------------------------------------------

_OURS = ("vbdecl", "vb-")


def _mounts() -> set[str]:
    out = set()
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        parts = line.split()
        out.add(f"{parts[4]} {parts[parts.index('-') + 1]}")
    return out


def _sysfs_names(path: str) -> set[str]:
    try:
        return set(os.listdir(path))
    except OSError:
        return set()


def _ip(*args: str) -> str:
    if not shutil.which("ip"):
        return ""
    return subprocess.run(["ip", *args], capture_output=True, text=True).stdout


def _nft() -> str:
    if not shutil.which("nft"):
        return ""
    out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    return "\n".join(sorted(out.splitlines()))


def _cgroups() -> set[str]:
    found = set()
    base = Path("/sys/fs/cgroup")
    for top in [base, *[p for p in base.iterdir() if p.is_dir()]] if base.is_dir() else []:
        for sub in ("", "vbdecl"):
            d = top / sub if sub else top
            try:
                for entry in os.scandir(d):
                    if entry.is_dir() and any(o in entry.name for o in _OURS):
                        found.add(str(Path(d) / entry.name))
            except OSError:
                pass
    return found


def _tmp_entries() -> set[str]:
    try:
        return {n for n in os.listdir("/tmp") if n.startswith((".vbdecl", "vbdecl-stage", "vb-"))}
    except OSError:
        return set()


def _fds() -> set[str]:
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.add(f"{fd} -> {os.readlink(f'/proc/self/fd/{fd}')}")
        except OSError:
            pass
    return out


def _children() -> set[str]:
    me = str(os.getpid())
    out = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[1] == me:
            out.add(f"{pid} {stat.split('(')[1].split(')')[0]} state={fields[0]}")
    return out


def _state_dirs() -> set[str]:
    out = set()
    for d in ("/run/vbdecl", "/var/lib/vbdecl"):
        if os.path.isdir(d):
            out |= {f"{d}/{n}" for n in os.listdir(d)}
    return out


def snapshot() -> dict[str, object]:
    return {
        "mounts": _mounts(),
        "links": _sysfs_names("/sys/class/net"),
        "addresses": _ip("-o", "addr", "show"),
        "routes": _ip("route", "show", "table", "all"),
        "nftables": _nft(),
        "cgroups": _cgroups(),
        "tmp": _tmp_entries(),
        "fds": _fds(),
        "children": _children(),
        "state": _state_dirs(),
    }


def diff_snapshots(before: dict[str, object], after: dict[str, object]) -> list[str]:
    problems = []
    for key, old in before.items():
        new = after[key]
        if old == new:
            continue
        if isinstance(old, set) and isinstance(new, set):
            added, removed = sorted(new - old), sorted(old - new)
            problems.append(f"{key}: left behind {added}; gone {removed}")
        else:
            import difflib

            d = "\n".join(difflib.unified_diff(str(old).splitlines(), str(new).splitlines(), lineterm=""))
            problems.append(f"{key} changed:\n{d}")
    return problems


@pytest.fixture(autouse=True)
def leak_guard(request: pytest.FixtureRequest):
    if "root" not in request.keywords or not ROOT or "no_leak_guard" in request.keywords:
        yield
        return
    # Root tests change host-wide objects, so the guard holds a machine-wide lock:
    # a snapshot is only meaningful while no other guarded test runs.
    lock = os.open("/tmp/vbdecl-leakguard.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    before = snapshot()
    try:
        yield
    except BaseException:
        os.close(lock)
        raise
    # Teardown of sandboxes is synchronous, but give exiting children a moment to be reaped.
    deadline = time.monotonic() + 2.0
    while True:
        after = snapshot()
        problems = diff_snapshots(before, after)
        if not problems or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    os.close(lock)
    if problems:
        pytest.fail("leak guard: the test left objects behind:\n" + "\n".join(problems), pytrace=False)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """A private state directory (what --state-dir / VBDECL_STATE_DIR point at)."""
    d = tmp_path / "state"
    d.mkdir()
    return d
