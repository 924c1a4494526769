"""The bubblewrap command-line parser: semantics, defaults and bubblewrap's errors."""

from __future__ import annotations

import os

import pytest

from vbdecl.vb.manifest import manifest_to_bwrap
from vbdecl.vb.parse import HelpRequested, VbUsageError, parse, to_document


def doc(*args: str, uid: int = 0) -> dict:
    return to_document(parse(list(args), uid=uid, gid=uid), uid=uid, gid=uid, cwd="/")


def test_defaults_follow_bubblewrap_only_mount_namespace_and_host_network():
    spec = doc("--ro-bind", "/usr", "/usr", "true")["spec"]
    assert spec["namespaces"] == {"user": False, "pid": False, "mount": True, "uts": False,
                                  "ipc": False, "net": False, "cgroup": False}
    assert spec["network"]["mode"] == "host"
    assert spec["process"]["init"] is True
    assert spec["security"]["seccomp"] == "off"
    assert spec["process"]["command"] == ["true"]


def test_unprivileged_caller_gets_a_user_namespace_mapping_itself():
    spec = doc("true", uid=1000)["spec"]
    assert spec["namespaces"]["user"] is True
    assert spec["idmap"]["uid"] == [{"inside": 1000, "outside": 1000, "count": 1}]
    assert spec["security"]["capabilities"]["add"] == []


def test_unshare_all_and_share_net():
    spec = doc("--unshare-all", "--share-net", "true")["spec"]
    ns = spec["namespaces"]
    assert (ns["pid"], ns["ipc"], ns["uts"], ns["net"], ns["cgroup"]) == (True, True, True, False, True)
    assert spec["vb"]["user_try"] is True


def test_perms_and_size_apply_to_the_next_operation_only():
    fs = doc("--perms", "0700", "--size", "1024", "--tmpfs", "/a", "--tmpfs", "/b", "true")["spec"]["filesystem"]
    assert fs[0] == {"type": "tmpfs", "target": "/a", "size": 1024, "mode": 0o700, "parent_mode": 0o700}
    assert fs[1] == {"type": "tmpfs", "target": "/b", "size": None, "mode": 0o755, "parent_mode": 0o755}


def test_default_modes_of_created_files_match_bubblewrap():
    fs = doc("--dir", "/d", "--file", "5", "/f", "--bind-data", "6", "/g", "true")["spec"]["filesystem"]
    assert [e["mode"] for e in fs] == [0o755, 0o666, 0o600]
    assert fs[1]["fd"] == 5 and fs[2]["readonly"] is False


@pytest.mark.parametrize("args, message", [
    (["--perms", "0700", "--bind", "/a", "/b", "true"], "--perms must be followed by an option that creates a file"),
    (["--size", "10", "--dir", "/a", "true"], "--size must be followed by --tmpfs"),
    (["--bogus", "true"], "Unknown option --bogus"),
    (["-x"], "Unknown option -x"),
    (["--bind", "/a"], "--bind takes two arguments"),
    (["--overlay", "a", "b"], "--overlay takes three arguments"),
    (["--uid", "5", "true"], "Specifying --uid requires --unshare-user or --userns"),
    (["--hostname", "h", "true"], "Specifying --hostname requires --unshare-uts"),
    (["--seccomp", "3", "--add-seccomp-fd", "4", "true"], "--add-seccomp-fd cannot be combined with --seccomp"),
    (["--add-seccomp-fd", "3", "--seccomp", "4", "true"], "--seccomp cannot be combined with --add-seccomp-fd"),
    (["--perms", "0700", "--perms", "0700", "--dir", "/x", "true"], "--perms given twice for the same action"),
    (["--size", "1", "--size", "1", "--tmpfs", "/x", "true"], "--size given twice for the same action"),
    (["--size", "0", "--tmpfs", "/x", "true"], "--size takes a non-zero number of bytes"),
    (["--size", "12x", "--tmpfs", "/x", "true"], "--size takes a non-zero number of bytes"),
    (["--size", " 1", "--tmpfs", "/x", "true"], "--size takes a non-zero number of bytes"),
    (["--size", "18446744073709551616", "--tmpfs", "/x", "true"], "--size takes a non-zero number of bytes"),
    (["--size", "9223372036854775809", "--tmpfs", "/x", "true"], "--size (for tmpfs) is limited to"),
    (["--tmp-overlay", "/x", "true"], "--tmp-overlay requires at least one --overlay-src"),
    (["--overlay-src", "/a", "true"], "--overlay-src must be followed by"),
    (["--cap-add", "CAP_BOGUS", "true"], "unknown cap: CAP_BOGUS"),
    (["--chmod", "999", "/x", "true"], "--chmod takes an octal argument <= 07777"),
    (["--perms", "999", "--dir", "/x", "true"], "--perms takes an octal argument <= 07777"),
    (["--perms", "0o7", "--dir", "/x", "true"], "--perms takes an octal argument <= 07777"),
    (["--perms", "-1", "--dir", "/x", "true"], "--perms takes an octal argument <= 07777"),
    (["--perms", "", "--dir", "/x", "true"], "--perms takes an octal argument <= 07777"),
    (["--chmod", "1_0", "/x", "true"], "--chmod takes an octal argument <= 07777"),
    (["--ro-bind", "/", "/"], "No command specified"),
    (["--userns2", "3", "true"], "--userns2 requires --userns"),
])
def test_bubblewrap_usage_errors(args, message):
    with pytest.raises(VbUsageError, match=None) as info:
        parse(args, uid=0, gid=0)
    assert message in str(info.value)


