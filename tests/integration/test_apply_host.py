"""End to end with host-side ops (cgroup limits, a bridge, veth, addresses,
routes): a fault at every action leaves the host exactly as before (links,
addresses, routes, cgroups, mounts), and a SIGKILL mid-apply is recovered
with nothing left behind."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import testops
from conftest import snapshot
from testmanifests import head

from vbdecl.engine import journal, paths, sources, store
from vbdecl.engine.executor import Engine
from vbdecl.engine.faults import Faults
from vbdecl.errors import ActionError

MANIFEST = head('hostops') + """\
    - {{type: dev, target: /dev}}
    - {{type: tmpfs, target: /tmp, size: 8Mi}}
    - {{type: dir, target: /run/app, mode: "0750"}}
    - {{type: file, target: /etc/motd, content: "hi\\n"}}
  limits:
    memory: 64Mi
    pids: 32
    optional: true
  network:
    mode: bridge
    bridge: {bridge}
    subnet: {subnet}
    nat: false
  process:
    command: ["/bin/sleep", "300"]
"""


def _host() -> dict[str, object]:
    snap = snapshot()
    snap.pop("fds")
    snap.pop("children")
    return snap


def _body(tmp: Path) -> None:
    sd = tmp / "state"
    m = tmp / "hostops.yaml"
    bridge = "vbt" + secrets.token_hex(4)
    subnet = f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(250)}.0/24"
    m.write_text(MANIFEST.format(bridge=bridge, subnet=subnet))
    plan = sources.compile_manifest(m)[0]
    ids = [a["id"] for a in plan["actions"]]
    assert len(ids) >= 20 and len({a["kind"].split(".")[0] for a in plan["actions"]}) >= 5, ids
    assert {"cgroup", "cgroup.memory", f"net.bridge[{bridge}]", "net.veth", "net.address"} <= set(ids), ids
    before = _host()

    Engine(sd).apply(plan)
    state = store.load("hostops", sd)
    inst = state["instance"]
    veth = inst.replace("-", "") + "h"
    assert Path(f"/sys/class/net/{bridge}").is_dir()
    assert Path(f"/sys/class/net/{veth}").is_dir()
    assert _host() != before
    pid = state["resources"]["env"]["record"]["pid"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("VBDECL_") or k == "VBDECL_CACHE_DIR"}
    out = subprocess.run([sys.executable, "-m", "vbdecl", "--state-dir", str(sd), "--json", "status",
                          "hostops"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    st = {r["id"]: r for r in json.loads(out.stdout)["resources"]}
    assert {r["status"] for r in st.values()} == {"ok"}, st
    assert "usage" in st["cgroup"], st["cgroup"]
    limit = Path(f"/sys/fs/cgroup/memory/vbdecl/{inst}/memory.limit_in_bytes")
    if limit.exists():
        assert int(limit.read_text()) == 64 << 20
    # an in-place update: the limit changes, the environment stays
    m.write_text(MANIFEST.format(bridge=bridge, subnet=subnet).replace("64Mi", "128Mi"))
    plan2 = sources.compile_manifest(m)[0]
    todo = Engine(sd).changes(plan2).todo
    assert [(c.symbol, c.id) for c in todo] == [("~", "cgroup.memory")], [c.line() for c in Engine(sd).changes(plan2).changes]
    Engine(sd).apply(plan2)
    assert store.load("hostops", sd)["resources"]["env"]["record"]["pid"] == pid
    if limit.exists():
        assert int(limit.read_text()) == 128 << 20
        # drift: changed by hand, shown, then repaired by apply
        limit.write_text(str(96 << 20))
        cs = Engine(sd).changes(plan2)
        assert [c.id for c in cs.drift] == ["cgroup.memory"], [c.line() for c in cs.changes]
        Engine(sd).apply(plan2)
        assert int(limit.read_text()) == 128 << 20
    assert not Engine(sd).changes(plan2)
    Engine(sd).destroy("hostops")
    assert _host() == before

    for aid in ids:
        with pytest.raises(ActionError) as info:
            Engine(sd, faults=Faults(aid)).apply(plan)
        assert info.value.action == aid and not info.value.revert_errors, str(info.value)
        assert _host() == before, aid
        assert store.load("hostops", sd) is None

    # a failing revert of a host object: both reported, recover cleans up
    with pytest.raises(ActionError) as info:
        Engine(sd, faults=Faults(f"process,{'net.veth'}:revert")).apply(plan)
    assert [e.action for e in info.value.revert_errors] == ["net.veth"]
    assert _host() != before
    assert Engine(sd).recover("hostops") is True
    assert _host() == before

    # SIGKILL in the middle of the host actions; the next command recovers
    p = testops.write_plan(tmp / "p.json", plan)
    jpath = paths.journal_file("hostops", sd)
    total = 2 * len(ids) + 2           # begin, intent+done per action, commit
    for k in range(2, total, 4):
        n0 = len(journal.read(jpath))
        out = subprocess.run([sys.executable, "-m", "vbdecl", "--state-dir", str(sd), "apply",
                              str(p), "-y"], env=dict(env, VBDECL_TEST_CRASH_AFTER=str(k)),
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == -signal.SIGKILL, out.stderr
        assert len(journal.read(jpath)) - n0 == k
        assert Engine(sd).recover("hostops") is True
        assert _host() == before, k

    # SIGKILL in the middle of a destroy: the next command finishes it
    for k in range(2, total, 4):
        Engine(sd).apply(plan)
        out = subprocess.run([sys.executable, "-m", "vbdecl", "--state-dir", str(sd), "destroy",
                              "hostops", "-y"], env=dict(env, VBDECL_TEST_CRASH_AFTER=str(k)),
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == -signal.SIGKILL, out.stderr
        out = subprocess.run([sys.executable, "-m", "vbdecl", "--state-dir", str(sd), "recover"],
                             env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert _host() == before, k
        assert store.load("hostops", sd) is None


def test_host_ops_faults_and_crashes(tmp_path: Path) -> None:
    testops.in_private_mount_ns(testops.with_cleanup(_body), tmp_path)
