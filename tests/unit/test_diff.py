"""vbdecl.plan.diff: symbols, cascade, drift and the summary."""

from __future__ import annotations

import copy
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plans"))

from normalized import doc, fs

from vbdecl.plan.compile import compile_doc
from vbdecl.plan.diff import (
    REPLACE,
    REPLACE_ENV,
    UPDATE,
    changes,
    effect,
    has_changes,
    state_of,
    summary,
    with_unchanged,
)

BASE = dict(filesystem=[fs("bind", "/data", source="/a"), fs("dir", "/data/x"), fs("tmpfs", "/tmp")],
            limits={"memory": 256 << 20})


def _by_id(found):
    return {c.id: c for c in found if not c.drift}


def test_a_link_pointed_elsewhere_moves_what_was_placed_through_it():
    entries = [fs("dir", "/opt/v1"), fs("dir", "/opt/v2"), fs("symlink", "/opt/cur", points_to="v1"),
               fs("file", "/opt/cur/config", content="x"), fs("tmpfs", "/opt/cur/data"),
               fs("dir", "/srv")]
    old = compile_doc(doc(filesystem=entries))
    entries[2] = fs("symlink", "/opt/cur", points_to="v2")
    found = _by_id(changes(compile_doc(doc(filesystem=entries)), state_of(old)))
    assert found["symlink[/opt/cur]"].symbol == "~"
    assert found["file[/opt/cur/config]"].symbol == "-/+"
    assert found["file[/opt/cur/config]"].reason == "replaced with symlink[/opt/cur]"
    assert found["mount[/opt/cur/data]"].symbol == "-/+"
    assert "dir[/srv]" not in found and "dir[/opt/v1]" not in found


def test_what_was_placed_in_a_removed_mount_or_through_a_removed_link_is_made_again():
    entries = [fs("tmpfs", "/data"), fs("file", "/data/conf", content="x"), fs("dir", "/data/sub/d"),
               fs("dir", "/opt/v1"), fs("symlink", "/opt/cur", points_to="v1"),
               fs("file", "/opt/cur/config", content="x"), fs("dir", "/srv"), fs("dir", "/srv/a")]
    old = compile_doc(doc(filesystem=entries))
    kept = [e for e in entries if e["target"] not in ("/data", "/opt/cur")]
    found = _by_id(changes(compile_doc(doc(filesystem=[*kept, fs("dir", "/opt/cur")])), state_of(old)))
    assert found["mount[/data]"].symbol == found["symlink[/opt/cur]"].symbol == "-"
    assert found["file[/data/conf]"].symbol == found["dir[/data/sub/d]"].symbol == "-/+"
    assert found["file[/data/conf]"].reason == "made again without mount[/data]"
    assert found["file[/opt/cur/config]"].symbol == "-/+"
    assert found["dir[/opt/cur]"].symbol == "+"
    assert not {"dir[/srv]", "dir[/srv/a]", "dir[/opt/v1]"} & set(found)
    # a removed directory entry moves nothing: what is below it stays where it is
    found = _by_id(changes(compile_doc(doc(filesystem=[e for e in entries if e["target"] != "/srv"])),
                           state_of(old)))
    assert set(found) == {"dir[/srv]"}


def test_entries_placed_through_a_chain_of_links_move_with_any_of_them():
    entries = [fs("dir", "/opt/d1"), fs("dir", "/opt/d2"), fs("dir", "/opt/v1"), fs("tmpfs", "/mnt/real"),
               fs("symlink", "/opt/cur", points_to="v1"), fs("symlink", "/opt/v1/data", points_to="../d1"),
               fs("symlink", "/m", points_to="/mnt/real"),
               fs("file", "/opt/cur/data/conf", content="x"), fs("file", "/m/x", content="x")]
    old = compile_doc(doc(filesystem=entries))
    deps = {a["id"]: a["deps"] for a in old["actions"]}
    assert set(deps["file[/opt/cur/data/conf]"]) == {"symlink[/opt/cur]", "symlink[/opt/v1/data]",
                                                      "dir[/opt/d1]"}
    assert set(deps["file[/m/x]"]) == {"symlink[/m]", "mount[/mnt/real]"}
    entries[5] = fs("symlink", "/opt/v1/data", points_to="../d2")      # the inner link
    found = _by_id(changes(compile_doc(doc(filesystem=entries)), state_of(old)))
    assert found["file[/opt/cur/data/conf]"].symbol == "-/+"
    assert "file[/m/x]" not in found
    found = _by_id(changes(compile_doc(doc(filesystem=[e for e in entries if e["target"] != "/mnt/real"])),
                           state_of(old)))
    assert found["file[/m/x]"].symbol == "-/+"
    looped = compile_doc(doc(filesystem=[fs("symlink", "/a", points_to="b"), fs("symlink", "/b", points_to="a"),
                                         fs("file", "/a/f", content="x")]))
    assert {a["id"]: a["deps"] for a in looped["actions"]}["file[/a/f]"] == ["symlink[/a]", "symlink[/b]"]