def test_help_is_requested():
    with pytest.raises(HelpRequested):
        parse(["--help"])


def test_overlay_sources_stack_bottom_first_and_become_kernel_order():
    fs = doc("--overlay-src", "/bottom", "--overlay-src", "/top", "--tmp-overlay", "/x", "true")["spec"]["filesystem"]
    assert fs == [{"type": "tmp-overlay", "lower": ["/top", "/bottom"], "target": "/x", "userxattr": True,
                   "parent_mode": 0o700}]


def test_size_reads_like_strtoull_and_parents_get_bubblewraps_modes():
    fs = doc("--size", "0x10", "--tmpfs", "/a", "--size", "010", "--tmpfs", "/b",
             "--perms", "0750", "--dir", "/c/d", "--perms", "0604", "--dir", "/e/f",
             "--bind", "/", "/g/h", "--file", "5", "/i/j", "true")["spec"]["filesystem"]
    assert [e.get("size") for e in fs[:2]] == [16, 8]
    assert [e["parent_mode"] for e in fs] == [0o755, 0o755, 0o750, 0o705, 0o700, 0o755]
    assert fs[2]["keep_mode"] is True


def test_env_operations_apply_in_order():
    proc = doc("--setenv", "A", "1", "--unsetenv", "B", "--clearenv", "--setenv", "C", "3",
               "--unsetenv", "D", "true")["spec"]["process"]
    assert proc["clear_env"] is True
    assert proc["env"] == {"C": "3"}
    assert proc["unset_env"] == ["D"]


def test_capabilities_for_root_keep_all_then_apply_drops_in_order():
    caps = doc("--cap-drop", "ALL", "--cap-add", "cap_net_admin", "true")["spec"]["security"]["capabilities"]
    assert caps == {"drop": ["ALL"], "add": ["NET_ADMIN"]}
    from vbdecl.model.names import CAPABILITIES
    from vbdecl.vb.parse import _caller_caps

    mine = _caller_caps(CAPABILITIES)   # root keeps the caller's permitted set, as bwrap does
    expected = {"drop": [], "add": ["ALL"]} if mine == set(CAPABILITIES) else \
        {"drop": ["ALL"], "add": sorted(mine, key=lambda n: CAPABILITIES[n])}
    assert doc("true")["spec"]["security"]["capabilities"] == expected
    caps = doc("--cap-drop", "CAP_SYS_ADMIN", "true")["spec"]["security"]["capabilities"]
    assert "SYS_ADMIN" not in caps["add"] and "CHOWN" in caps["add"]


def _args_fd(data: bytes) -> str:
    fd = os.memfd_create("args")        # parse reads it to the end and closes it
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return str(fd)


def test_args_fd_is_read_in_place():
    o = parse(["--dir", "/a", "--args", _args_fd(b"--unshare-pid\0--dir\0/x\0"), "--", "true"], uid=0, gid=0)
    assert o.unshare["pid"] is True and [e["target"] for e in o.filesystem] == ["/a", "/x"]
    assert o.command == ["true"]
    # as bubblewrap: what follows the options in the data is not the command
    o = parse(["--args", _args_fd(b"--unshare-ipc\0ignored\0"), "true"], uid=0, gid=0)
    assert o.unshare["ipc"] is True and o.command == ["true"]
    # --perms at the end of the data: bubblewrap checks it after the --args option
    with pytest.raises(VbUsageError, match=r"^--perms must be followed by an option that creates a file$"):
        parse(["--args", _args_fd(b"--perms\0" b"0700\0"), "--dir", "/d", "true"], uid=0, gid=0)


