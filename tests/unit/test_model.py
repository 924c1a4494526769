"""The manifest model: units, names, defaults, normalization, schema."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vbdecl.model import load_normalized, names
from vbdecl.model.load import load_text
from vbdecl.model.normalize import normalize
from vbdecl.model.units import (
    UnitError,
    bare_mode_error,
    format_size,
    parse_mode,
    parse_port,
    parse_size,
)

ROOT = Path(__file__).resolve().parent.parent.parent
HEAD = "apiVersion: vbdecl/v1\nkind: Environment\nmetadata: {name: t}\n"


@pytest.mark.parametrize(("text", "size"), [
    (0, 0), (512, 512), ("512", 512), ("1k", 1000), ("1Ki", 1024), ("64Mi", 64 << 20),
    ("64MiB", 64 << 20), ("1G", 10**9), ("2Gi", 2 << 30), ("1Ti", 1 << 40), ("1.5Gi", 3 << 29),
    (" 8 Mi ", 8 << 20), ("1M", 10**6), ("1T", 10**12),
])
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "Mi", "1K", "1KB", "1Xi", "-1", -1, "1.5", "ten", True, 1.5, "1e3"])
def test_parse_size_errors(text: object) -> None:
    with pytest.raises(UnitError) as err:
        parse_size(text)  # type: ignore[arg-type]
    assert err.value.hint


def test_format_size() -> None:
    assert [format_size(n) for n in (64 << 20, 1000, 3 << 30, 1024)] == ["64Mi", "1000", "3Gi", "1Ki"]


@pytest.mark.parametrize(("text", "mode"), [("755", 0o755), ("0755", 0o755), ("1777", 0o1777),
                                            ("0o700", 0o700), ("0", 0), ("4755", 0o4755)])
def test_parse_mode(text: str, mode: int) -> None:
    assert parse_mode(text) == mode


def test_parse_mode_refuses_bare_int_with_a_quoting_hint() -> None:
    with pytest.raises(UnitError) as err:
        parse_mode(755)  # type: ignore[arg-type]
    assert err.value.hint is not None and 'mode: "0755"' in err.value.hint
    for bad in ("0788", "17777", "u+x", "", "0x1ff"):
        with pytest.raises(UnitError):
            parse_mode(bad)


@pytest.mark.parametrize(("number", "suggested"), [
    (755, "0755"), (644, "0644"), (1777, "1777"), (0, "0000"),
    (493, "0755"),      # mode: 0o755 (YAML 1.2 octal) or 493: the number is the mode
    (999, "1747"), (4095, "7777"),
])
def test_bare_int_mode_hint_suggests_a_mode_that_parses(number: int, suggested: str) -> None:
    with pytest.raises(UnitError) as err:
        parse_mode(number)  # type: ignore[arg-type]
    hint = err.value.hint or ""
    assert f'mode: "{suggested}"' in hint
    assert parse_mode(suggested) == int(suggested, 8)    # the validator takes what the hint suggests


@pytest.mark.parametrize(("written", "suggested"), [("0o644", "0644"), ("0o1777", "1777"), ("0o755", "0755"),
                                                    ("0o0", "0000"), ("0644", "0644"), ("420", "0420")])
def test_bare_int_mode_hint_follows_how_the_number_was_written(written: str, suggested: str) -> None:
    """A review: mode: 0o644 (420 to YAML 1.2) got the hint "0420": from the number
    alone, 420 looks like the digits of a bare 0420."""
    from vbdecl.model.yamlsafe import resolve_plain

    err = bare_mode_error(resolve_plain(written), written)
    assert err.message == f"mode {written} is a number, not a quoted octal string"
    assert f'quote it: mode: "{suggested}"' in (err.hint or "")


@pytest.mark.parametrize("number", [8000, 4096, -1, 77777])
def test_bare_int_mode_out_of_any_range_gets_the_general_hint(number: int) -> None:
    with pytest.raises(UnitError) as err:
        parse_mode(number)  # type: ignore[arg-type]
    assert err.value.hint is not None and "quote it" not in err.value.hint


@pytest.mark.parametrize(("text", "want"), [
    ("8080:80", {"host": 8080, "container": 80, "protocol": "tcp", "host_ip": None}),
    ("8080:80/udp", {"host": 8080, "container": 80, "protocol": "udp", "host_ip": None}),
    ("53", {"host": 53, "container": 53, "protocol": "tcp", "host_ip": None}),
    ("127.0.0.1:8080:80/tcp", {"host": 8080, "container": 80, "protocol": "tcp", "host_ip": "127.0.0.1"}),
    ("[::1]:8080:80", {"host": 8080, "container": 80, "protocol": "tcp", "host_ip": "::1"}),
])
def test_parse_port(text: str, want: dict[str, object]) -> None:
    assert parse_port(text) == want


@pytest.mark.parametrize("text", ["0:80", "80:70000", "a:b", "1:2:3:4", "80/sctp", "x.y:1:2", "[::1]80:1"])
def test_parse_port_errors(text: str) -> None:
    with pytest.raises(UnitError):
        parse_port(text)


def test_names() -> None:
    assert names.CAPABILITIES["CHOWN"] == 0 and names.CAPABILITIES["CHECKPOINT_RESTORE"] == 40
    assert sorted(names.CAPABILITIES.values()) == list(range(41))
    for s in ("read", "openat2", "mount", "clone3", "landlock_create_ruleset", "open", "mseal"):
        assert s in names.SYSCALLS
    assert "not_a_syscall" not in names.SYSCALLS and len(names.SYSCALLS) > 380
    assert set(names.DEFAULT_DENY_GROUPS) <= set(names.SYSCALL_GROUPS)
    assert names.expand_syscalls(["@swap", "swapon", "read"]) == ["swapoff", "swapon", "read"]


def test_light_modules_do_not_import_pydantic() -> None:
    code = ("import sys, vbdecl.model, vbdecl.model.units, vbdecl.model.names; "
            "bad = [m for m in ('pydantic', 'yaml', 'ruamel', 'rich', 'pyroute2') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def _spec(body: str, base_dir: str = "/base") -> dict[str, object]:
    env = load_text(HEAD + body)[0]
    return normalize(env, base_dir=base_dir)["spec"]  # type: ignore[no-any-return]


def test_settings_that_need_a_namespace_turn_it_on_or_off_as_the_contract_says() -> None:
    """MANIFEST.md: `hostname` needs the uts namespace "(turned on when set)", network mode
    host "turns [net] off", and mount is "forced true when rootfs or filesystem is set":
    an explicit false (true for host mode) among them is turned so too, not an error
    (a contract review found the first two refused). Joining another namespace is not
    overridden: that stays an error."""
    ns = _spec("spec:\n  hostname: web\n  namespaces: {uts: false}\n")["namespaces"]
    assert ns["uts"] is True  # type: ignore[index]
    ns = _spec("spec:\n  namespaces: {net: true}\n  network: {mode: host}\n")["namespaces"]
    assert ns["net"] is False  # type: ignore[index]
    ns = _spec("spec:\n  namespaces: {mount: false}\n  filesystem: [{type: tmpfs, target: /tmp}]\n")["namespaces"]
    assert ns["mount"] is True  # type: ignore[index]
    for body, said in (("spec:\n  hostname: web\n  namespaces: {uts: {join: /proc/1/ns/uts}}\n", "joins another"),
                       ("spec:\n  namespaces: {net: {join: /proc/1/ns/net}}\n  network: {mode: host}\n",
                        "joins another")):
        with pytest.raises(Exception, match=said):
            _spec(body)


def test_defaults_are_locked_down() -> None:
    spec = _spec("")
    assert spec["namespaces"] == {"user": False, "pid": True, "mount": True, "uts": True, "ipc": True,
                                  "net": True, "cgroup": False}
    assert spec["network"]["mode"] == "isolated"  # type: ignore[index]
    assert spec["security"] == {"no_new_privs": True, "capabilities": None, "seccomp": "default",
                                "landlock": None, "disable_userns": False}
    assert spec["process"]["init"] is True and spec["process"]["command"] is None  # type: ignore[index]
    assert spec["status"] == {"lock_file": None, "events": None}
    assert spec["idmap"] is None and spec["rootfs"] is None and spec["filesystem"] == []


def test_normalized_shape_matches_plan_format() -> None:
    spec = _spec(
        "spec:\n"
        "  rootfs: ./root\n"
        "  hostname: web\n"
        "  namespaces: {user: true, mount: false, net: {join: /proc/1/ns/net}}\n"
        "  idmap: {uid: [{inside: 0, outside: 1000}]}\n"
        "  filesystem:\n"
        "    - {type: bind, source: ./data, target: /data//x/}\n"
        "    - {type: tmpfs, target: /tmp, size: 64Mi, mode: '1777'}\n"
        "    - {type: file, target: /etc/motd, content: hi}\n"
        "    - {type: overlay, target: /srv, lower: [lo], upper: /u/up, work: /u/wk}\n"
        "    - {type: symlink, target: /bin, points_to: usr/bin}\n"
        "  limits: {memory: 1Gi, cpu: 2, rlimits: {nofile: 1024, core: [0, unlimited]}}\n"
        "  process: {command: [sh], tty: false}\n"
        "  security:\n"
        "    capabilities: {drop: [all], add: [cap_net_bind_service, Sys_Admin]}\n"
        "    seccomp: {deny: ['@mount', ptrace], errno: 1}\n"
        "    landlock: {read: [/usr]}\n"
        "    disable_userns: true\n"
        "  status: {lock_file: run/lock}\n",
        base_dir="/m/dir")
    assert spec["rootfs"] == "/m/dir/root"
    ns = spec["namespaces"]
    assert ns["mount"] is True and ns["net"] == {"join": "/proc/1/ns/net"} and ns["uts"] is True  # type: ignore[index]
    assert spec["idmap"] == {"uid": [{"inside": 0, "outside": 1000, "count": 1}], "gid": []}
    fs = spec["filesystem"]
    assert fs == [  # type: ignore[comparison-overlap]
        {"type": "bind", "target": "/data/x", "source": "/m/dir/data", "optional": False},
        {"type": "tmpfs", "target": "/tmp", "size": 64 << 20, "mode": 0o1777},
        {"type": "file", "target": "/etc/motd", "content": "hi", "source": None, "mode": None},
        {"type": "overlay", "target": "/srv", "lower": ["/m/dir/lo"], "upper": "/u/up", "work": "/u/wk"},
        {"type": "symlink", "target": "/bin", "points_to": "usr/bin"},
    ]
    lim = spec["limits"]
    assert lim["memory"] == 1 << 30 and lim["cpu"] == 2.0  # type: ignore[index]
    assert lim["rlimits"] == {"nofile": [1024, 1024], "core": [0, -1]}  # type: ignore[index]
    sec = spec["security"]
    assert sec["capabilities"] == {"drop": ["ALL"], "add": ["NET_BIND_SERVICE", "SYS_ADMIN"]}  # type: ignore[index]
    assert sec["seccomp"] == {"deny": ["@mount", "ptrace"], "errno": "EPERM"}  # type: ignore[index]
    assert sec["landlock"] == {"read": ["/usr"], "write": [], "read_write": [], "execute": [],  # type: ignore[index]
                               "ports": {"bind": [], "connect": []}, "optional": False}
    assert spec["status"] == {"lock_file": "/m/dir/run/lock", "events": None}
    json.dumps(spec)  # plain data


def test_network_defaults_by_mode() -> None:
    bridge = _spec("spec:\n  network: {mode: bridge, subnet6: 'fd00:1::/64', ports: ['8080:80']}\n")["network"]
    assert bridge == {"mode": "bridge", "bridge": "vbdecl0", "subnet": "10.88.0.0/24",
                      "subnet6": "fd00:1::/64", "address": "auto", "address6": "auto", "nat": True,
                      "egress": "auto", "ports": [{"host": 8080, "container": 80, "protocol": "tcp",
                                                   "host_ip": None}],
                      "dns": None, "hosts": {}, "mtu": None}
    host = _spec("spec:\n  network: {mode: host}\n")
    assert host["namespaces"]["net"] is False  # type: ignore[index]
    assert host["network"]["bridge"] is None  # type: ignore[index]


def test_models_are_frozen() -> None:
    env = load_text(HEAD)[0]
    with pytest.raises(Exception, match="frozen"):
        env.spec.process.cwd = "/x"  # type: ignore[misc]


def test_load_normalized_of_the_shipped_manifests() -> None:
    for name in ("hello", "devshell", "service", "build"):
        path = ROOT / "manifests" / f"{name}.yaml"
        (doc,) = load_normalized(path)
        assert doc["name"] == name
        assert doc["source"] == {"path": str(path), "document": 0}
        assert (ROOT / "manifests" / f"{name}.yaml").read_text().startswith(
            "# yaml-language-server: $schema=../schema/vbdecl.schema.json")
    (hello,) = load_normalized(ROOT / "manifests" / "hello.yaml")
    assert hello["spec"]["process"]["command"][0] == "echo"
    (dev,) = load_normalized(ROOT / "manifests" / "devshell.yaml")
    assert {"type": "bind", "target": "/work", "source": str(ROOT), "optional": False} in dev["spec"]["filesystem"]


def test_schema_file_is_in_sync() -> None:
    from vbdecl.cli.cmd_schema import render

    on_disk = (ROOT / "schema" / "vbdecl.schema.json").read_text()
    assert on_disk == render(), "schema/vbdecl.schema.json is stale: run `make schema`"
    schema = json.loads(on_disk)
    assert schema["additionalProperties"] is False
    assert set(schema["$defs"]["Spec"]["properties"]) == {
        "rootfs", "hostname", "namespaces", "idmap", "filesystem", "limits", "network", "process",
        "security", "status"}


def test_the_schema_lets_only_pid_be_nested_as_the_validator_does() -> None:
    """A contract audit: the schema allowed {join, nested} under every namespace, and
    validate refuses nested but for pid: editors accepted what vbdecl refuses."""
    schema = json.loads((ROOT / "schema" / "vbdecl.schema.json").read_text())
    props = schema["$defs"]["Namespaces"]["properties"]
    joins = {key: prop["oneOf"][1] for key, prop in props.items()}
    assert joins.pop("pid") == {"$ref": "#/$defs/NamespaceJoin"}
    assert "nested" in schema["$defs"]["NamespaceJoin"]["properties"]
    assert set(joins) == {"user", "mount", "uts", "ipc", "net", "cgroup"}
    for key, join in joins.items():
        assert join["additionalProperties"] is False and join["properties"]["nested"]["const"] is False, key
    load_text(HEAD + "spec:\n  namespaces: {ipc: {join: /proc/1/ns/ipc, nested: false}}\n", "n.yaml")  # (valid)
    from vbdecl.errors import ManifestError

    with pytest.raises(ManifestError, match="only a pid namespace can be nested"):
        load_text(HEAD + "spec:\n  namespaces: {net: {join: /proc/1/ns/net, nested: true}}\n", "n.yaml")


def test_every_duplicate_published_port_is_reported() -> None:
    from vbdecl.errors import ManifestError

    text = HEAD + ("spec:\n  network:\n    mode: bridge\n    ports:\n"
                   "      - '8080:80'\n      - '8080:81'\n      - {host: 8080, container: 82}\n"
                   "      - '9090:53/udp'\n      - {host: 9090, container: 53, protocol: udp, host_ip: 127.0.0.1}\n"
                   "      - '9090:80/tcp'\n")
    with pytest.raises(ManifestError) as err:
        load_text(text, "ports.yaml")
    problems = [(p.where, p.message) for p in err.value.problems]
    # one problem on each repeated item, each naming every item that publishes the port;
    # the same port on one host_ip and on all addresses is one map key on the host too
    assert problems == [
        ("ports.yaml:9:9", "port 8080/tcp is published 3 times (network.ports[0], [1] and [2])"),
        ("ports.yaml:10:9", "port 8080/tcp is published 3 times (network.ports[0], [1] and [2])"),
        ("ports.yaml:12:9", "port 9090/udp is published twice (network.ports[3] and [4])"),
    ]


def test_landlock_without_no_new_privs_is_valid() -> None:
    # The runtime holds CAP_SYS_ADMIN until the filters are loaded (docs/security.md);
    # tests/integration/test_landlock.py runs it.
    spec = _spec("spec:\n  security: {no_new_privs: false, landlock: {read: [/usr]}}\n")
    assert spec["security"]["no_new_privs"] is False  # type: ignore[index]
    assert spec["security"]["landlock"]["read"] == ["/usr"]  # type: ignore[index]


@pytest.mark.parametrize("pid", ["true", "{join: /proc/1/ns/pid, nested: true}"])
def test_proc_in_a_new_user_namespace_with_a_pid_namespace_it_owns_is_valid(pid: str) -> None:
    spec = _spec(f"spec:\n  namespaces: {{user: true, pid: {pid}}}\n  filesystem:\n"
                 "    - {type: proc, target: /proc}\n")
    assert spec["filesystem"][0]["type"] == "proc"  # type: ignore[index]


@pytest.mark.parametrize(("name", "values"), [
    ("Size", ["1", "1ki", "1Ki", "1KiB", "1k", "1K", "1kB", "1KB", "1mi", "1Mi", "1MB", "1Mb", "1.5G", "1Tb",
              " 2 Gi ", "1 b", "1x", "-1", "1e3", ""]),
    ("Target", ["/a", "/a/..", "/a/../b", "/..", "/a..b", "/a/b..", "/.../x", "a", "/a\0b", "/"]),
    ("Rlimit", ["unlimited", "Unlimited", "infinity", "INFINITY", "inf", "none"]),
])
def test_the_schemas_patterns_accept_what_the_validator_does(name: str, values: list[str]) -> None:
    """Editors check manifests against the JSON Schema: its string patterns must say
    yes and no where vbdecl does (the schema let "1ki" through and refused "infinity")."""
    import re

    from pydantic import TypeAdapter, ValidationError

    from vbdecl.model import manifest

    kind = getattr(manifest, name)
    adapter = TypeAdapter(kind)
    schema = adapter.json_schema()
    patterns = [s["pattern"] for s in [schema, *schema.get("anyOf", [])] if "pattern" in s]
    assert patterns
    for value in values:
        try:
            adapter.validate_python(value)
            valid = True
        except ValidationError:
            valid = False
        assert any(re.search(p, value) for p in patterns) == valid, value


def test_overlays_take_userxattr_and_keep_their_plans_without_it(tmp_path: Path) -> None:
    """`userxattr: true` (vbdecl's addition, what vb --print-manifest writes) reaches the
    normalized entry; left out, the entry is as before, so existing plans do not change."""
    m = tmp_path / "o.yaml"
    m.write_text("apiVersion: vbdecl/v1\nkind: Environment\nmetadata: {name: o}\nspec:\n  filesystem:\n"
                 "    - {type: tmp-overlay, target: /a, lower: [/usr], userxattr: true}\n"
                 "    - {type: ro-overlay, target: /b, lower: [/usr, /etc]}\n"
                 "    - {type: overlay, target: /c, lower: [/usr], upper: /u, work: /w, userxattr: true}\n")
    fs = load_normalized(str(m))[0]["spec"]["filesystem"]
    assert [e.get("userxattr") for e in fs] == [True, None, True]
    assert "userxattr" not in fs[1]


def test_paths_the_kernel_would_refuse_are_said_at_their_keys() -> None:
    """A review's `file` entry at a 5,000-byte target validated, then failed at run time
    with ENAMETOOLONG; a name over 255 bytes too."""
    from vbdecl.errors import ManifestError

    long_path = "/" + "/".join(["a" * 200] * 25)
    text = HEAD + ("spec:\n  filesystem:\n"
                   f"    - {{type: file, target: '{long_path}', content: x}}\n"
                   f"    - {{type: bind, source: '/{'b' * 256}', target: /b}}\n"
                   f"    - {{type: file, target: '/{'c' * 255}', content: x}}\n")
    with pytest.raises(ManifestError) as err:
        load_text(text, "long.yaml")
    problems = [(p.where, p.message) for p in err.value.problems]
    assert problems == [
        ("long.yaml:6:28", "target is 5025 bytes long: Linux takes paths of up to 4095"),
        ("long.yaml:7:28", "host path has a name of 256 bytes (bbbbbbbbbbbbbbbbbbbbbbbb...): Linux takes "
                           "names of up to 255"),
    ], problems


def test_every_broken_network_rule_is_reported_at_once() -> None:
    """A review fixed a network's address, and only then was told of a port it published
    three times: the rules stopped at the first broken one."""
    from vbdecl.errors import ManifestError

    text = HEAD + ("spec:\n  network:\n    mode: bridge\n    subnet: 10.231.3.0/24\n    address: 10.231.4.5\n"
                   "    subnet6: fd00:1::/64\n    address6: 'fd00:1::1'\n"
                   "    ports: ['8080:80', '8080:81']\n")
    with pytest.raises(ManifestError) as err:
        load_text(text, "net.yaml")
    assert [p.message for p in err.value.problems] == [
        "address 10.231.4.5 is outside the subnet 10.231.3.0/24",
        "address6 fd00:1::1 is the network or gateway address of fd00:1::/64",
        "port 8080/tcp is published twice (network.ports[0] and [1])",
    ]


@pytest.mark.parametrize(("name", "hint"), [("rva-\u00fcn\u00ef", "e.g. 'rva-uni'"), ("My_Web App", "e.g. 'my-web-app'"),
                                            ("--", None)])
def test_an_invalid_name_is_given_a_valid_one_to_take(name: str, hint: str | None) -> None:
    """A review's 'rva-ünï' was told to take 'rva--n'."""
    from vbdecl.errors import ManifestError

    with pytest.raises(ManifestError) as err:
        load_text(f"apiVersion: vbdecl/v1\nkind: Environment\nmetadata: {{name: '{name}'}}\n")
    assert err.value.problems[0].hint == hint