def test_destroy_everything_in_teardown_order():
    plan = compile_doc(doc(**BASE))
    found = changes(None, state_of(plan))
    assert [c.id for c in found] == [a["id"] for a in reversed(plan["actions"])]
    assert {c.symbol for c in found} == {"-"}
    assert found[0].reason.startswith("destroy: run /bin/sh")
    assert summary(found) == {"add": 0, "change": 0, "destroy": len(plan["actions"]), "drift": 0}


def test_create_everything_without_state():
    plan = compile_doc(doc(**BASE))
    found = changes(plan, None)
    assert [c.symbol for c in found] == ["+"] * len(plan["actions"])
    assert has_changes(found)


def test_replaced_mount_cascades_but_not_to_the_process():
    old = compile_doc(doc(**BASE))
    new_doc = doc(**BASE)
    new_doc["spec"]["filesystem"][0]["source"] = "/b"
    found = _by_id(changes(compile_doc(new_doc), state_of(old)))
    assert found["mount[/data]"].symbol == "-/+"
    assert found["mount[/data]"].attrs == [("source", "/a", "/b")]
    assert found["dir[/data/x]"].symbol == "-/+"
    assert found["dir[/data/x]"].reason == "replaced with mount[/data]"
    assert "mount[/tmp]" not in found and "process" not in found
    assert summary(list(found.values())) == {"add": 2, "change": 0, "destroy": 2, "drift": 0}


def test_a_mount_replaced_or_removed_under_a_running_process_says_it_keeps_the_old_one():
    keeps = "the running process keeps the old mount until it restarts"
    old = compile_doc(doc(**BASE))
    new_doc = doc(**BASE)
    new_doc["spec"]["filesystem"][0]["source"] = "/b"          # bind /data: replaced
    del new_doc["spec"]["filesystem"][2]                       # tmpfs /tmp: removed
    found = _by_id(changes(compile_doc(new_doc), state_of(old)))
    assert found["mount[/data]"].reason == f"source /a -> /b; {keeps}"
    assert found["mount[/tmp]"].symbol == "-" and found["mount[/tmp]"].reason.endswith(f"; {keeps}")
    assert keeps not in found["dir[/data/x]"].reason           # not a mount
    # the process restarts too: nothing keeps the old mount
    new_doc["spec"]["process"]["command"] = ["/bin/true"]
    found = _by_id(changes(compile_doc(new_doc), state_of(old)))
    assert found["process"].symbol == "-/+"
    assert all(keeps not in c.reason for c in found.values())
    # and a mount that is gone already has nothing left to keep
    found = _by_id(changes(compile_doc(doc(filesystem=BASE["filesystem"][:2], limits=BASE["limits"])),
                           state_of(old), {"mount[/tmp]": None}))
    assert found["mount[/tmp]"].reason.endswith("(already gone)")


def test_namespace_change_replaces_everything():
    old = compile_doc(doc(**BASE))
    new = compile_doc(doc(**BASE, namespaces={"ipc": False}))
    found = changes(new, state_of(old))
    assert all(c.symbol == "-/+" and c.replaces_env for c in found)
    assert found[0].reason == "namespaces.ipc true -> false (forces replacement of the environment)"


