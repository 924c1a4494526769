"""Shared test fixtures: the root marker and the leak guard.

Every test under tests/integration runs inside the leak guard: host mounts,
links, addresses, routes, nftables ruleset, cgroup directories, vbdecl's
default state/runtime directories, temp entries named like ours (/tmp, /run,
/var/tmp, /mnt, /dev/shm), forwarding sysctls, the test process's open fds,
its children (zombies included) and every live process started during the
test (wherever it was reparented) are snapshotted before and compared after.
Any difference fails the test with a readable diff (docs/reliability.md).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

ROOT = os.geteuid() == 0


_CACHE: str | None = None     # the session's cache directory, when it made one


def pytest_sessionstart(session: pytest.Session) -> None:
    """The C extension is built in place (pip install -e, make); tests of a C
    source edited since would run the old code without a word. vbdecl's caches go to
    a directory of the session's own (VBDECL_CACHE_DIR, inherited by every vbdecl the
    tests start): the host's /var/cache/vbdecl got copies of test environments' state."""
    global _CACHE
    if not os.environ.get("VBDECL_CACHE_DIR"):
        import tempfile

        _CACHE = tempfile.mkdtemp(prefix="vbdecl-test-cache-", dir="/var/tmp")
        os.environ["VBDECL_CACHE_DIR"] = _CACHE
    sysdir = Path(__file__).resolve().parent.parent / "vbdecl" / "sys"
    built = sorted(sysdir.glob("_linux.*.so"))
    for src in sorted(sysdir.glob("*.c")):
        if built and all(b.stat().st_mtime < src.stat().st_mtime for b in built):
            pytest.exit(f"{src} is newer than the built extension {built[-1].name}: "
                        "rebuild it with `make` (or `pip install -e .`)", returncode=4)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _CACHE is not None:
        shutil.rmtree(_CACHE, ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason="needs root")
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.root)
        if "root" in item.keywords and not ROOT:
            item.add_marker(skip)


# --- leak guard -------------------------------------------------------------

_OURS = ("vbdecl", "vb-")
# where vbdecl stages or writes temporary things (runtime/rootfs.py STAGING_BASES, cli crash logs)
_TMP_BASES = ("/tmp", "/run", "/var/tmp", "/mnt", "/dev/shm")
_TMP_PREFIXES = (".vbdecl", "vbdecl-stage", "vbdecl-crash-", "vb-")
# vbdecl's default state and runtime roots (tests use --state-dir; nothing may land here)
_STATE_ROOT = "/var/lib/vbdecl"
_STATE_ROOTS = ("/run/vbdecl", _STATE_ROOT)
# processes started during a test carry this variable (fork and exec inherit it), so a
# daemon that outlived its test is found even after it was reparented away from us
_TOKEN_VAR = "LEAKGUARD_TOKEN"


def _mounts() -> set[str]:
    """Mount point + fs type + source; a mount stacked twice on one point counts twice."""
    seen: dict[str, int] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        parts = line.split()
        sep = parts.index("-")
        key = f"{parts[4]} {parts[sep + 1]} {parts[sep + 2]}"
        seen[key] = seen.get(key, 0) + 1
    return {k if n == 1 else f"{k} (x{n})" for k, n in seen.items()}


def _sysfs_names(path: str) -> set[str]:
    try:
        return set(os.listdir(path))
    except OSError:
        return set()


def _ip(*args: str) -> str:
    if not shutil.which("ip"):
        return ""
    return subprocess.run(["ip", *args], capture_output=True, text=True).stdout


_COUNTER = re.compile(r"\s*counter packets \d+ bytes \d+")


# IPv6 duplicate address detection runs for a second or two after a link comes
# up: the address is "tentative" until then, and then the kernel adds a local
# route for it. Neither is an object of ours; the address and its link are.
_TENTATIVE = re.compile(r" tentative\b")
_LINK_LOCAL_ROUTE = re.compile(r"^local fe80::\S+ dev \S+ table local proto kernel ")


def _addresses() -> str:
    return "\n".join(_TENTATIVE.sub("", line) for line in _ip("-o", "addr", "show").splitlines())


def _routes() -> str:
    out = _ip("route", "show", "table", "all") + _ip("-6", "route", "show", "table", "all")
    return "\n".join(line for line in out.splitlines() if not _LINK_LOCAL_ROUTE.match(line))


def _nft() -> str:
    """The whole ruleset (tables, chains, rules, set elements), counters dropped."""
    if not shutil.which("nft"):
        return ""
    out = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
    return "\n".join(_COUNTER.sub("", line) for line in out.splitlines())


def _sysctls() -> set[str]:
    out = set()
    for name in ("net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding",
                 "net/ipv4/conf/all/route_localnet"):
        try:
            out.add(f"{name}={Path('/proc/sys', name).read_text().strip()}")
        except OSError:
            pass
    return out


def _cgroups() -> set[str]:
    """Our cgroup directories: named like ours at the top of a hierarchy, or anything
    below a hierarchy's vbdecl/ directory (recursively)."""
    found = set()
    base = Path("/sys/fs/cgroup")
    tops = [base, *[p for p in base.iterdir() if p.is_dir()]] if base.is_dir() else []
    for top in tops:
        try:
            for entry in os.scandir(top):
                if entry.is_dir() and any(o in entry.name for o in _OURS):
                    found.add(entry.path)
        except OSError:
            pass
        for dirpath, dirnames, _ in os.walk(top / "vbdecl"):
            found |= {f"{dirpath}/{d}" for d in dirnames}
    return found