# bubblewrap 0.11's words (bubblewrap.c), where they differ from the usual ones
@pytest.mark.parametrize("args, message", [
    (["--argv0", "a", "--argv0", "b", "true"], "--argv0 used multiple times"),
    (["--argv0"], "--argv0 takes one argument"),
    (["--chdir"], "--chdir takes one argument"),
    (["--remount-ro"], "--remount-ro takes one argument"),
    (["--ro-bind-fd", "3"], "--bind-fd takes two arguments"),
    (["--bind-fd", "3"], "--bind-fd takes two arguments"),
    (["--overlay-src"], "--overlay-src must be followed by another --overlay-src or one of --overlay, "
                        "--tmp-overlay, or --ro-overlay"),
    (["--overlay-src", "/a", "--ro-overlay", "/x", "true"], "--ro-overlay requires at least two --overlay-src"),
    (["--ro-overlay", "/x", "true"], "--ro-overlay requires at least two --overlay-src"),
    (["--overlay", "/u", "/w", "/x", "true"], "--overlay requires at least one --overlay-src"),
    (["--cap-add", "CAP_NET_RAWX", "true"], "unknown cap: CAP_NET_RAWX"),
    (["--cap-add", "NET_RAW", "true"], "unknown cap: NET_RAW"),      # libcap wants the prefix
    (["--cap-drop", "net_raw", "true"], "unknown cap: net_raw"),
    (["--cap-drop", "64", "true"], "unknown cap: 64"),
    (["--cap-drop", " 1", "true"], "unknown cap:  1"),
    (["--cap-add", "\u00b9", "true"], "unknown cap: \u00b9"),     # (a fuzz test: a traceback)
    (["--size", "\u0663", "--tmpfs", "/x", "true"], "--size takes a non-zero number of bytes"),
    (["--args", "99", "true"], "Can't read --args data: Bad file descriptor"),
    (["--args", "3x", "true"], "Invalid fd: 3x"),
    (["--uid", "1_0", "true"], "Invalid uid: 1_0"),
    (["--uid", "1 ", "true"], "Invalid uid: 1 "),
    (["--exec-label", "x", "--bogus"], "labeling not supported on this system"),
    (["--perms", "0700", "--uid", "x", "true"], "Invalid uid: x"),     # the option's own check first
    (["--dir"] * 9001, "Exceeded maximum number of arguments 9000"),
])
def test_bubblewrap_0_11_texts(args, message):
    with pytest.raises(VbUsageError) as info:
        parse(args, uid=0, gid=0)
    assert str(info.value) == message


def test_args_in_an_arguments_file_and_too_many_arguments():
    with pytest.raises(VbUsageError, match=r"^--args not supported in arguments file$"):
        parse(["--args", _args_fd(b"--args\0" b"5\0"), "true"], uid=0, gid=0)
    with pytest.raises(VbUsageError, match=r"^Exceeded maximum number of arguments 9000$"):
        parse(["--args", _args_fd(b"--unshare-pid\0" * 8998), "true"], uid=0, gid=0)


def test_options_given_again_warn_that_only_the_last_takes_effect():
    again = ["--chdir", "/a", "--hostname", "h", "--sync-fd", "3", "--block-fd", "3", "--info-fd", "3",
             "--json-status-fd", "3", "--seccomp", "3", "--userns", "3", "--userns2", "3", "--pidns", "3",
             "--uid", "0", "--gid", "0", "--userns-block-fd", "3"]
    with pytest.raises(VbUsageError, match="--userns-block-fd requires --unshare-user") as info:
        parse([*again, *again, "--unshare-uts", "true"], uid=0, gid=0)
    opts = again[::2]
    assert info.value.warnings == [  # type: ignore[attr-defined]
        f"Only the last {opt} option will take effect" for opt in opts]
    o = parse(["--chdir", "/a", "--chdir", "/b", "true"], uid=0, gid=0)
    assert o.chdir == "/b" and o.warnings == ["Only the last --chdir option will take effect"]
    assert parse(["--argv0", "a", "--hostname", "h", "--unshare-uts", "true"], uid=0, gid=0).warnings == []
    # those before an error are kept for it
    with pytest.raises(VbUsageError) as info:
        parse(["--chdir", "/a", "--chdir", "/b", "--bogus"], uid=0, gid=0)
    assert info.value.warnings == ["Only the last --chdir option will take effect"]  # type: ignore[attr-defined]