def test_effect_table():
    assert effect("cgroup.limit", "value") == UPDATE
    assert effect("env.namespaces", "hostname") == UPDATE      # (set in place: ops.env)
    assert effect("fs.net-files", "hostname") == UPDATE
    assert effect("env.namespaces", "namespaces.net") == REPLACE_ENV
    assert effect("fs.rootfs", "rootfs") == REPLACE_ENV
    assert effect("fs.bind", "source") == REPLACE
    assert effect("nat.port", "container") == REPLACE
    assert effect("proc.main", "process.command") == REPLACE
    # a bridge set down by hand is set up in place; any other change makes it anew
    assert effect("net.bridge", "up") == UPDATE
    assert effect("net.bridge", "subnet") == REPLACE
    # a veth's bridge port flags changed by hand are set back in place (its environment's
    # network would otherwise be made anew, addresses, guard and ports with it)
    assert effect("net.veth", "bridge_port.hairpin") == UPDATE
    assert effect("net.veth", "peer") == REPLACE


def test_drift_of_a_removed_resource_and_verbose_listing():
    old = compile_doc(doc(**BASE))
    new = compile_doc(doc(**{**BASE, "limits": {}}))
    state = state_of(old, {"cgroup.memory": {"value": 1}})
    found = changes(new, state, {"cgroup.memory": None, "mount[/tmp]": {"other": 2}})
    drift = [c for c in found if c.drift]
    assert [(c.symbol, c.id) for c in drift] == [("~", "mount[/tmp]"), ("-", "cgroup.memory")]
    assert drift[0].reason == "changed outside vbdecl: other none -> 2"
    by_id = _by_id(found)
    assert by_id["mount[/tmp]"].symbol == "-/+"
    assert by_id["cgroup.memory"].reason.endswith("(already gone)")
    assert summary(found)["drift"] == 2
    listed = with_unchanged(new, found)
    assert [c.id for c in listed if not c.drift][:2] == ["env", "rootfs"]
    assert listed[-1].id == "cgroup"


def test_rules_changed_by_hand_are_said_as_such_unless_something_more_telling_changed():
    """The digest of a chain's nftables rules is the catch-all of NAT and guard drift: shown
    by itself, and left out where a named attribute (a DNAT target gone) says more."""
    plan = compile_doc(doc(**BASE))
    record = {"chain": "c", "to": ["10.0.0.2", "fd00::2"], "rules_sha256": "a" * 64}
    state = state_of(plan, {"mount[/tmp]": record})
    alone = changes(plan, state, {"mount[/tmp]": dict(record, rules_sha256="b" * 64)})
    assert alone[0].reason == "changed outside vbdecl: nftables rules sha256:aaaaaaaaaaaa -> sha256:bbbbbbbbbbbb"
    both = changes(plan, state, {"mount[/tmp]": dict(record, rules_sha256="b" * 64, to=["fd00::2"])})
    assert both[0].reason == 'changed outside vbdecl: to ["10.0.0.2","fd00::2"] -> ["fd00::2"]'


def test_a_renamed_environment_is_repaired_in_place_and_a_dead_one_replaced():
    """Drift of the environment's hostname (root inside renamed it) is repaired by the
    in-place update; other drift of the environment replaces it (its init died)."""
    plan = compile_doc(doc(**BASE, hostname="web"))
    state = state_of(plan, {"env": {"pid": 7, "hostname": "web"}})
    found = changes(plan, state, {"env": {"pid": 7, "hostname": "inside"}})
    assert [(c.symbol, c.id, c.reason) for c in found] == [
        ("~", "env", "changed outside vbdecl: hostname web -> inside"),
        ("~", "env", "repair: changed outside vbdecl: hostname web -> inside")]
    found = changes(plan, state, {"env": {"pid": 8, "hostname": "web"}})
    assert _by_id(found)["env"].symbol == "-/+" and _by_id(found)["rootfs"].symbol == "-/+"


