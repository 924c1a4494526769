"""Shared helpers of the reliability suite (test_faults_full, test_reliability_crash,
test_concurrency, test_soak): a manifest that uses every resource kind, the real
CLI in a subprocess, and "nothing left behind" checks built on the leak guard's
snapshots (tests/conftest.py). No tests here."""

from __future__ import annotations

import json
import os
import random
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import conftest
import pytest
from testmanifests import head

FULL = os.environ.get("VBDECL_FULL") == "1"
REPO = Path(__file__).resolve().parents[2]

# every resource kind: fresh root, binds (ro, rw data), proc, dev, tmpfs, dir, file,
# bind-data, symlinks, the three overlays, net files, cgroup + limits, loopback,
# bridge + veth + address + route, NAT and a published port, the process
FULL_MANIFEST = head('{name}', hostname='{name}') + """\
    - {{type: proc, target: /proc}}
    - {{type: dev, target: /dev}}
    - {{type: tmpfs, target: /tmp, size: 16Mi, mode: "1777"}}
    - {{type: bind, source: ./data, target: /data}}
    - {{type: dir, target: /run/app, mode: "0755"}}
    - {{type: file, target: /etc/motd, content: "hello\\n", mode: "0644"}}
    - {{type: bind-data, target: /etc/token, content: "s3cret\\n", readonly: true}}
    - {{type: tmp-overlay, target: /src, lower: [./lower]}}
    - {{type: ro-overlay, target: /opt, lower: [./lower, ./lower2]}}
    - {{type: overlay, target: /srv, lower: [./lower], upper: ./upper, work: ./work}}
  limits:
    memory: 64Mi
    cpu: 0.5
    pids: 32
    rlimits: {{nofile: 256}}
  network:
    mode: bridge
    bridge: {bridge}
    subnet: {subnet}
    nat: true
    ports: ["{port}:80/tcp"]
  process:
    command: {command}
"""

FULL_IDS = [
    "env", "rootfs", "mount[/usr]", "symlink[/bin]", "symlink[/lib]", "symlink[/lib64]",
    "mount[/proc]", "mount[/dev]", "mount[/tmp]", "mount[/data]", "dir[/run/app]",
    "file[/etc/motd]", "mount[/etc/token]", "mount[/src]", "mount[/opt]", "mount[/srv]",
    "net.dns", "cgroup", "cgroup.memory", "cgroup.cpu", "cgroup.pids", "net.loopback",
    "net.bridge[BRIDGE]", "net.veth", "net.address", "net.guard", "net.route", "nat.masquerade",
    "nat.port[PORT/tcp]", "process",
]


# (state dir, environment name) of every environment a test may have left live
_TRACKED: list[tuple[Path, str]] = []


def track(state: Path, name: str) -> None:
    _TRACKED.append((state, name))


@pytest.fixture(autouse=True)
def cleanup_envs() -> Iterator[None]:
    """After each test (before the leak guard looks), recover and destroy whatever a
    failed test left applied, so one failure never leaks live environments into the
    next tests (pytest renames old temp dirs, and leftover mounts would move with them)."""
    yield
    while _TRACKED:
        state, name = _TRACKED.pop()
        if not (state / "envs" / name).exists():
            continue
        cli(state, "recover", name, timeout=120)
        if (state / "envs" / name / "state.json").exists():
            cli(state, "destroy", name, "-y", timeout=120)


def uniq() -> str:
    return secrets.token_hex(4)


def used_prefixes() -> set[str]:
    out = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True,
                         text=True).stdout
    return {line.split()[0].rsplit(".", 1)[0] for line in out.splitlines() if line[:1].isdigit()}


def rand_subnet(used: set[str] | None = None) -> str:
    """A /24 in 10.200-249.x that no route on the host uses (nor ``used``)."""
    taken = used_prefixes() | (used or set())
    while True:
        prefix = f"10.{random.randint(200, 249)}.{random.randint(0, 254)}"
        if prefix not in taken:
            if used is not None:
                used.add(prefix)
            return f"{prefix}.0/24"


class FullEnv:
    """One manifest with every resource kind in ``base``, its own state dir, bridge, subnet, port."""

    def __init__(self, base: Path, name: str = "full", *, bridge: str | None = None,
                 subnet: str | None = None, port: int | None = None,
                 command: list[str] | None = None, state: Path | None = None) -> None:
        self.base = base
        self.name = name
        self.bridge = bridge or f"vbf{uniq()}"
        self.subnet = subnet or rand_subnet()
        self.port = port or random.randint(20000, 60000)
        self.state = state or base / "state"
        for d in ("data", "lower", "lower2", "upper", "work"):
            (base / d).mkdir(parents=True, exist_ok=True)
        (base / "lower" / "base.txt").write_text("base\n")
        (base / "lower2" / "l2.txt").write_text("l2\n")
        self.path = base / f"{name}.yaml"
        track(self.state, name)
        self.path.write_text(FULL_MANIFEST.format(
            name=name, bridge=self.bridge, subnet=self.subnet, port=self.port,
            command=json.dumps(command or ["/bin/sleep", "3600"])))

    def ids(self) -> list[str]:
        return [self.real_id(i) for i in FULL_IDS]

    def real_id(self, aid: str) -> str:
        return aid.replace("BRIDGE", self.bridge).replace("PORT", str(self.port))

    def cli(self, *args: str, fault: str | None = None, crash: int | None = None,
            timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return cli(self.state, *args, fault=fault, crash=crash, timeout=timeout, env=env)

    def apply(self, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.cli("apply", str(self.path), "-y", **kw)

    def destroy(self, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.cli("destroy", self.name, "-y", **kw)

    def recover(self) -> subprocess.CompletedProcess[str]:
        return self.cli("recover", self.name)

    def state_json(self) -> dict[str, Any] | None:
        p = self.state / "envs" / self.name / "state.json"
        return json.loads(p.read_text()) if p.exists() else None

    def journal_open(self) -> bool:
        """Is the last transaction in the journal without commit/abort?"""
        p = self.state / "envs" / self.name / "journal.jsonl"
        if not p.exists():
            return False
        open_txn = None
        for line in p.read_text().splitlines():
            e = json.loads(line)
            if e.get("t") == "begin":
                open_txn = e.get("txn")
            elif e.get("t") in ("commit", "abort") and e.get("txn") == open_txn:
                open_txn = None
        return open_txn is not None


def cli(state: Path, *args: str, fault: str | None = None, crash: int | None = None,
        timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("VBDECL_") or k == "VBDECL_CACHE_DIR"}
    e["VBDECL_CACHE_DIR"] = str(state.parent / "cache")
    if fault:
        e["VBDECL_FAULT"] = fault
    if crash is not None:
        e["VBDECL_TEST_CRASH_AFTER"] = str(crash)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "vbdecl", "--state-dir", str(state), *args],
                          env=e, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def host() -> dict[str, object]:
    """The host as the leak guard sees it."""
    return conftest.snapshot()


def assert_clean(before: dict[str, object], what: str, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        problems = conftest.diff_snapshots(before, conftest.snapshot())
        if not problems or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not problems, f"{what}: left behind:\n" + "\n".join(problems)


def check(out: subprocess.CompletedProcess[str], code: int, what: str) -> None:
    assert out.returncode == code, f"{what}: exit {out.returncode} (wanted {code})\n{out.stdout}\n{out.stderr}"