def test_capability_arguments_as_libcap_reads_them():
    from vbdecl.vb.parse import ALL_CAPS

    def bits(value: str) -> int:
        return parse(["--cap-add", value, "true"], uid=0, gid=0).cap_ops[0][1]

    assert bits("cap_net_raw") == bits("CAP_NET_RAW") == bits("Cap_Net_Raw") == bits("13") == 1 << 13
    with pytest.raises(VbUsageError, match="unknown cap: NET_RAW"):
        bits("NET_RAW")                     # libcap wants the prefix, and so does bwrap
    assert bits("0x1") == bits("01") == 1 << 1 and bits("013") == 1 << 11 and bits("13x") == 1 << 13
    assert bits("63") == 1 << 63 and bits("all") == bits("ALL") == ALL_CAPS
    # (what follows a name's letters and underscores is ignored too: bwrap 0.8 grants
    # CAP_NET_RAW alone for "cap_net_raw,cap_kill" and "cap_net_raw=ep"; a review)
    assert bits("cap_net_raw,cap_kill") == bits("cap_net_raw=ep") == bits("CAP_NET_RAW9") == 1 << 13


def test_command_starts_at_first_non_option():
    o = parse(["--unshare-pid", "sh", "--unshare-net"])
    assert o.command == ["sh", "--unshare-net"]
    assert o.unshare["net"] is False


def test_roundtrip_to_bwrap_arguments_parses_back_to_the_same_spec():
    args = ["--unshare-pid", "--unshare-ipc", "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin",
            "--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp", "--chdir", "/tmp",
            "--setenv", "X", "1", "--die-with-parent", "--cap-drop", "ALL", "--", "sh", "-c", "echo hi"]
    first = doc(*args)["spec"]
    again = doc(*manifest_to_bwrap(first))["spec"]
    first.pop("vb"), again.pop("vb")
    assert again == first


@pytest.mark.parametrize(("security", "user", "kept"), [
    ("{seccomp: 'off'}", 0, "default"),                                     # absent: the default set
    ("{seccomp: 'off', capabilities: {drop: [CHOWN]}}", 0, "default-CHOWN"),
    ("{seccomp: 'off', capabilities: {drop: [ALL], add: [NET_ADMIN]}}", 0, "NET_ADMIN"),
    ("{seccomp: 'off'}", 1000, ""),                                         # bubblewrap's default too
])
def test_to_bwrap_keeps_exactly_the_manifests_capabilities(tmp_path, security, user, kept):
    from vbdecl.model import load_normalized
    from vbdecl.model.names import DEFAULT_CAPABILITIES

    path = tmp_path / "m.yaml"
    # bubblewrap runs a command as another uid only in a user namespace
    userns = ("  namespaces: {user: true}\n  idmap: {uid: [{inside: 1000, outside: 1000, count: 1}], "
              "gid: [{inside: 0, outside: 0, count: 1}]}\n") if user else ""
    path.write_text("apiVersion: vbdecl/v1\nkind: Environment\nmetadata: {name: caps}\nspec:\n"
                    f"{userns}  process: {{command: [/bin/true], user: {user}}}\n  security: {security}\n")
    argv = manifest_to_bwrap(load_normalized(str(path))[0]["spec"], caller=(1000, 0))   # (who it maps)
    added = {argv[i + 1] for i, a in enumerate(argv) if a == "--cap-add"}
    if kept.startswith("default"):
        want = {f"CAP_{n}" for n in DEFAULT_CAPABILITIES} - {f"CAP_{n}" for n in kept.split("-")[1:]}
    else:
        want = {f"CAP_{n}" for n in kept.split()}
    assert added == want
    assert ("--cap-drop" in argv) == bool(want)


def test_pidns_with_unshare_pid_is_the_parent_of_a_nested_pid_namespace():
    assert doc("--pidns", "5", "true")["spec"]["namespaces"]["pid"] == {"join": "/proc/self/fd/5"}
    spec = doc("--unshare-pid", "--pidns", "5", "--proc", "/proc", "true")["spec"]
    assert spec["namespaces"]["pid"] == {"join": "/proc/self/fd/5", "nested": True}
    assert "host" not in spec["filesystem"][0]     # a fresh proc of the nested namespace

    from vbdecl.runtime import spawn

    cfg = spawn._config(spec, dict(spec["namespaces"]), "vb-00000000", None)
    assert (cfg.pid_new, cfg.pid_nested, cfg.pid_join) == (True, True, "/proc/self/fd/5")
    assert ("pid", "/proc/self/fd/5") in cfg.joins
    assert not cfg.new_flags & 0x20000000          # CLONE_NEWPID: unshared after the join, not before
    assert spawn.direct_init(cfg) is False          # never the direct-init path