def test_a_bind_made_read_only_is_an_update_and_the_way_back_a_replacement():
    old = compile_doc(doc(filesystem=[fs("bind", "/data", source="/a")]))
    for entry, symbol in ((fs("ro-bind", "/data", source="/a"), "~"), (fs("ro-bind", "/data", source="/b"), "-/+")):
        found = _by_id(changes(compile_doc(doc(filesystem=[entry])), state_of(old)))
        assert found["mount[/data]"].symbol == symbol, found["mount[/data]"].reason
    assert found["mount[/data]"].reason.startswith("kind fs.bind -> fs.ro-bind")
    ro = compile_doc(doc(filesystem=[fs("ro-bind", "/data", source="/a")]))
    back = _by_id(changes(compile_doc(doc(filesystem=[fs("bind", "/data", source="/a")])), state_of(ro)))
    assert back["mount[/data]"].symbol == "-/+"


def test_change_json_shape():
    old = compile_doc(doc(**BASE))
    new = compile_doc(doc(**{**BASE, "limits": {"memory": 512 << 20}}))
    (c,) = changes(new, state_of(old))
    assert c.line() == "~ cgroup.memory  # limits.memory 256Mi -> 512Mi"
    assert c.to_json() == {
        "id": "cgroup.memory", "symbol": "~", "action": "update", "kind": "cgroup.limit",
        "reason": "limits.memory 256Mi -> 512Mi", "drift": False, "replaces_environment": False,
        "attributes": [{"path": "value", "before": 256 << 20, "after": 512 << 20}],
    }


def test_a_metadata_only_change_is_shown_and_counts_as_a_change():
    """A review changed only a label: plan said "No changes" (and exit 0 with
    --detailed-exitcode), and apply never recorded it."""
    from vbdecl.plan.text import render_plan

    old = compile_doc(doc(**BASE))
    new_doc = doc(**BASE)
    new_doc["labels"] = {"tier": "db"}
    found = changes(compile_doc(new_doc), state_of(old))
    assert [(c.symbol, c.id) for c in found] == [("", "metadata")]
    assert has_changes(found)
    assert render_plan("web", found)[-1] == "No changes on the host: only web's metadata differs from its manifest."
    assert not has_changes(changes(compile_doc(doc(**BASE)), state_of(old)))


def test_labels_and_annotations_changed_beside_host_changes_are_shown():
    """A day-2 review: with a change on the host too, a label's change never showed in the
    plan (nor in `metadata_changed`), the rollback prompt or a diff of revisions."""
    from vbdecl.plan.text import plan_json, render_plan

    old_doc = doc(**BASE)
    old_doc["labels"] = {"team": "x"}
    old = compile_doc(old_doc)
    new_doc = doc(**{**BASE, "limits": {"memory": 512 << 20}})
    new_doc["labels"], new_doc["annotations"] = {"team": "y"}, {"note": "n"}
    new = compile_doc(new_doc)
    state = dict(state_of(old), instance="vb-00000001")
    found = changes(new, state)
    assert [(c.symbol, c.id) for c in found] == [("~", "cgroup.memory"), ("", "metadata")]
    assert found[-1].reason == "labels.team x -> y, annotations.note none -> n: apply records it"
    assert "  metadata  # labels.team" in "\n".join(render_plan("web", found))
    assert plan_json(new, found, state)["metadata_changed"] is True
    # a plan an older vbdecl stored has no annotations: its labels are still compared
    del old["annotations"]
    assert changes(new, dict(state_of(old), instance="vb-00000001"))[-1].reason == \
        "labels.team x -> y: apply records it"
    assert [c.id for c in changes(compile_doc(doc(**{**BASE, "limits": {"memory": 512 << 20}})),
                                   state_of(compile_doc(doc(**BASE))))] == ["cgroup.memory"]


def test_a_change_the_environments_replacement_carries_along_is_still_shown():
    """A review: with the environment replaced (then by a hostname, now by a namespace), a
    limit's own change read only "replaced with the environment"."""
    old = compile_doc(doc(**BASE))
    new_doc = doc(filesystem=BASE["filesystem"], limits={"memory": 512 << 20})
    new_doc["spec"]["namespaces"]["ipc"] = False
    new = compile_doc(new_doc)
    cg = next(c for c in changes(new, state_of(old)) if c.id == "cgroup.memory")
    assert cg.symbol == "-/+" and cg.reason.endswith("; replaced with the environment") and "memory" in cg.reason