def _tmp_entries() -> set[str]:
    out = set()
    for base in _TMP_BASES:
        try:
            out |= {f"{base}/{n}" for n in os.listdir(base) if n.startswith(_TMP_PREFIXES)}
        except OSError:
            pass
    return out


def _fds() -> set[str]:
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.add(f"{fd} -> {os.readlink(f'/proc/self/fd/{fd}')}")
        except OSError:
            pass
    return out


def _stat(pid: str) -> tuple[str, list[str]] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.split("(", 1)[1].rsplit(")", 1)[0], stat.rsplit(")", 1)[1].split()


def _children() -> set[str]:
    """Direct children of the test process, zombies included (state=Z: never waited for)."""
    me = str(os.getpid())
    out = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or (st := _stat(pid)) is None:
            continue
        comm, fields = st
        if fields[1] == me:
            out.add(f"{pid} {comm} state={fields[0]}")
    return out


def _descendants() -> set[str]:
    """Every live process started during the current test (it carries the test's token),
    wherever it was reparented to: a leaked environment init, a daemonized helper."""
    token = os.environ.get(_TOKEN_VAR)
    if not token:
        return set()
    needle = f"{_TOKEN_VAR}={token}".encode()
    me = str(os.getpid())
    out = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or pid == me:
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        if needle in env and (st := _stat(pid)) is not None:
            out.add(f"{pid} {st[0]} ppid={st[1][1]} state={st[1][0]}")
    return out


def _state_dirs() -> set[str]:
    """Everything (3 levels deep) under vbdecl's default state and runtime roots, and
    the state root itself: tests keep their state elsewhere, so one left there empty is
    a leak too. (/run/vbdecl holds host-wide registries, NAT's among them, whatever the
    state root: vbdecl may make it and leave it, as a daemon leaves its /run dir.)"""
    out = {_STATE_ROOT} if os.path.exists(_STATE_ROOT) else set()
    for root in _STATE_ROOTS:
        for dirpath, dirnames, filenames in os.walk(root):
            out |= {f"{dirpath}/{n}" for n in [*dirnames, *filenames]}
            if dirpath[len(root):].count("/") >= 2:
                dirnames.clear()
    return out


def _shared_net() -> str:
    """Bridges and leases in the default root's shared network database (newest slot)."""
    best: tuple[int, object] = (-1, None)
    for slot in ("net.0.json", "net.1.json"):
        try:
            doc = json.loads(Path(_STATE_ROOT, slot).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and int(doc.get("gen", 0)) > best[0]:
            best = (int(doc.get("gen", 0)), doc.get("data"))
    data = best[1] if isinstance(best[1], dict) else {}
    return json.dumps({k: data.get(k) or {} for k in ("bridges", "leases")}, indent=1, sort_keys=True)


def snapshot() -> dict[str, object]:
    return {
        "mounts": _mounts(),
        "links": _sysfs_names("/sys/class/net"),
        "addresses": _addresses(),
        "routes": _routes(),
        "nftables": _nft(),
        "sysctls": _sysctls(),
        "cgroups": _cgroups(),
        "tmp": _tmp_entries(),
        "fds": _fds(),
        "children": _children(),
        "processes": _descendants(),
        "state": _state_dirs(),
        "shared network state": _shared_net(),
    }


def diff_snapshots(before: dict[str, object], after: dict[str, object]) -> list[str]:
    """One readable block per kind of object that changed: ``+`` left behind, ``-`` gone."""
    import difflib

    problems = []
    for key, old in before.items():
        new = after[key]
        if old == new:
            continue
        if isinstance(old, set) and isinstance(new, set):
            lines = [f"  + {x}" for x in sorted(new - old)] + [f"  - {x}" for x in sorted(old - new)]
            problems.append(f"{key} (+ left behind, - gone):\n" + "\n".join(lines))
        else:
            d = difflib.unified_diff(str(old).splitlines(), str(new).splitlines(), "before", "after",
                                     lineterm="", n=1)
            problems.append(f"{key} changed:\n" + "\n".join(f"  {x}" for x in d))
    return problems


LOCK_PATH = "/tmp/vbdecl-leakguard.lock"


@pytest.fixture(autouse=True)
def leak_guard(request: pytest.FixtureRequest):
    if "root" not in request.keywords or not ROOT or "no_leak_guard" in request.keywords:
        yield
        return
    # Root tests change host-wide objects, so the guard holds a machine-wide lock:
    # a snapshot is only meaningful while no other guarded test runs.
    lock = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    os.environ[_TOKEN_VAR] = uuid.uuid4().hex
    before = snapshot()
    try:
        yield
    except BaseException:
        os.environ.pop(_TOKEN_VAR, None)
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
    os.environ.pop(_TOKEN_VAR, None)
    os.close(lock)
    if problems:
        pytest.fail(f"leak guard: {request.node.nodeid} left objects behind:\n" + "\n".join(problems),
                    pytrace=False)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """A private state directory (what --state-dir / VBDECL_STATE_DIR point at)."""
    d = tmp_path / "state"
    d.mkdir()
    return d