def test_nested_pid_namespace_in_the_manifest_model(tmp_path):
    from vbdecl.model import load_normalized
    from vbdecl.vb.manifest import document_to_manifest, dump_yaml

    manifest = document_to_manifest(doc("--unshare-pid", "--pidns", "5", "true"))
    assert manifest["spec"]["namespaces"]["pid"] == {"join": "/proc/self/fd/5", "nested": True}
    text = dump_yaml(manifest)
    path = tmp_path / "m.yaml"

    def load(text: str) -> dict:
        path.write_text(text)
        [normalized] = load_normalized(path)
        return normalized["spec"]["namespaces"]

    assert load(text)["pid"] == {"join": "/proc/self/fd/5", "nested": True}
    plain = text.replace("      nested: true\n", "")
    assert plain != text
    assert load(plain)["pid"] == {"join": "/proc/self/fd/5"}     # plain joins normalize as before
    bad = text.replace("    pid:", "    net:", 1).replace("    net: false\n", "    pid: true\n", 1)
    with pytest.raises(Exception, match="only a pid namespace can be nested"):
        load(bad)


def test_a_non_root_caller_implies_unshare_user_before_the_id_rules():
    # bubblewrap (not setuid) run by a non-root user: --unshare-user is implied, so
    # --uid/--gid need nothing more; the rules about user namespace options come first.
    for opt in ("--uid", "--gid"):
        o = parse([opt, "5", "id"], uid=1000, gid=1000)
        assert o.unshare["user"] is True
    spec = doc("--uid", "5", "--gid", "6", "id", uid=1000)["spec"]
    assert spec["namespaces"]["user"] is True
    assert spec["idmap"]["uid"] == [{"inside": 5, "outside": 1000, "count": 1}]
    assert spec["process"]["user"] == 5 and spec["process"]["group"] == 6
    with pytest.raises(VbUsageError, match="--disable-userns requires --unshare-user"):
        parse(["--disable-userns", "true"], uid=1000, gid=1000)
    with pytest.raises(VbUsageError, match="--uid requires --unshare-user or --userns"):
        parse(["--uid", "5", "id"], uid=0, gid=0)
    # only a different id needs a user namespace
    assert parse(["--uid", "0", "--gid", "0", "id"], uid=0, gid=0).uid == 0
    # with --userns nothing is implied
    assert parse(["--userns", "3", "--uid", "5", "id"], uid=1000, gid=1000).unshare["user"] is False


@pytest.mark.parametrize("args, message", [
    (["--as-pid-1", "true"], "Specifying --as-pid-1 requires --unshare-pid"),
    (["--pidns", "3", "--as-pid-1", "true"], "Specifying --as-pid-1 requires --unshare-pid"),
    (["--unshare-pid", "--as-pid-1", "--lock-file", "/x", "true"],
     "Specifying --as-pid-1 and --lock-file is not permitted"),
    (["--userns", "3", "--unshare-user-try", "true"], "--userns not compatible --unshare-user-try"),
    (["--unshare-all", "--disable-userns", "true"], "--disable-userns requires --unshare-user"),
    (["--userns-block-fd", "3", "true"], "--userns-block-fd requires --unshare-user"),
    (["--unshare-user", "--userns-block-fd", "3", "true"], "--userns-block-fd requires --info-fd"),
])
def test_more_bubblewrap_rules(args, message):
    with pytest.raises(VbUsageError) as info:
        parse(args, uid=0, gid=0)
    assert str(info.value) == message
    assert doc("--unshare-pid", "--as-pid-1", "true")["spec"]["process"]["init"] is False


FULL = (1 << 41) - 1
NET_RAW, CHOWN, SYS_RESOURCE = 1 << 13, 1 << 0, 1 << 24
ROOT = {"CapPrm": FULL & ~SYS_RESOURCE, "CapEff": FULL & ~SYS_RESOURCE, "CapBnd": FULL & ~SYS_RESOURCE,
        "CapInh": 0, "CapAmb": 0}


