"""Fault injection through the real CLI at every action of a manifest that uses
every resource kind (test_reliability_support.FULL_MANIFEST: fresh root, binds,
proc/dev/tmpfs, dir/file/bind-data/symlinks, the three overlays, net files,
cgroup limits, bridge + veth + address + route, NAT, a published port, the
process).

- ``VBDECL_FAULT=<id>``: apply fails with an error naming the action; the
  rollback leaves the host as before; ``recover`` has nothing left to do; the
  state says the environment does not exist; the next apply succeeds and the
  destroy after it leaves nothing.
- ``VBDECL_FAULT=process,<id>:revert``: the rollback's revert of <id> fails too:
  both are reported, the transaction stays open, ``recover`` finishes it and
  nothing is left.
- ``VBDECL_FAULT=<id>:revert`` on destroy: destroy fails naming the action,
  ``recover`` rolls the destroy forward and nothing is left.

The destroy-revert family runs on every action with VBDECL_FULL=1, and on
one action of each kind otherwise (CI time).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_reliability_support import (
    FULL,
    FULL_IDS,
    FullEnv,
    assert_clean,
    check,
    cleanup_envs,  # noqa: F401  (autouse fixture)
    cli,
    host,
    track,
)
from testmanifests import head


def _env(tmp_path: Path) -> FullEnv:
    return FullEnv(tmp_path)


def test_the_manifest_has_these_actions(tmp_path: Path) -> None:
    env = _env(tmp_path)
    out = env.cli("plan", str(env.path), "--json")
    check(out, 0, "plan")
    import json

    ids = [c["id"] for c in json.loads(out.stdout)["plans"][0]["changes"]]
    assert ids == env.ids()
    kinds = {c["kind"] for c in json.loads(out.stdout)["plans"][0]["changes"]}
    assert {"fs.overlay", "fs.tmp-overlay", "fs.ro-overlay", "fs.bind", "fs.bind-data", "cgroup.limit",
            "net.bridge", "nat.masquerade", "nat.port", "proc.main"} <= kinds


@pytest.mark.parametrize("aid", FULL_IDS)
def test_apply_fault(tmp_path: Path, aid: str) -> None:
    env = _env(tmp_path)
    aid = env.real_id(aid)
    before = host()
    out = env.apply(fault=aid)
    check(out, 1, f"apply with a fault at {aid}")
    assert f"error: {aid}: injected fault" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert_clean(before, f"after the rollback of a fault at {aid}")
    assert env.state_json() is None and not env.journal_open()
    check(env.recover(), 0, "recover")
    assert_clean(before, f"after recover ({aid})")
    # the next apply succeeds and lands every action
    check(env.apply(), 0, f"apply after a fault at {aid}")
    state = env.state_json()
    assert state is not None and sorted(state["resources"]) == sorted(env.ids())
    check(env.destroy(), 0, "destroy")
    assert_clean(before, f"after destroy ({aid})")


@pytest.mark.parametrize("aid", [i for i in FULL_IDS if i != "process"])
def test_rollback_revert_fault(tmp_path: Path, aid: str) -> None:
    env = _env(tmp_path)
    aid = env.real_id(aid)
    before = host()
    out = env.apply(fault=f"process,{aid}:revert")
    check(out, 1, f"apply with a failing revert of {aid}")
    assert "process: injected fault" in out.stderr, out.stderr
    assert aid in out.stderr and "injected revert fault" in out.stderr, out.stderr
    assert "vbdecl recover" in out.stderr, out.stderr        # what to do next
    assert "Traceback" not in out.stderr
    assert env.journal_open(), "a failed rollback leaves the transaction open for recover"
    out = env.recover()
    check(out, 0, f"recover after a failing revert of {aid}")
    assert_clean(before, f"after recover ({aid}:revert)")
    assert env.state_json() is None and not env.journal_open()
    check(env.recover(), 0, "a second recover")


def _one_per_kind() -> list[str]:
    seen: set[str] = set()
    out = []
    for aid in FULL_IDS:
        kind = aid.split("[")[0].split(".")[0] if aid.startswith(("cgroup.", "symlink")) else aid.split("[")[0]
        if kind not in seen:
            seen.add(kind)
            out.append(aid)
    return out


@pytest.mark.parametrize("aid", FULL_IDS if FULL else _one_per_kind())
def test_destroy_revert_fault(tmp_path: Path, aid: str) -> None:
    env = _env(tmp_path)
    aid = env.real_id(aid)
    before = host()
    check(env.apply(), 0, "apply")
    out = env.destroy(fault=f"{aid}:revert")
    check(out, 1, f"destroy with a failing revert of {aid}")
    assert aid in out.stderr and "injected revert fault" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    check(env.recover(), 0, f"recover after a failed destroy at {aid}")
    assert_clean(before, f"after recover of a destroy ({aid}:revert)")
    assert env.state_json() is None and not env.journal_open()


def _v2(env: FullEnv) -> tuple[str, list[str]]:
    """A second revision: a limit changed in place, a file rewritten, a port added."""
    text = env.path.read_text()
    port2 = env.port + 1 if env.port < 60000 else env.port - 1
    text = (text.replace("memory: 64Mi", "memory: 96Mi")
            .replace('content: "hello\\n"', 'content: "hello v2\\n"')
            .replace(f'ports: ["{env.port}:80/tcp"]', f'ports: ["{env.port}:80/tcp", "{port2}:81/tcp"]'))
    return text, ["cgroup.memory", "file[/etc/motd]", f"nat.port[{port2}/tcp]"]


@pytest.mark.parametrize("which", [0, 1, 2])
def test_update_fault_keeps_the_previous_revision(tmp_path: Path, which: int) -> None:
    env = _env(tmp_path)
    before = host()
    check(env.apply(), 0, "apply v1")
    v1_host, v1_state = host(), env.state_json()
    v1_text = env.path.read_text()
    text, changed = _v2(env)
    env.path.write_text(text)
    aid = changed[which]
    out = env.apply(fault=aid)
    check(out, 1, f"update with a fault at {aid}")
    assert f"error: {aid}: injected fault" in out.stderr, out.stderr
    assert "the environment is as its last apply left it\n" in out.stderr, out.stderr  # (no process change)
    assert_clean(v1_host, f"the update's rollback (fault at {aid}) restores revision 1")
    state = env.state_json()
    assert state is not None and v1_state is not None and not env.journal_open()
    assert {k: state[k] for k in ("serial", "revision", "lineage", "instance", "plan")} == \
        {k: v1_state[k] for k in ("serial", "revision", "lineage", "instance", "plan")}
    assert {r: (v["kind"], v["params"]) for r, v in state["resources"].items()} == \
        {r: (v["kind"], v["params"]) for r, v in v1_state["resources"].items()}
    check(env.apply(), 0, "the update without a fault")
    state = env.state_json()
    assert state is not None and state["revision"] == 2
    env.path.write_text(v1_text)
    check(env.destroy(), 0, "destroy")
    assert_clean(before, "after destroy")


def test_removing_a_file_entry_in_place_removes_the_file(tmp_path: Path) -> None:
    env = _env(tmp_path)
    before = host()
    check(env.apply(), 0, "apply")
    state = env.state_json()
    assert state is not None
    root = Path(f"/proc/{state['resources']['env']['record']['pid']}/root")
    assert (root / "etc/motd").read_text() == "hello\n"
    v1 = env.path.read_text()
    env.path.write_text(v1.replace('    - {type: file, target: /etc/motd, content: "hello\\n", mode: "0644"}\n', ""))
    try:
        check(env.apply(), 0, "apply without the file entry")
        assert not (root / "etc/motd").exists()
    finally:
        env.path.write_text(v1)
        check(env.destroy(), 0, "destroy")
        assert_clean(before, "after destroy")


def test_an_apply_goes_on_from_a_replacement_that_cannot_roll_back(tmp_path: Path) -> None:
    """The same stuck replacement: the next apply abandons the rollback and converges
    what it left to the manifest (a new environment with the new hostname and namespaces)."""
    env = _env(tmp_path)
    before = host()
    check(env.apply(), 0, "apply")
    # (a hostname is set in place: another ipc namespace replaces the environment)
    env.path.write_text(env.path.read_text().replace("hostname: full", "hostname: other\n  namespaces: {ipc: false}"))
    out = env.apply(fault="mount[/usr]:revert")
    check(out, 1, "a replacement whose revert of /usr fails")
    # the way on, not recover (which cannot finish: a new-user review followed the old hint)
    assert "this apply replaced the environment, and the old one cannot come back; go on from what " \
           "it left: vbdecl apply FILE, or vbdecl destroy full" in out.stderr, out.stderr
    out = env.cli("plan", str(env.path))
    assert "warning: full: a apply did not finish" not in out.stderr
    assert "warning: full: an apply did not finish" in out.stderr, out.stderr
    out = env.apply()
    check(out, 0, "the apply after it")
    assert "going on from what it left" in out.stderr and "Traceback" not in out.stderr, out.stderr
    out = env.cli("exec", "full", "--", "/bin/hostname")
    check(out, 0, "exec")
    assert out.stdout.strip() == "other"
    check(env.cli("plan", "--detailed-exitcode", str(env.path)), 0, "no drift left")
    check(env.destroy(), 0, "destroy")
    assert_clean(before, "after destroy")


def test_a_replacement_that_cannot_roll_back_can_be_destroyed(tmp_path: Path) -> None:
    """A namespace change replaces the environment: its old resources are destroyed first,
    the cgroup's destroy killing the old init. A failure after that (here the revert
    of /usr) leaves undos into a dead environment, which cannot land: recover says
    so, and destroy, which wants nothing left anyway, tears down everything (a sweep
    found such environments stuck: recover, apply and destroy all failing)."""
    env = _env(tmp_path)
    before = host()
    check(env.apply(), 0, "apply")
    # (a hostname is set in place: another ipc namespace replaces the environment)
    env.path.write_text(env.path.read_text().replace("hostname: full", "hostname: other\n  namespaces: {ipc: false}"))
    out = env.apply(fault="mount[/usr]:revert")
    check(out, 1, "a replacement whose revert of /usr fails")
    assert env.journal_open(), out.stderr
    out = env.recover()
    check(out, 1, "recover of a replacement whose environment died")
    assert "vbdecl destroy full" in out.stderr, out.stderr          # the ways out
    out = env.destroy()
    check(out, 0, "destroy after a rollback that cannot finish")
    assert "cannot be rolled back" in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert_clean(before, "after destroying what the replacement left")
    assert env.state_json() is None and not env.journal_open()


def test_undoing_the_destroy_of_the_root_keeps_the_live_one(tmp_path: Path) -> None:
    """rootfs's destroy leaves the root to the environment's mount namespace; when
    the replacement fails before the environment goes, the rollback keeps the root
    that is still there instead of building one over it (which failed: "no
    directory to stage the new root in", and the environment stayed stuck)."""
    state = tmp_path / "state"
    manifest = tmp_path / "r.yaml"
    text = head("rootundo", hostname="h1", template=False) + (
        "    - {type: proc, target: /proc}\n"
        "  process: {command: [/bin/sleep, '3600']}\n")
    track(state, "rootundo")
    before = host()
    manifest.write_text(text)
    check(cli(state, "apply", str(manifest), "-y"), 0, "apply")
    manifest.write_text(text.replace("hostname: h1", "hostname: h2\n  namespaces: {ipc: false}"))
    out = cli(state, "apply", str(manifest), "-y", fault="env:revert")
    check(out, 1, "a replacement whose revert of env fails")
    assert "restored rootfs" in out.stderr and "Traceback" not in out.stderr, out.stderr
    out = cli(state, "exec", "rootundo", "--", "/bin/hostname")
    check(out, 0, "exec into the rolled-back environment")
    assert out.stdout.strip() == "h1"
    check(cli(state, "destroy", "rootundo", "-y"), 0, "destroy")
    assert_clean(before, "after destroy")


def test_a_cgroup_directory_removed_behind_vbdecls_back_is_made_again(tmp_path: Path) -> None:
    """Drift in part of the group (its memory directory removed, the processes moved
    out first): apply's repair of the group makes the directory again with the
    processes in it, and the memory limit lands there (a sweep found the repair
    doing nothing, the limit failing with ENOENT and the environment stuck)."""
    env = _env(tmp_path)
    before = host()
    check(env.apply(), 0, "apply")
    state = env.state_json()
    assert state is not None
    group = state["resources"]["cgroup"]["record"]
    memory = next(d for d in group["dirs"] if "memory" in d["controllers"])["path"]
    procs = set(Path(memory, "cgroup.procs").read_text().split())
    assert procs
    top = os.path.dirname(os.path.dirname(memory))
    for pid in procs:
        Path(top, "cgroup.procs").write_text(pid)
    os.rmdir(memory)
    out = env.cli("plan", str(env.path))
    assert "~ cgroup" in out.stdout and "repair" in out.stdout, out.stdout
    check(env.apply(), 0, "the apply that repairs the group")
    limit = Path(memory, "memory.limit_in_bytes")
    if not limit.exists():
        limit = Path(memory, "memory.max")      # cgroup2
    assert limit.read_text().strip() == str(64 << 20)
    assert procs <= set(Path(memory, "cgroup.procs").read_text().split())
    check(env.cli("plan", "--detailed-exitcode", str(env.path)), 0, "no drift left")
    check(env.destroy(), 0, "destroy")
    assert_clean(before, "after destroy")


# entry id -> (its manifest line's text before, after, a command that shows it, what it shows
# before); symlink[/run/cur] is added to the manifest for this test
IN_PLACE = {
    "file[/etc/motd]": ('content: "hello\\n"', 'content: "bye\\n"', ["/bin/cat", "/etc/motd"], "hello\n"),
    "dir[/run/app]": ('target: /run/app, mode: "0755"', 'target: /run/app, mode: "0700"',
                      ["/usr/bin/stat", "-c", "%a", "/run/app"], "755\n"),
    "symlink[/run/cur]": ("points_to: v1", "points_to: v2", ["/usr/bin/readlink", "/run/cur"], "v1\n"),
}


def _killed_in_then_recovered(env: FullEnv, hook: str) -> None:
    """An apply SIGKILLed once ``hook`` (an action id, ``:revert`` for its revert) ran,
    before its record was journaled; then ``vbdecl recover``."""
    out = env.apply(env={"VBDECL_TEST_CRASH_BEFORE_DONE": hook})
    assert out.returncode in (-9, 137), (out.returncode, out.stderr)
    check(env.recover(), 0, "recover")


def _with_symlink(env: FullEnv) -> str:
    text = env.path.read_text().replace(
        '    - {type: dir, target: /run/app', '    - {type: symlink, target: /run/cur, points_to: v1}\n'
        '    - {type: dir, target: /run/app')
    env.path.write_text(text)
    return text


@pytest.mark.parametrize(("aid", "change", "why"), [
    ("dir[/run/app]", ["/bin/chmod", "700", "/run/app"], "mode 0755 -> 0700"),
    ("symlink[/run/cur]", ["/bin/ln", "-sfn", "elsewhere", "/run/cur"], "points_to v1 -> elsewhere"),
])
def test_an_entry_changed_outside_is_set_back_in_place(tmp_path: Path, aid: str, change: list[str],
                                                       why: str) -> None:
    """A mode or link target changed outside vbdecl is drift on that attribute (it was
    "deleted outside vbdecl" and recreated), set back in place, still vbdecl's."""
    env = _env(tmp_path)
    _with_symlink(env)
    before = host()
    check(env.apply(), 0, "apply")
    check(env.cli("exec", "full", "--", *change), 0, " ".join(change))
    out = env.cli("plan", str(env.path))
    assert f"~ {aid}  # changed outside vbdecl: {why}" in out.stdout, out.stdout
    assert f"~ {aid}  # repair: changed outside vbdecl: {why}" in out.stdout, out.stdout
    check(env.apply(), 0, "the apply that repairs it")
    check(env.cli("plan", "--detailed-exitcode", str(env.path)), 0, "no drift left")
    state = env.state_json()
    assert state is not None
    target = aid[aid.index("[") + 1:-1]
    assert target in state["resources"][aid]["record"]["created"]
    check(env.destroy(), 0, "destroy")
    assert_clean(before, "after destroy")


def test_a_link_pointed_elsewhere_moves_the_entries_below_it(tmp_path: Path) -> None:
    """A file and a tmpfs placed through a link go from the old place and are made at
    the new one when the link points elsewhere (in place, they stayed behind)."""
    env = _env(tmp_path)
    v1 = _with_symlink(env).replace(
        '    - {type: symlink, target: /run/cur, points_to: v1}\n',
        '    - {type: dir, target: /run/v1}\n    - {type: dir, target: /run/v2}\n'
        '    - {type: symlink, target: /run/cur, points_to: v1}\n'
        '    - {type: file, target: /run/cur/conf, content: "c"}\n'
        '    - {type: tmpfs, target: /run/cur/data}\n')
    env.path.write_text(v1)
    before = host()
    check(env.apply(), 0, "apply")
    env.path.write_text(v1.replace("points_to: v1", "points_to: v2"))
    out = env.cli("plan", str(env.path))
    assert "~ symlink[/run/cur]" in out.stdout and "-/+ file[/run/cur/conf]" in out.stdout, out.stdout
    check(env.apply(), 0, "apply the new link")
    out = env.cli("exec", "full", "--", "/bin/sh", "-c",
                  "ls -A /run/v1; echo -; cat /run/v2/conf; echo; grep -c ' /run/v2/data ' /proc/self/mountinfo;"
                  " grep -c ' /run/v1/data ' /proc/self/mountinfo")
    assert out.stdout.split("\n")[:4] == ["-", "c", "1", "0"], (out.stdout, out.stderr)
    check(env.cli("plan", "--detailed-exitcode", str(env.path)), 0, "nothing left to do")
    check(env.destroy(), 0, "destroy")
    assert_clean(before, "after destroy")


@pytest.mark.parametrize("entry", ["chmod", "dir"])
def test_a_mode_entry_removed_by_a_killed_apply_is_set_back(tmp_path: Path, entry: str) -> None:
    """An apply that removes a chmod (or a dir entry on a directory vbdecl did not
    make), killed once the mode from before is back but before that was journaled:
    the recover sets the entry's mode again (it kept the record as if nothing had
    happened, and the state said 0700 over a 0755 directory)."""
    env = _env(tmp_path)
    line = ('    - {type: chmod, target: /run, mode: "0700"}\n' if entry == "chmod"
            else '    - {type: dir, target: /run, mode: "0700"}\n')
    base = env.path.read_text()
    app = '    - {type: dir, target: /run/app, mode: "0755"}\n'
    assert app in base
    v1 = base.replace(app, app + line)      # after /run/app, which makes /run
    env.path.write_text(v1)
    before = host()
    check(env.apply(), 0, "apply")
    show = ["/usr/bin/stat", "-c", "%a", "/run"]
    assert env.cli("exec", "full", "--", *show).stdout == "700\n"
    env.path.write_text(base)
    _killed_in_then_recovered(env, f"{entry}[/run]:revert")
    assert env.cli("exec", "full", "--", *show).stdout == "700\n"
    env.path.write_text(v1)
    check(env.cli("plan", "--detailed-exitcode", str(env.path)), 0, "the state says what is there")
    env.path.write_text(base)
    check(env.apply(), 0, "apply without the entry")
    assert env.cli("exec", "full", "--", *show).stdout == "755\n"
    check(env.destroy(), 0, "destroy")
    assert_clean(before, "after destroy")


def test_dir_modes_settle_with_setgid_and_a_chmod_on_the_same_path(tmp_path: Path) -> None:
    """mkdir leaves setgid out and a setgid parent adds it: the mode is set after it
    (plan showed drift right after apply); a chmod entry on a dir entry's path has
    the last word (the two flipped the mode on every apply)."""
    env = _env(tmp_path)
    app = '    - {type: dir, target: /run/app, mode: "0755"}\n'
    base = env.path.read_text()
    assert app in base
    env.path.write_text(base.replace(app, app + '    - {type: chmod, target: /run/app, mode: "0710"}\n'
                                     '    - {type: dir, target: /run/g, mode: "2755"}\n'
                                     '    - {type: dir, target: /run/g/d, mode: "0700"}\n'))
    before = host()
    check(env.apply(), 0, "apply")
    check(env.cli("plan", "--detailed-exitcode", str(env.path)), 0, "no drift right after")
    out = env.cli("exec", "full", "--", "/usr/bin/stat", "-c", "%a", "/run/app", "/run/g", "/run/g/d")
    assert out.stdout.split() == ["710", "2755", "700"], out.stdout + out.stderr
    check(env.apply(), 0, "apply again")
    check(env.cli("plan", "--detailed-exitcode", str(env.path)), 0, "still none")
    check(env.destroy(), 0, "destroy")
    assert_clean(before, "after destroy")


@pytest.mark.parametrize("aid", sorted(IN_PLACE))
def test_an_entry_changed_in_place_stays_vbdecls_across_a_crash(tmp_path: Path, aid: str) -> None:
    """New content, mode or link target is set in place (`~`): killed before the change
    was journaled, recover sets the old one back and the object stays vbdecl's, so
    removing its entry later removes it (a sweep found files left behind: the destroy
    and create such a change was before lost what vbdecl had created)."""
    before_text, after_text, show, shown = IN_PLACE[aid]
    target = aid[aid.index("[") + 1:-1]
    env = _env(tmp_path)
    v1 = _with_symlink(env)
    assert before_text in v1
    before = host()
    check(env.apply(), 0, "apply")
    env.path.write_text(v1.replace(before_text, after_text))
    out = env.cli("plan", str(env.path))
    assert f"~ {aid}" in out.stdout, out.stdout
    _killed_in_then_recovered(env, aid)
    out = env.cli("exec", "full", "--", *show)
    check(out, 0, " ".join(show))
    assert out.stdout == shown
    check(env.apply(), 0, "apply the change")
    out = env.cli("exec", "full", "--", *show)
    assert out.stdout != shown, out.stdout
    env.path.write_text("".join(line for line in v1.splitlines(keepends=True)
                                if f"target: {target}," not in line))
    check(env.apply(), 0, "apply without the entry")
    out = env.cli("exec", "full", "--", "/bin/ls", "-d", target)
    assert out.returncode != 0 and "No such file" in out.stderr, (out.stdout, out.stderr)
    check(env.destroy(), 0, "destroy")
    assert_clean(before, "after destroy")


NEW_ENTRIES = {
    "dir[/run/n1/n2/d]": "    - {type: dir, target: /run/n1/n2/d}\n",
    "file[/run/n1/n2/f]": '    - {type: file, target: /run/n1/n2/f, content: "x"}\n',
    "symlink[/run/n1/n2/l]": "    - {type: symlink, target: /run/n1/n2/l, points_to: /nowhere}\n",
    "mount[/run/n1/n2/m]": "    - {type: tmpfs, target: /run/n1/n2/m}\n",
}


@pytest.mark.parametrize("aid", sorted(NEW_ENTRIES))
def test_an_entry_added_by_a_killed_apply_leaves_nothing(tmp_path: Path, aid: str) -> None:
    """An entry added to a live environment, the apply killed once it made its object
    (and the directories on the way) but before that was journaled: the recover
    removes all of it (what was there before the apply is journaled with its intent;
    without that the object was taken for one that had been there, and stayed)."""
    env = _env(tmp_path)
    base = env.path.read_text()
    app = '    - {type: dir, target: /run/app, mode: "0755"}\n'
    before = host()
    check(env.apply(), 0, "apply")
    env.path.write_text(base.replace(app, app + NEW_ENTRIES[aid]))
    _killed_in_then_recovered(env, aid)
    out = env.cli("exec", "full", "--", "/bin/ls", "-A", "/run")
    assert out.stdout.split() == ["app"], (out.stdout, out.stderr)
    env.path.write_text(base)
    check(env.cli("plan", "--detailed-exitcode", str(env.path)), 0, "the state says what is there")
    check(env.destroy(), 0, "destroy")
    assert_clean(before, "after destroy")


@pytest.mark.parametrize("entry", ["chmod", "dir"])
def test_a_mode_entry_added_by_a_killed_apply_is_undone(tmp_path: Path, entry: str) -> None:
    """A chmod (or a dir entry on a directory vbdecl did not make) added by an apply
    killed after the chmod but before it was journaled: the recover sets the mode
    from before back (it kept 0700, with no record of 0755)."""
    env = _env(tmp_path)
    base = env.path.read_text()
    app = '    - {type: dir, target: /run/app, mode: "0755"}\n'
    line = f'    - {{type: {entry}, target: /run, mode: "0700"}}\n'
    before = host()
    check(env.apply(), 0, "apply")
    show = ["/usr/bin/stat", "-c", "%a", "/run"]
    assert env.cli("exec", "full", "--", *show).stdout == "755\n"
    env.path.write_text(base.replace(app, app + line))
    _killed_in_then_recovered(env, f"{entry}[/run]")
    assert env.cli("exec", "full", "--", *show).stdout == "755\n"
    env.path.write_text(base)
    check(env.cli("plan", "--detailed-exitcode", str(env.path)), 0, "the state says what is there")
    check(env.destroy(), 0, "destroy")
    assert_clean(before, "after destroy")


def test_a_directory_another_entry_declares_stays_when_the_first_goes(tmp_path: Path) -> None:
    """A file entry made /run/p/q on its way; a dir entry for /run/p/q came later. The
    file entry's removal leaves the declared directory (it took it for its own and
    removed it once empty), and the dir entry's removal then takes what vbdecl made."""
    env = _env(tmp_path)
    base = env.path.read_text()
    app = '    - {type: dir, target: /run/app, mode: "0755"}\n'
    file_line = '    - {type: file, target: /run/p/q/f, content: "x"}\n'
    dir_line = "    - {type: dir, target: /run/p/q}\n"
    before = host()
    env.path.write_text(base.replace(app, app + file_line))
    check(env.apply(), 0, "apply with the file")
    env.path.write_text(base.replace(app, app + file_line + dir_line))
    check(env.apply(), 0, "apply with the dir too")
    env.path.write_text(base.replace(app, app + dir_line))
    check(env.apply(), 0, "apply without the file")
    out = env.cli("exec", "full", "--", "/bin/ls", "-A", "/run/p/q")
    check(out, 0, "the declared directory is there")
    assert out.stdout == "", out.stdout
    check(env.cli("plan", "--detailed-exitcode", str(env.path)), 0, "no drift")
    env.path.write_text(base)
    check(env.apply(), 0, "apply without either")
    out = env.cli("exec", "full", "--", "/bin/ls", "-A", "/run")
    assert out.stdout.split() == ["app"], (out.stdout, out.stderr)
    check(env.destroy(), 0, "destroy")
    assert_clean(before, "after destroy")


@pytest.mark.parametrize("removed", ["tmpfs", "symlink"])
def test_entries_below_a_removed_mount_or_link_are_made_again(tmp_path: Path, removed: str) -> None:
    """A tmpfs (or a link) removed while the file placed in it (through it) stays: the
    file goes with it and is made again where its path now leads, in the same apply
    (it stayed in the unmounted tmpfs, or at the link's old place, and the next plan
    found it deleted)."""
    env = _env(tmp_path)
    base = env.path.read_text()
    app = '    - {type: dir, target: /run/app, mode: "0755"}\n'
    over = ("    - {type: tmpfs, target: /run/t}\n" if removed == "tmpfs"
            else "    - {type: dir, target: /run/v1}\n    - {type: symlink, target: /run/t, points_to: v1}\n")
    entry = '    - {type: file, target: /run/t/f, content: "x"}\n'
    before = host()
    env.path.write_text(base.replace(app, app + over + entry))
    check(env.apply(), 0, "apply")
    env.path.write_text(base.replace(app, app + entry))
    out = env.cli("plan", str(env.path))
    assert "-/+ file[/run/t/f]" in out.stdout, out.stdout
    check(env.apply(), 0, "apply without it")
    check(env.cli("plan", "--detailed-exitcode", str(env.path)), 0, "nothing left to do")
    out = env.cli("exec", "full", "--", "/bin/sh", "-c", "cat /run/t/f; echo; ls -A /run; ls -A /run/v1 2>&1")
    assert out.stdout.split() == ["x", "app", "t", "ls:", "cannot", "access", "'/run/v1':", "No", "such",
                                  "file", "or", "directory"], (out.stdout, out.stderr)
    check(env.destroy(), 0, "destroy")
    assert_clean(before, "after destroy")


def test_a_first_mode_given_by_a_killed_update_is_set_back(tmp_path: Path) -> None:
    """A dir entry on a directory it did not make gets its first mode in place (`~`);
    killed before that was journaled, the recover sets the mode the directory had
    back (the record had no mode from before, and 0700 stayed with a state that said
    no mode)."""
    env = _env(tmp_path)
    base = env.path.read_text()
    app = '    - {type: dir, target: /run/app, mode: "0755"}\n'
    v1 = base.replace(app, app + "    - {type: dir, target: /run}\n")    # /run: made for /run/app
    env.path.write_text(v1)
    before = host()
    check(env.apply(), 0, "apply")
    show = ["/usr/bin/stat", "-c", "%a", "/run"]
    env.path.write_text(v1.replace("target: /run}", 'target: /run, mode: "0700"}'))
    _killed_in_then_recovered(env, "dir[/run]")
    assert env.cli("exec", "full", "--", *show).stdout == "755\n"
    env.path.write_text(v1)
    check(env.cli("plan", "--detailed-exitcode", str(env.path)), 0, "the state says what is there")
    check(env.destroy(), 0, "destroy")
    assert_clean(before, "after destroy")