def test_file_and_bind_data_content_is_not_shown_in_plans():
    """A user review: a changed bind-data entry (meant for secrets) showed its old and new
    content in plan and diff, which end up in CI logs. Content shows as its size and a
    short digest; a file source's pinned content as a short digest."""
    entries = [fs("tmpfs", "/etc"), fs("bind-data", "/etc/token", content="hunter2"),
               fs("file", "/etc/app.conf", source="/srv/app.conf")]
    old = compile_doc(doc(filesystem=entries))
    new_doc = doc(filesystem=[dict(e) for e in entries])
    new_doc["spec"]["filesystem"][1]["content"] = "swordfish"
    new = compile_doc(new_doc)
    for a, b in zip(old["actions"], new["actions"], strict=True):
        if a["kind"] == "fs.file":
            a["params"]["source_sha256"], b["params"]["source_sha256"] = "a" * 64, "b" * 64
    found = _by_id(changes(new, state_of(old)))
    token = found["mount[/etc/token]"].reason
    assert "hunter2" not in token and "swordfish" not in token
    assert token.startswith("content (7 bytes, sha256:") and "-> (9 bytes, sha256:" in token
    # nor in --json (a contract audit: its attributes carried both texts)
    shown = json.dumps(found["mount[/etc/token]"].to_json())
    assert "hunter2" not in shown and "swordfish" not in shown
    assert found["mount[/etc/token]"].to_json()["attributes"] == [
        {"path": "content", "before": {"bytes": 7, "sha256": hashlib.sha256(b"hunter2").hexdigest()},
         "after": {"bytes": 9, "sha256": hashlib.sha256(b"swordfish").hexdigest()}}]
    assert found["file[/etc/app.conf]"].symbol == "~"
    assert found["file[/etc/app.conf]"].reason == "source content sha256:aaaaaaaaaaaa -> sha256:bbbbbbbbbbbb"


def test_a_file_applied_before_sources_were_pinned_is_no_change_for_that_alone():
    """A review: every environment applied before file sources were pinned showed
    `~ file[...]  # source content none -> sha256:...` after the upgrade."""
    entries = [fs("tmpfs", "/etc"), fs("file", "/etc/app.conf", source="/srv/app.conf")]
    old = compile_doc(doc(filesystem=entries))
    new = compile_doc(doc(filesystem=[dict(e) for e in entries]))
    for a in new["actions"]:
        if a["kind"] == "fs.file":
            a["params"]["source_sha256"] = "a" * 64
    assert "file[/etc/app.conf]" not in _by_id(changes(new, state_of(old)))
    pinned = state_of(copy.deepcopy(new))
    for a in new["actions"]:
        if a["kind"] == "fs.file":
            a["params"]["source_sha256"] = "b" * 64
    assert _by_id(changes(new, pinned))["file[/etc/app.conf]"].symbol == "~"


def test_a_process_applied_before_profiles_were_pinned_is_no_change_for_that_alone():
    """Seccomp profiles are read into the plan (engine.sources.pin_file_sources): an
    environment applied before that has no text on record, which alone is no change;
    once on record, other text is, shown by its size and digest."""
    spec = {"security": {"seccomp": {"profile": "/srv/p.json"}}}
    old = compile_doc(doc(**spec))
    new = compile_doc(doc(**copy.deepcopy(spec)))

    def pin(plan: dict[str, Any], text: str) -> None:
        proc = next(a for a in plan["actions"] if a["kind"] == "proc.main")
        proc["params"]["security"]["seccomp"]["profile_text"] = text

    pin(new, '{"defaultAction": "SCMP_ACT_ALLOW"}')
    assert "process" not in _by_id(changes(new, state_of(old)))
    pinned = state_of(copy.deepcopy(new))
    pin(new, '{"defaultAction": "SCMP_ACT_LOG"}')
    found = _by_id(changes(new, pinned))["process"]
    assert found.symbol == "-/+", found
    assert found.reason.startswith("security.seccomp.profile content (35 bytes, sha256:"), found.reason
    assert "SCMP_ACT" not in found.reason


