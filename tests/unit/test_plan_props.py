"""Property tests of the compiler and the diff (hypothesis)."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plans"))

from normalized import FS_DEFAULTS, doc, fs

from vbdecl.plan.compile import canonical_json, compile_doc
from vbdecl.plan.diff import changes, has_changes, state_of, summary
from vbdecl.plan.graph import check_order, order, sorted_with_graphlib, teardown

PARTS = ["a", "b", "c"]
paths = st.lists(st.sampled_from(PARTS), min_size=0, max_size=3).map(lambda p: "/" + "/".join(p))
fs_types = st.sampled_from(sorted(FS_DEFAULTS))


@st.composite
def fs_entries(draw: Any) -> dict[str, Any]:
    t = draw(fs_types)
    extra: dict[str, Any] = {}
    if "lower" in FS_DEFAULTS[t]:
        extra["lower"] = draw(st.lists(paths, min_size=1, max_size=2))
    if t in ("tmpfs", "dir") and draw(st.booleans()):
        extra["mode"] = draw(st.sampled_from([0o755, 0o1777, 0o700]))
    return fs(t, draw(paths), **extra)


ports = st.lists(st.builds(lambda h, proto: {"host": h, "container": 80, "protocol": proto,
                                               "host_ip": None},
                           st.integers(1024, 1030), st.sampled_from(["tcp", "udp"])),
                 max_size=3, unique_by=lambda p: (p["host"], p["protocol"]))


@st.composite
def docs(draw: Any) -> dict[str, Any]:
    mode = draw(st.sampled_from(["isolated", "host", "bridge"]))
    network: dict[str, Any] = {"mode": mode}
    if mode == "bridge":
        network.update(nat=draw(st.booleans()), ports=draw(ports),
                       subnet6=draw(st.sampled_from([None, "fd00:1::/64"])))
    if mode != "host" and draw(st.booleans()):
        network["dns"] = ["192.0.2.53"]
    limits = {name: draw(st.sampled_from([None, 1 << 20, 64]))
              for name in ("memory", "pids", "cpu_weight")}
    return doc(
        filesystem=draw(st.lists(fs_entries(), max_size=25)),
        limits=limits,
        network=network,
        hostname=draw(st.sampled_from([None, "box"])),
        namespaces={"user": draw(st.booleans())},
        process={"command": draw(st.sampled_from([None, ["/bin/true"], ["/bin/sh", "-c", "x"]]))},
    )


def _related(a: str, b: str) -> bool:
    def prefix(p: str, q: str) -> bool:
        return p == "/" or q == p or q.startswith(p + "/")

    return prefix(a, b) or prefix(b, a)


SETTINGS = settings(max_examples=150, deadline=None)


@SETTINGS
@given(docs())
def test_order_is_topological_and_teardown_is_its_reverse(d: dict[str, Any]) -> None:
    plan = compile_doc(d)
    actions = plan["actions"]
    assert check_order(actions) == []
    pos = {a["id"]: i for i, a in enumerate(actions)}
    assert len(pos) == len(actions)
    for a in actions:
        for dep in a["deps"]:
            assert pos[dep] < pos[a["id"]]
    down = teardown(actions)
    dpos = {a["id"]: i for i, a in enumerate(down)}
    for a in actions:
        for dep in a["deps"]:
            assert dpos[a["id"]] < dpos[dep]
    assert actions[0]["id"] == "env" and actions[-1]["id"] == "process"


@SETTINGS
@given(docs())
def test_related_filesystem_entries_keep_manifest_order(d: dict[str, Any]) -> None:
    plan = compile_doc(d)
    entries = d["spec"]["filesystem"]
    fs_actions = [a for a in plan["actions"] if a["kind"].startswith("fs.")
                  and a["kind"] not in ("fs.rootfs", "fs.net-files")]
    # params are the manifest entries themselves: map each action to its entry's index
    index_of = {id(e): i for i, e in enumerate(entries)}
    by_index = {index_of[id(a["params"])]: a for a in fs_actions}
    assert sorted(by_index) == list(range(len(entries)))
    # the transitive closure of deps must order every related pair as in the manifest
    reach: dict[str, set[str]] = {}
    for a in plan["actions"]:
        r: set[str] = set()
        for dep in a["deps"]:
            r.add(dep)
            r |= reach[dep]
        reach[a["id"]] = r
    for j, aj in by_index.items():
        for i, ai in by_index.items():
            if i < j and _related(entries[i]["target"], entries[j]["target"]):
                assert ai["id"] in reach[aj["id"]], (ai["id"], aj["id"])


@SETTINGS
@given(docs())
def test_plan_against_its_own_state_is_empty(d: dict[str, Any]) -> None:
    plan = compile_doc(d)
    # as the engine stores it: through JSON, so no object is shared with the plan
    found = changes(json.loads(json.dumps(plan)), json.loads(json.dumps(state_of(plan))))
    assert not has_changes(found)
    assert summary(found) == {"add": 0, "change": 0, "destroy": 0, "drift": 0}


@SETTINGS
@given(docs())
def test_compile_is_deterministic_byte_for_byte(d: dict[str, Any]) -> None:
    first = canonical_json(compile_doc(d))
    assert canonical_json(compile_doc(copy.deepcopy(d))) == first
    assert canonical_json(compile_doc(d)) == first


@SETTINGS
@given(docs(), docs())
def test_diff_adds_new_and_destroys_old(a: dict[str, Any], b: dict[str, Any]) -> None:
    pa, pb = compile_doc(a), compile_doc(b)
    found = {c.id: c for c in changes(pb, state_of(pa))}
    ida = {x["id"] for x in pa["actions"]}
    idb = {x["id"] for x in pb["actions"]}
    for rid in idb - ida:
        assert found[rid].symbol == "+"
    for rid in ida - idb:
        assert found[rid].symbol == "-"
    for rid in ida & idb:
        if rid in found:
            assert found[rid].symbol in ("~", "-/+")
    assert not has_changes(changes(pb, state_of(pb)))


@SETTINGS
@given(docs(), st.randoms(use_true_random=False))
def test_fast_order_equals_graphlib_and_shuffles_sort_back(d: dict[str, Any], rnd: Any) -> None:
    actions = compile_doc(d)["actions"]
    assert [a["id"] for a in sorted_with_graphlib(actions)] == [a["id"] for a in actions]
    shuffled = list(actions)
    rnd.shuffle(shuffled)
    again = order(shuffled)
    assert check_order(again) == []
    assert sorted(a["id"] for a in again) == sorted(a["id"] for a in actions)