@pytest.mark.parametrize(("args", "userns", "expected"), [
    # root without a user namespace: no capset without cap options, the bounding set stays
    ([], False, (ROOT["CapBnd"], ROOT["CapPrm"], 0, 0)),
    (["--cap-drop", "ALL", "--cap-add", "CAP_NET_RAW"], False, (ROOT["CapBnd"], NET_RAW, NET_RAW, NET_RAW)),
    # asking for one not held: capset fails (ignored), nothing changes, nothing ambient
    (["--cap-drop", "ALL", "--cap-add", "CAP_SYS_RESOURCE", "--cap-add", "CAP_CHOWN"], False,
     (ROOT["CapBnd"], ROOT["CapPrm"], 0, 0)),
    # in a user namespace: every capability, the bounding set cut to the requested ones
    ([], True, (ROOT["CapEff"], FULL, 0, 0)),
    (["--cap-drop", "ALL", "--cap-add", "CAP_NET_RAW"], True, (NET_RAW, NET_RAW, NET_RAW, NET_RAW)),
    (["--cap-add", "CAP_NET_RAW"], True, (ROOT["CapEff"],) * 4),
    (["--cap-add", "ALL"], True, (FULL,) * 4),
    (["--cap-drop", "CAP_CHOWN"], True, (ROOT["CapEff"] & ~CHOWN,) * 4),
])
def test_bubblewraps_capability_sets_for_root(args, userns, expected):
    from vbdecl.vb.parse import _requested_caps, bwrap_capabilities

    o = parse([*args, "true"], uid=0, gid=0)
    sets = bwrap_capabilities(_requested_caps(o, 0, ROOT, FULL), bool(o.cap_ops), userns, ROOT, FULL)
    assert (sets["bounding"], sets["permitted"], sets["inheritable"], sets["ambient"]) == expected


def test_bubblewraps_capability_sets_for_a_plain_user_and_what_the_command_holds():
    from vbdecl.vb.parse import _requested_caps, bwrap_capabilities, payload_capabilities

    user = {"CapPrm": 0, "CapEff": 0, "CapBnd": FULL, "CapInh": 0, "CapAmb": 0}
    o = parse(["--cap-add", "CAP_NET_RAW", "true"], uid=1000, gid=1000)
    sets = bwrap_capabilities(_requested_caps(o, 1000, user, FULL), True, True, user, FULL)
    assert sets == {"bounding": NET_RAW, "permitted": NET_RAW, "inheritable": NET_RAW, "ambient": NET_RAW}
    assert payload_capabilities(sets, root=False) == payload_capabilities(sets, root=True) == NET_RAW
    o = parse(["true"], uid=1000, gid=1000)
    assert set(bwrap_capabilities(_requested_caps(o, 1000, user, FULL), True, True, user, FULL).values()) == {0}
    # root in a user namespace as uid 1000 without cap options: nothing ambient, so nothing kept
    root_userns = {"bounding": ROOT["CapEff"], "permitted": FULL, "inheritable": 0, "ambient": 0}
    assert payload_capabilities(root_userns, root=False) == 0
    assert payload_capabilities(root_userns, root=True) == ROOT["CapEff"]


def test_perms_read_like_strtoul_base_8():
    fs = doc("--perms", " +0755", "--dir", "/a", "--perms", "-0", "--dir", "/b", "--chmod", "07777", "/a",
             "true")["spec"]["filesystem"]
    assert [e["mode"] for e in fs] == [0o755, 0, 0o7777]


def test_to_bwrap_by_a_non_root_caller_keeps_the_default_set_explicitly(tmp_path, monkeypatch):
    """bubblewrap run by a plain user keeps no capabilities for uid 0 without --cap-add."""
    import vbdecl.vb.manifest as vbm
    from vbdecl.model import load_normalized

    path = tmp_path / "m.yaml"
    path.write_text("apiVersion: vbdecl/v1\nkind: Environment\nmetadata: {name: caps}\nspec:\n"
                    "  process: {command: [/bin/true]}\n  security: {seccomp: 'off'}\n")
    spec = load_normalized(str(path))[0]["spec"]
    assert "--cap-drop" in manifest_to_bwrap(spec)
    monkeypatch.setattr(vbm.os, "geteuid", lambda: 1000)
    monkeypatch.setattr("vbdecl.vb.parse._caller_caps", lambda known: set())
    argv = manifest_to_bwrap(spec)
    assert "--cap-drop" in argv and "CAP_CHOWN" in argv