def test_plan_text_keeps_each_change_on_one_line():
    """A review: a target with a newline broke its id over two lines, a command
    argument with one its reason, and a target holding "  # " made the line
    ambiguous. Plan and graph text escape them; --json keeps them exact."""
    from vbdecl.plan.text import plan_json, render_plan, render_tree

    targets = ["/a\nb", "/x  # y", "/x  #  # z", "/back\\slash", "/esc\x1b[31m", "/ls\u2028x"]
    desired = compile_doc(doc(filesystem=[fs("tmpfs", t) for t in targets],
                              process={"command": ["/bin/sh", "-c", "echo a\nb\tc"]}))
    found = changes(desired, None)
    lines = render_plan("web", found)
    lines += render_tree(desired)
    for line in lines:
        assert line.isprintable(), line
    by_line = {c.id: c.line() for c in found}
    for c in found:
        ident, sep, reason = c.line()[2:].partition("  # ")
        assert sep and reason
        assert ident.encode().decode("unicode_escape") == c.id
    assert by_line["mount[/a\nb]"] == "+ mount[/a\\nb]  # tmpfs on /a\\nb"
    assert by_line["mount[/x  # y]"] == "+ mount[/x  \\x23 y]  # tmpfs on /x  # y"
    assert by_line["mount[/back\\slash]"] == "+ mount[/back\\\\slash]  # tmpfs on /back\\slash"
    assert by_line["process"].startswith("+ process  # run /bin/sh -c 'echo a\\nb\\tc'")
    # the JSON has the ids and reasons as they are
    doc_json = plan_json(desired, found, None)
    assert {c["id"] for c in doc_json["changes"]} >= {f"mount[{t}]" for t in targets}
    assert any("echo a\nb\tc" in c["reason"] for c in doc_json["changes"])
    # and an id that needs nothing is unchanged
    assert by_line["rootfs"] == "+ rootfs  # fresh tmpfs root"


def test_an_environment_leaving_a_bridge_says_the_bridge_goes_only_with_its_last_user():
    """A network review read `- net.bridge[vbnr0]` as the bridge going, while other
    environments used it (it stays: this environment leaves it)."""
    old = compile_doc(doc(network={"mode": "bridge", "bridge": "vbnr0"}))
    found = _by_id(changes(compile_doc(doc(network={"mode": "isolated"})), state_of(old)))
    bridge = found["net.bridge[vbnr0]"]
    assert bridge.symbol == "-" and bridge.reason.endswith(
        "; the bridge itself goes only with its last user, and only if vbdecl made it")


def test_a_comparison_of_two_files_speaks_of_no_apply():
    """A review's `diff A.yaml B.yaml` of one environment in two files said `now applied
    from B (so far from A) ... apply records it`: nothing is applied in a comparison."""
    a, b = compile_doc(doc(**BASE)), compile_doc(doc(**BASE))
    a["source"], b["source"] = {"path": "/m/a.yaml"}, {"path": "/m/b.yaml"}
    # (nor of the files' paths, which the user gave: a day-2 review read that as noise)
    from vbdecl.plan.text import render_plan

    found = changes(b, state_of(a))
    assert not [c for c in found if c.kind == "metadata"]
    assert render_plan("web", found, compared=True)[-1] == "No changes: web is the same in both."


def test_two_long_values_that_read_alike_once_shortened_show_where_they_differ():
    """A day-2 review changed `echo tick` to `echo tock` in a long `sh -c` command: the
    plan showed the same shortened text on both sides of the arrow."""
    from vbdecl.plan.diff import reason_of

    loop = "i=0; while true; do echo {} $i; i=$((i+1)); sleep 2; done"
    before, after = ["sh", "-c", loop.format("tick")], ["sh", "-c", loop.format("tock")]
    said = reason_of("proc.main", [("process.command", before, after)], {})
    old, new = said.removeprefix("process.command ").split(" -> ")
    assert old != new and "tick" in old and "tock" in new, said
    assert len(old) <= 48 and len(new) <= 48
    # values that differ where the shortening shows it stay as they were
    assert reason_of("proc.main", [("process.command", ["/bin/true"], ["/bin/false"])], {}) == \
        "process.command /bin/true -> /bin/false"
