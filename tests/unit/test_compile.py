"""The compiler: ids, deps and ordering rules (docs/plan-format.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plans"))

from normalized import doc, fs

from vbdecl.errors import PlanError
from vbdecl.plan.compile import canonical_json, compile_doc
from vbdecl.plan.graph import check_order, order


def _ids(plan: dict) -> list[str]:
    return [a["id"] for a in plan["actions"]]


def _deps(plan: dict) -> dict[str, list[str]]:
    return {a["id"]: a["deps"] for a in plan["actions"]}


def _before(plan: dict, a: str, b: str) -> bool:
    ids = _ids(plan)
    return ids.index(a) < ids.index(b)


def test_minimal_plan_shape():
    plan = compile_doc(doc())
    assert plan["format"] == 1
    assert plan["name"] == "web"
    assert plan["manifest_hash"].startswith("sha256:") and len(plan["manifest_hash"]) == 71
    assert _ids(plan) == ["env", "rootfs", "net.dns", "net.loopback", "process"]
    for action in plan["actions"]:
        assert set(action) == {"id", "kind", "scope", "deps", "params", "describe", "replace"}
    assert plan["actions"][0]["replace"] is True


def test_repeated_targets_get_numbered_ids():
    plan = compile_doc(doc(filesystem=[fs("bind", "/data", source="/a"),
                                       fs("tmpfs", "/data"), fs("bind", "/data", source="/b")]))
    assert [i for i in _ids(plan) if i.startswith("mount")] == [
        "mount[/data]", "mount[/data]#2", "mount[/data]#3"]
    deps = _deps(plan)
    assert deps["mount[/data]#2"] == ["mount[/data]"]
    assert deps["mount[/data]#3"] == ["mount[/data]#2"]


def test_parent_before_child_even_when_listed_later():
    # the child is listed first: unrelated to nothing, but a later mount on an
    # ancestor covers it, so manifest order is kept
    plan = compile_doc(doc(filesystem=[fs("bind", "/a/b", source="/x"), fs("tmpfs", "/a"),
                                       fs("dir", "/a/c"), fs("dir", "/z")]))
    deps = _deps(plan)
    assert deps["mount[/a]"] == ["mount[/a/b]"]
    assert deps["dir[/a/c]"] == ["mount[/a]"]
    assert deps["dir[/z]"] == ["rootfs"]
    assert not check_order(plan["actions"])


def test_later_tmpfs_over_earlier_bind_waits_for_all_it_covers():
    entries = [fs("bind", f"/srv/{i}", source=f"/h/{i}") for i in range(5)]
    entries.append(fs("tmpfs", "/"))
    plan = compile_doc(doc(filesystem=entries))
    assert _deps(plan)["mount[/]"] == [f"mount[/srv/{i}]" for i in range(5)]


def test_overlay_after_the_entry_that_mounts_its_lower():
    plan = compile_doc(doc(filesystem=[fs("bind", "/base", source="/h"), fs("dir", "/q"),
                                       fs("ro-overlay", "/srv", lower=["/base/sub", "/nothere"])]))
    assert _deps(plan)["mount[/srv]"] == ["rootfs", "mount[/base]"]


def test_cgroup_and_network_chain():
    plan = compile_doc(doc(limits={"memory": 1 << 29, "cpu": 1.5},
                           network={"mode": "bridge", "nat": True, "subnet6": "fd00:88::/64",
                                    "ports": [{"host": 8080, "container": 80, "protocol": "tcp",
                                               "host_ip": None},
                                              {"host": 53, "container": 53, "protocol": "udp",
                                               "host_ip": "127.0.0.1"}]}))
    deps = _deps(plan)
    assert deps["cgroup.memory"] == ["cgroup"]
    assert deps["net.veth"] == ["net.bridge[vbdecl0]", "env"]
    assert deps["net.route6"] == ["net.address6"]
    assert deps["nat.masquerade"] == ["net.address", "net.address6"]
    assert "nat.port[127.0.0.1:53/udp]" in deps
    params = {a["id"]: a["params"] for a in plan["actions"]}
    assert params["net.route"]["gateway"] == "10.88.0.1"
    assert params["net.route6"]["gateway"] == "fd00:88::1"
    assert params["cgroup.memory"] == {"limit": "memory", "value": 1 << 29, "optional": False}
    ids = _ids(plan)
    assert ids[-1] == "process"
    for a, b in [("env", "cgroup"), ("cgroup", "cgroup.cpu"), ("net.bridge[vbdecl0]", "net.veth"),
                 ("net.veth", "net.address"), ("net.address", "net.route"),
                 ("net.address", "nat.masquerade"), ("net.address", "nat.port[8080/tcp]")]:
        assert _before(plan, a, b)


def test_ports_without_bridge_are_unsatisfiable():
    with pytest.raises(PlanError, match=r"network\.ports need network\.mode bridge"):
        compile_doc(doc(network={"ports": [{"host": 1, "container": 1, "protocol": "tcp",
                                            "host_ip": None}]}))


def test_filesystem_without_mount_namespace_is_unsatisfiable():
    with pytest.raises(PlanError, match="new mount namespace"):
        compile_doc(doc(namespaces={"mount": False}, filesystem=[fs("tmpfs", "/tmp")]))


def test_cycle_names_the_actions():
    actions = [{"id": "a", "deps": ["b"]}, {"id": "b", "deps": ["c"]}, {"id": "c", "deps": ["a"]},
               {"id": "d", "deps": []}]
    with pytest.raises(PlanError) as err:
        order(actions)
    text = str(err.value)
    assert "dependency cycle" in text
    for name in "abc":
        assert name in text


def test_missing_dependency_names_both():
    with pytest.raises(PlanError, match="x depends on y, which is not in the plan"):
        order([{"id": "x", "deps": ["y"]}])


def test_compile_is_deterministic():
    d = doc(filesystem=[fs("tmpfs", "/t"), fs("dir", "/t/a")], limits={"pids": 5})
    assert canonical_json(compile_doc(d)) == canonical_json(compile_doc(d))


@pytest.mark.parametrize(("network", "said"), [
    ({"mode": "isolated", "hosts": {"db": "10.0.0.2"}},
     "/etc/resolv.conf (the host's, read-only) and /etc/hosts (with db)"),
    ({"mode": "isolated", "dns": ["192.0.2.53"]}, "/etc/resolv.conf (nameservers 192.0.2.53)"),
    ({"mode": "isolated"}, "/etc/resolv.conf (the host's, read-only)"),
    ({"mode": "host"}, "/etc/resolv.conf (the host's, read-only)"),
])
def test_the_network_files_line_says_what_is_written(network, said):
    """A user review: the line said "... and /etc/hosts" where /etc/hosts is written only
    with network.hosts. The host's resolv.conf is there in every mode when dns is left
    out (MANIFEST.md; a contract review found isolated mode without one, and a live
    environment in host mode too, where a run had it)."""
    d = doc(filesystem=[fs("tmpfs", "/tmp")])
    d["spec"]["network"].update(network)
    (action,) = [a for a in compile_doc(d)["actions"] if a["id"] == "net.dns"]
    assert action["describe"] == said


def test_an_empty_dns_list_is_no_resolv_conf():
    """`dns: []` is no resolver (what vb --print-manifest writes for bubblewrap's
    sandboxes): no network files action, where a dns left out binds the host's."""
    d = doc(filesystem=[fs("tmpfs", "/tmp")])
    d["spec"]["network"].update({"mode": "isolated", "dns": []})
    assert "net.dns" not in _ids(compile_doc(d))
    d["spec"]["network"]["hosts"] = {"db": "10.0.0.2"}
    (action,) = [a for a in compile_doc(d)["actions"] if a["id"] == "net.dns"]
    assert action["describe"] == "/etc/hosts (with db)"


def test_a_manifest_reached_through_a_link_is_on_record_by_its_real_path(tmp_path):
    """A review: a manifest planned through a symlinked directory one time and by its
    real path the next alternated as a metadata change ("now applied from ...")."""
    from vbdecl.plan.compile import compile_file

    real = tmp_path / "real"
    real.mkdir()
    (real / "m.yaml").write_text("apiVersion: vbdecl/v1\nkind: Environment\nmetadata: {name: m}\n"
                                 "spec:\n  filesystem: [{type: tmpfs, target: /tmp}]\n")
    (tmp_path / "link").symlink_to(real)
    (via_link,), (direct,) = compile_file(str(tmp_path / "link" / "m.yaml")), compile_file(str(real / "m.yaml"))
    assert via_link["source"]["path"] == direct["source"]["path"] == str(real / "m.yaml")