def test_version_as_bwrap_is_bubblewraps_line_and_as_vb_names_vbdecl(capsys):
    """Scripts read field 2 of `bwrap --version` (bubblewrap prints PACKAGE_STRING)."""
    from vbdecl import __version__
    from vbdecl.cli.vb import BWRAP_COMPAT, main

    for args in (["--version"], ["--ro-bind", "/", "/", "--version", "true"]):
        assert main(["/usr/local/bin/bwrap", *args]) == 0
        assert capsys.readouterr().out == f"bubblewrap {BWRAP_COMPAT}\n"
    assert main(["vb", "--version"]) == 0
    assert capsys.readouterr().out == f"vb (vbdecl {__version__}, bubblewrap {BWRAP_COMPAT} command line)\n"


@pytest.mark.parametrize("option", ["--seccomp", "--add-seccomp-fd"])
def test_print_manifest_cannot_hide_that_it_drops_the_seccomp_filter(option, capsys):
    from vbdecl.vb.manifest import render

    text = render(doc(option, "5", "true"))
    head = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    assert f"{option} 5" in head and "WITHOUT" in head and "seccomp: off" in text
    err = capsys.readouterr().err
    assert err.startswith("vb: warning: ") and "WITHOUT" in err and f"{option} 5" in err


def test_try_options_are_decided_as_bubblewrap_decides_and_the_comments_say_so(monkeypatch):
    """--unshare-user-try/--unshare-cgroup-try: bubblewrap looks before it creates the
    namespaces; the manifest states the outcome, and its comment tells it truly."""
    import vbdecl.vb.parse as vbp
    from vbdecl.vb.manifest import document_to_manifest, vb_only

    monkeypatch.setattr(vbp, "_userns_disabled", lambda: False)
    d = doc("--unshare-all", "--uid", "1000", "true")
    assert document_to_manifest(d)["spec"]["namespaces"]["user"] is True
    notes = "\n".join(vb_only(d))
    assert "namespaces.user: true" in notes and "does not ask" not in notes

    monkeypatch.setattr(vbp, "_userns_disabled", lambda: True)
    with pytest.raises(VbUsageError, match=r"^Specifying --uid requires --unshare-user or --userns$"):
        parse(["--unshare-all", "--uid", "1000", "true"], uid=0, gid=0)
    d = doc("--unshare-all", "true")
    assert d["spec"]["namespaces"]["user"] is False
    notes = "\n".join(vb_only(d))
    assert "namespaces.user: false" in notes and "goes on without one" in notes
    # --unshare-user itself is never a try
    assert doc("--unshare-user", "--unshare-user-try", "true")["spec"]["namespaces"]["user"] is True
    assert not any("try" in n for n in vb_only(doc("--unshare-user", "--unshare-user-try", "true")))


def test_the_comments_name_a_setuid_dir_and_a_new_session_under_vb_s_pid_1():
    """A conversion review: `vbdecl run` of the printed manifest gave 4755 where vb's mkdir
    drops the setuid bit, and the command a session of its own where vb's is pid 1's."""
    from vbdecl.vb.manifest import vb_only

    notes = "\n".join(vb_only(doc("--tmpfs", "/t", "--perms", "04755", "--dir", "/t/s", "--unshare-pid",
                                   "--new-session", "true")))
    assert "--dir /t/s: vb makes a new directory with mkdir, which drops the setuid bit" in notes
    assert "--new-session with --unshare-pid: vb's pid 1 starts the session" in notes
    quiet = "\n".join(vb_only(doc("--tmpfs", "/t", "--perms", "0755", "--dir", "/t/s", "--unshare-pid",
                                   "--as-pid-1", "--new-session", "true")))
    assert "setuid" not in quiet and "--new-session" not in quiet


@pytest.mark.parametrize(("args", "uid", "covered", "as_root"), [
    (["--unshare-pid", "--proc", "/proc"], 0, True, False),
    (["--unshare-user", "--unshare-pid", "--proc", "/proc"], 0, True, False),
    (["--unshare-user", "--uid", "5", "--unshare-pid", "--proc", "/proc"], 0, False, False),
    (["--unshare-user", "--uid", "5", "--unshare-pid", "--dev", "/dev", "--proc", "/proc"], 0, True, True),
    (["--unshare-pid", "--dev", "/dev", "--proc", "/proc"], 1000, False, True),
])
def test_the_manifest_covers_proc_irq_and_bus_where_vb_does(args, uid, covered, as_root):
    """vb covers /proc/irq and /proc/bus when its setup may write them: a root caller
    setting up as root. bubblewrap sets up as uid 0 of a user namespace it creates when
    there is a --dev (cover_as_root), as the sandbox's uid otherwise."""
    from vbdecl.vb.manifest import document_to_manifest

    d = doc(*args, "true", uid=uid)
    targets = [e["target"] for e in document_to_manifest(d)["spec"]["filesystem"] if e["type"] == "remount-ro"]
    assert (targets == ["/proc/irq", "/proc/bus"]) is covered, targets
    proc = next(e for e in d["spec"]["filesystem"] if e["type"] == "proc")
    assert bool(proc.get("cover_as_root")) is as_root


@pytest.mark.parametrize(("args", "message"), [
    (["--unshare-pid", "--limit-pids", "0"], "--limit-pids must be 2 to 4194304 (the sandbox's pid 1 and"),
    (["--limit-pids", "99999999999"], "--limit-pids must be 1 to 4194304"),
    (["--limit-pids", "0"], "--limit-pids must be 1 to 4194304, not 0"),
    (["--unshare-pid", "--limit-pids", "1"], "the command both count), not 1"),    # (its fork: EAGAIN)
    (["--limit-cpu", "nan"], "--limit-cpu must be 0.01 to 4096 cores"),
    (["--limit-cpu", "-1"], "--limit-cpu must be 0.01 to 4096 cores"),
    (["--limit-memory", "0"], "--limit-memory must be above 0"),
])
def test_vb_limits_have_the_manifests_bounds(args, message):
    """A review: --limit-pids 0 and --limit-cpu -1 ran without a word, NaN gave a
    Python error, and too many pids failed in the kernel."""
    with pytest.raises(VbUsageError) as info:
        doc(*args, "true")
    assert message in str(info.value)


def test_one_pid_will_do_where_the_command_is_the_only_process():
    """A review of the floor of 2: without a pid namespace (no pid 1 of vb's), or with
    --as-pid-1, the command is alone in the count."""
    for args in (["--limit-pids", "1"], ["--unshare-pid", "--as-pid-1", "--limit-pids", "1"]):
        assert doc(*args, "true")["spec"]["limits"]["pids"] == 1


@pytest.mark.parametrize(("name", "message"), [
    ("br@10.88.0.5", "'@' is reserved for vbdecl's address claims"),
    ("br/0", "cannot contain '/'"),
    ("a-bridge-name-too-long", "the kernel allows 1 to 15"),
    ("", "the kernel allows 1 to 15"),
])
def test_vb_refuses_a_bridge_name_before_running(name, message):
    """A bridge name the model refuses is a usage error of vb's own, as the manifest's
    (it used to reach the network step, whose hint was about subnets); '@' would let
    a bridge be named like another environment's address claim."""
    with pytest.raises(VbUsageError, match="--net-bridge: ") as info:
        doc("--net-bridge", name, "true")
    assert message in str(info.value)


def test_to_bwrap_binds_the_hosts_resolv_conf_where_the_manifests_run_does(tmp_path):
    """A manifest without network.dns has the host's resolv.conf (MANIFEST.md), which
    bubblewrap binds only when told; `dns: []` (vb's own sandboxes) has none."""
    from vbdecl.model import load_normalized

    path = tmp_path / "m.yaml"
    for dns, bound in (("", True), ("\n  network: {dns: []}", False)):
        path.write_text("apiVersion: vbdecl/v1\nkind: Environment\nmetadata: {name: n}\nspec:\n"
                        f"  process: {{command: [/bin/true]}}\n  security: {{seccomp: 'off'}}{dns}\n")
        (d,) = load_normalized(path)
        args = manifest_to_bwrap(d["spec"])
        assert ("--ro-bind-try /etc/resolv.conf /etc/resolv.conf" in " ".join(args)) is bound, args


def test_print_manifest_quotes_the_words_yaml_1_1_reads_as_booleans():
    """A review checked `convert --from-bwrap`'s output against the schema with a YAML 1.1
    reader (PyYAML): its bare `seccomp: off` read as false."""
    from vbdecl.vb.manifest import dump_yaml, render

    assert '    seccomp: "off"\n' in render(doc("--ro-bind", "/usr", "/usr", "true"))
    assert dump_yaml({"a": ["on", "No", "y", "offx"], "b": True}) == 'a:\n- "on"\n- "No"\n- "y"\n- offx\nb: true\n'
    # (the session's review: keys too, and what YAML 1.1 reads as numbers: 1:30 is 90)
    assert dump_yaml({"NO": "1:30", "x": ["1_000", "0b1", ".inf", "~", "--flag", "/bin/sh"]}) == (
        '"NO": "1:30"\nx:\n- "1_000"\n- "0b1"\n- ".inf"\n- "~"\n- --flag\n- /bin/sh\n')
