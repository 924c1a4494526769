"""Hostile input (hypothesis): generated manifests and YAML documents fed to
``validate`` and ``plan`` raise only ManifestError / PlanError (in the library)
and exit 0 or 1 with a located message (through the CLI), never another
exception; the vb argument parser raises only VbUsageError, HelpRequested or
VersionRequested; and a generated bubblewrap command line converted to a
manifest and back gives vb the same spec.

The manifests are built from the manifest's own keys with values that are
often valid, often nearly valid (wrong type, out of range, bad paths) and
sometimes junk, so they reach deep into the model, the normalizer and the
compiler rather than stopping at the first key.
"""

from __future__ import annotations

import io
import json
import os
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vbdecl.errors import ManifestError, PlanError
from vbdecl.model import load as loader
from vbdecl.model import normalize as norm
from vbdecl.plan import compile as planner
from vbdecl.vb import parse as vbparse

EXAMPLES = int(os.environ.get("VBDECL_FUZZ_EXAMPLES", "150"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# --- value strategies ---------------------------------------------------------------------

junk = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True)
    | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6,
)


def maybe(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the valid strategy, sometimes junk."""
    return st.one_of(valid, valid, valid, junk)


paths = st.one_of(
    st.sampled_from(["/", "/usr", "/tmp", "/data", "/etc/motd", "/a/b/c", "/proc", "/dev", "/srv",
                     "/a/../b", "relative", "", "/x//y/", "/./z", "/" + "a" * 300, "/\x00", "~/x",
                     "/opt/a", "/bin", "/etc/resolv.conf"]),
    st.text(min_size=0, max_size=20).map(lambda s: "/" + s),
)
host_paths = st.one_of(paths, st.sampled_from(["./data", "../up", "/usr", "/nonexistent/x", "~"]))
modes = st.one_of(st.sampled_from(["0755", "755", "1777", "0644", "9999", "abc", "", "07777", "0o755"]),
                  st.integers(-1, 0o20000))
sizes = st.one_of(st.sampled_from(["64Mi", "1Gi", "0", "1", "-1", "1.5Gi", "10k", "1Zi", "Mi", " 5 Mi"]),
                  st.integers(-10, 2**64), st.floats(allow_nan=True))
names = st.one_of(st.sampled_from(["web", "a", "x-y", "-bad", "Bad", "a" * 64, "", "ok1"]),
                  st.from_regex(r"[a-z0-9][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True))
fs_types = st.sampled_from(["bind", "ro-bind", "dev-bind", "proc", "dev", "mqueue", "tmpfs", "dir",
                            "file", "bind-data", "symlink", "chmod", "remount-ro", "overlay",
                            "tmp-overlay", "ro-overlay", "nope", "Bind"])


@st.composite
def fs_entry(draw: st.DrawFn) -> Any:
    e: dict[str, Any] = {"type": draw(fs_types), "target": draw(paths)}
    for key, strat in (("source", host_paths), ("mode", modes), ("size", sizes),
                       ("content", st.text(max_size=10)), ("readonly", st.booleans()),
                       ("optional", st.booleans()), ("points_to", paths),
                       ("lower", st.lists(host_paths, max_size=3)), ("upper", host_paths),
                       ("work", host_paths), ("bogus", junk)):
        if draw(st.integers(0, 3)) == 0:
            e[key] = draw(maybe(strat))
    if draw(st.integers(0, 9)) == 0:
        e.pop(draw(st.sampled_from(["type", "target"])))
    return e


ns_value = st.one_of(st.booleans(), st.fixed_dictionaries({"join": st.sampled_from(
    ["/proc/1/ns/net", "/run/netns/x", "relative", ""])}), junk)
subnets = st.one_of(st.sampled_from(["10.88.0.0/24", "10.88.0.1/24", "10.0.0.0/31", "10.0.0.0/8",
                                     "fd00::/64", "0.0.0.0/0", "300.1.1.0/24", "x", "10.88.0.0/33"]),
                    st.text(max_size=12))
ports = st.one_of(st.sampled_from(["8080:80/tcp", "53:53/udp", "80", "0:80", "70000:80", "a:b",
                                   "8080:80/sctp", "1.2.3.4:80:80"]),
                  st.fixed_dictionaries({"host": st.integers(-1, 70000), "container": st.integers(-1, 70000)},
                                        optional={"protocol": st.sampled_from(["tcp", "udp", "icmp"]),
                                                  "host_ip": st.sampled_from(["127.0.0.1", "::1", "x"])}))
cap_names = st.sampled_from(["ALL", "NET_ADMIN", "CAP_SYS_ADMIN", "net_bind_service", "NOPE", ""])
syscalls = st.sampled_from(["ptrace", "mount", "@mount", "@nope", "nosuchcall", "", "kexec_load"])


@st.composite
def manifests(draw: st.DrawFn) -> Any:
    spec: dict[str, Any] = {}
    sections: dict[str, st.SearchStrategy[Any]] = {
        "rootfs": st.one_of(st.none(), host_paths),
        "hostname": maybe(st.sampled_from(["web", "a.b", "-x", "x" * 70, ""])),
        "namespaces": st.dictionaries(
            st.sampled_from(["user", "pid", "mount", "uts", "ipc", "net", "cgroup", "time"]),
            ns_value, max_size=4),
        "idmap": maybe(st.fixed_dictionaries({
            "uid": st.lists(st.fixed_dictionaries({"inside": st.integers(-1, 70000),
                                                   "outside": st.integers(-1, 2**32),
                                                   "count": st.integers(-1, 70000)}), max_size=2)})),
        "filesystem": st.lists(maybe(fs_entry()), max_size=6),
        "limits": st.dictionaries(
            st.sampled_from(["memory", "memory_swap", "cpu", "cpu_weight", "pids", "io_weight",
                             "optional", "rlimits", "mem"]),
            st.one_of(sizes, st.dictionaries(st.sampled_from(["nofile", "nproc", "core", "bogus"]),
                                             st.one_of(st.integers(-2, 2**40), st.just("unlimited"),
                                                       st.lists(st.integers(-1, 10), max_size=3)),
                                             max_size=2)),
            max_size=4),
        "network": st.fixed_dictionaries({}, optional={
            "mode": st.sampled_from(["host", "isolated", "bridge", "nat"]),
            "bridge": maybe(st.sampled_from(["vbdecl0", "br0", "x" * 20, "a b", ""])),
            "subnet": subnets, "subnet6": subnets, "address": maybe(st.sampled_from(["auto", "10.88.0.5"])),
            "nat": maybe(st.booleans()), "egress": maybe(st.sampled_from(["auto", "eth0", ""])),
            "ports": st.lists(ports, max_size=3),
            "dns": maybe(st.lists(st.sampled_from(["192.0.2.53", "::1", "x"]), max_size=2)),
            "hosts": maybe(st.dictionaries(st.sampled_from(["db", "a b", ""]),
                                           st.sampled_from(["10.88.0.20", "x"]), max_size=2)),
            "mtu": maybe(st.integers(-1, 100000)),
        }),
        "process": st.fixed_dictionaries({}, optional={
            "command": maybe(st.lists(st.text(max_size=8), max_size=3)),
            "cwd": paths, "env": maybe(st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2)),
            "clear_env": maybe(st.booleans()), "user": maybe(st.integers(-1, 2**33)),
            "group": maybe(st.integers(-1, 2**33)), "init": maybe(st.booleans()),
            "tty": maybe(st.sampled_from(["auto", True, False, "yes"])),
            "inherit_fds": maybe(st.lists(st.integers(-1, 2000), max_size=3)),
        }),
        "security": st.fixed_dictionaries({}, optional={
            "no_new_privs": maybe(st.booleans()),
            "capabilities": maybe(st.fixed_dictionaries({}, optional={
                "drop": st.lists(cap_names, max_size=2), "add": st.lists(cap_names, max_size=2)})),
            "seccomp": st.one_of(st.sampled_from(["off", "default", "strict"]),
                                 st.fixed_dictionaries({"deny": st.lists(syscalls, max_size=3)},
                                                       optional={"errno": st.sampled_from(["EPERM", "ENOPE", 1])}),
                                 st.fixed_dictionaries({"allow": st.lists(syscalls, max_size=3)}),
                                 st.fixed_dictionaries({"profile": host_paths})),
            "landlock": maybe(st.fixed_dictionaries({}, optional={
                "read": st.lists(host_paths, max_size=2), "read_write": st.lists(host_paths, max_size=2),
                "ports": st.fixed_dictionaries({"bind": st.lists(st.integers(-1, 70000), max_size=2)}),
                "optional": st.booleans()})),
            "disable_userns": maybe(st.booleans()),
        }),
        "status": maybe(st.fixed_dictionaries({}, optional={"lock_file": host_paths, "events": host_paths})),
    }
    for key, strat in sections.items():
        if draw(st.integers(0, 2)) == 0:
            spec[key] = draw(strat)
    doc: dict[str, Any] = {"apiVersion": draw(st.sampled_from(["vbdecl/v1"] * 8 + ["vbdecl/v2", 1])),
                           "kind": draw(st.sampled_from(["Environment"] * 8 + ["Pod"])),
                           "metadata": {"name": draw(names)}, "spec": spec}
    if draw(st.integers(0, 9)) == 0:
        doc["metadata"]["labels"] = draw(junk)
    if draw(st.integers(0, 14)) == 0:
        del doc[draw(st.sampled_from(["apiVersion", "kind", "metadata", "spec"]))]
    return doc


def _text(doc: Any) -> bytes:
    # JSON is YAML 1.2 flow syntax; non-finite floats become YAML's own spellings
    s = json.dumps(doc, allow_nan=True).replace("NaN", ".nan").replace("-Infinity", "-.inf") \
        .replace("Infinity", ".inf")
    return s.encode()


def _library(path: Path, data: bytes) -> str:
    """validate + plan in the library; only ManifestError / PlanError may come out."""
    path.write_bytes(data)
    result = loader.load_path(str(path))
    try:
        result.raise_for_problems()
    except ManifestError as err:
        assert str(err)
        for p in result.problems:
            assert p.where.startswith(str(path)) and p.message, p
        return "invalid"
    try:
        for index, env in result.environments:
            doc = norm.normalize(env, base_dir=str(path.parent), source={"path": str(path), "document": index})
            plan = planner.compile_doc(doc)
            json.dumps(plan)     # plain data
            ids = [a["id"] for a in plan["actions"]]
            assert len(ids) == len(set(ids))
    except (ManifestError, PlanError) as err:
        assert str(err)
        return "plan-error"
    return "ok"


@SETTINGS
@given(manifests())
def test_generated_manifests_raise_only_manifest_or_plan_errors(tmp_path: Path, doc: Any) -> None:
    _library(tmp_path / "m.yaml", _text(doc))


@SETTINGS
@given(st.lists(manifests(), min_size=1, max_size=3))
def test_multi_document_files(tmp_path: Path, docs: list[Any]) -> None:
    _library(tmp_path / "m.yaml", b"\n---\n".join(_text(d) for d in docs))


yaml_tokens = st.sampled_from([
    "apiVersion: vbdecl/v1\n", "kind: Environment\n", "metadata: {name: web}\n", "spec:\n",
    "  filesystem:\n", "    - {type: tmpfs, target: /tmp}\n", "  - ", "&a ", "*a ", "!!str ", "!!binary ",
    "<<: *a\n", "? ", ": ", "---\n", "...\n", "%YAML 1.2\n", "%TAG ! tag:x:\n", "'", '"', "{", "}", "[", "]",
    ",", "#", "|\n", ">-\n", "\t", "  ", "\n", "0755", "0o17", ".inf", "~", "null", "yes", "\u2028",
    "\ufeff", "\x00", "\x85", "1e400", "-", "!custom ", "key: value\n", "  network: {mode: bridge}\n",
])


@SETTINGS
@given(st.lists(yaml_tokens, max_size=40))
def test_yaml_token_soup(tmp_path: Path, toks: list[str]) -> None:
    _library(tmp_path / "m.yaml", "".join(toks).encode("utf-8", "surrogatepass"))


def _main(main: Any, argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return int(code), err.getvalue()


@SETTINGS
@given(manifests())
def test_cli_validate_and_plan_exit_0_or_1_with_located_errors(tmp_path: Path, doc: Any) -> None:
    from vbdecl.cli.main import main

    path = tmp_path / "m.yaml"
    path.write_bytes(_text(doc))
    old = os.environ.get("VBDECL_CACHE_DIR")
    os.environ["VBDECL_CACHE_DIR"] = str(tmp_path / "cache")
    try:
        results = [_main(main, argv) for argv in (
            ["validate", str(path)],
            ["--state-dir", str(tmp_path / "state"), "plan", str(path)])]
    finally:
        if old is None:
            os.environ.pop("VBDECL_CACHE_DIR", None)
        else:
            os.environ["VBDECL_CACHE_DIR"] = old
    for argv, (code, text) in zip(("validate", "plan"), results, strict=True):
        assert code in (0, 1), (argv, code, text)
        assert "Traceback" not in text and "crash" not in text.lower(), text
        if code == 1:
            assert f"{path}:" in text or "error:" in text, text  # located, or a stated error


# --- vb: bubblewrap's argument parser ----------------------------------------------------------

OPTS = sorted(k for k in vbparse._ARITY if k != "--args")   # --args reads an fd: tested below
values = st.one_of(st.sampled_from(["/", "/usr", "/tmp", "0", "1", "-1", "0755", "999", "x", "", "--",
                                    "--bind", "3", "65536", "ALL", "CAP_NET_ADMIN", "nope", "64M",
                                    "1.5", "10000000000000000000000"]),
                   st.text(max_size=8))
argvs = st.lists(st.one_of(st.sampled_from(OPTS), st.sampled_from(OPTS), values), max_size=14)


@SETTINGS
@given(argvs)
def test_vb_parser_raises_only_usage_errors(argv: list[str]) -> None:
    try:
        vbparse.parse(argv)
    except (vbparse.VbUsageError, vbparse.HelpRequested, vbparse.VersionRequested) as err:
        assert isinstance(err, (vbparse.HelpRequested, vbparse.VersionRequested)) or str(err)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=200))
def test_vb_args_fd_with_any_bytes(data: bytes) -> None:
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    try:
        vbparse.parse(["--args", str(r), "/bin/true"])
    except (vbparse.VbUsageError, vbparse.HelpRequested, vbparse.VersionRequested):
        pass
    finally:
        try:
            os.close(r)
        except OSError:
            pass


def test_vb_args_fd_that_is_not_open_is_a_usage_error() -> None:
    fd = os.open("/dev/null", os.O_RDONLY)
    os.close(fd)
    with pytest.raises(vbparse.VbUsageError, match=r"^Can.t read --args data: "):
        vbparse.parse(["--args", str(fd), "/bin/true"])


# --- nearly valid manifests: every key right, then at most one mutation ------------------------

good_targets = st.sampled_from(["/usr", "/tmp", "/data", "/srv", "/opt", "/run/app", "/etc/motd",
                                "/a", "/a/b", "/a/b/c", "/", "/proc", "/dev", "/etc/resolv.conf"])
good_sources = st.sampled_from(["/usr", "/tmp", "./data", "/opt/x", "/etc"])
good_modes = st.sampled_from(["0755", "1777", "0644", "700"])


@st.composite
def good_fs_entry(draw: st.DrawFn) -> dict[str, Any]:
    t = draw(fs_types.filter(lambda x: x not in ("nope", "Bind")))
    e: dict[str, Any] = {"type": t, "target": draw(good_targets)}
    if t in ("bind", "ro-bind", "dev-bind"):
        e["source"] = draw(good_sources)
        if draw(st.booleans()):
            e["optional"] = True
    elif t == "tmpfs":
        if draw(st.booleans()):
            e["size"] = draw(st.sampled_from(["64Mi", "1G", 4096]))
        if draw(st.booleans()):
            e["mode"] = draw(good_modes)
    elif t in ("dir", "chmod"):
        if t == "chmod" or draw(st.booleans()):
            e["mode"] = draw(good_modes)
    elif t == "file":
        if draw(st.booleans()):
            e["content"] = draw(st.text(max_size=10))
        else:
            e["source"] = draw(good_sources)
    elif t == "bind-data":
        e["content"] = draw(st.text(max_size=10))
        e["readonly"] = draw(st.booleans())
    elif t == "symlink":
        e["points_to"] = draw(st.sampled_from(["usr/bin", "/usr/lib", "../x", "a"]))
    elif t in ("overlay", "tmp-overlay", "ro-overlay"):
        e["lower"] = draw(st.lists(good_sources, min_size=2 if t == "ro-overlay" else 1, max_size=3))
        if t == "overlay":
            e["upper"], e["work"] = "/var/lib/x/upper", "/var/lib/x/work"
    return e


@st.composite
def good_manifests(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if draw(st.booleans()):
        spec["hostname"] = draw(st.sampled_from(["web", "a-b"]))
    if draw(st.booleans()):
        spec["filesystem"] = draw(st.lists(good_fs_entry(), max_size=8))
    if draw(st.booleans()):
        spec["namespaces"] = draw(st.dictionaries(
            st.sampled_from(["user", "pid", "mount", "uts", "ipc", "net", "cgroup"]), st.booleans(), max_size=3))
    if draw(st.booleans()):
        spec["limits"] = draw(st.fixed_dictionaries({}, optional={
            "memory": st.sampled_from(["64Mi", "1G", 1 << 20]), "cpu": st.sampled_from([0.5, 1, 2]),
            "pids": st.integers(1, 1000), "cpu_weight": st.integers(1, 10000),
            "io_weight": st.integers(1, 10000), "memory_swap": st.sampled_from([0, "1Gi"]),
            "rlimits": st.fixed_dictionaries({}, optional={"nofile": st.integers(1, 4096),
                                                           "core": st.just(0)}),
            "optional": st.booleans()}))
    mode = draw(st.sampled_from(["isolated", "host", "bridge"]))
    net: dict[str, Any] = {"mode": mode}
    if mode == "bridge":
        net.update(draw(st.fixed_dictionaries({}, optional={
            "bridge": st.sampled_from(["vbdecl0", "br9"]), "subnet": st.sampled_from(["10.88.0.0/24", "10.9.0.0/16"]),
            "subnet6": st.just("fd00:88::/64"), "nat": st.booleans(),
            "ports": st.lists(st.sampled_from(["8080:80/tcp", "53:53/udp", "9000:90"]), max_size=3, unique=True),
            "dns": st.just(["192.0.2.53"]), "hosts": st.just({"db": "10.88.0.20"}), "mtu": st.just(1400)})))
    spec["network"] = net
    if draw(st.booleans()):
        spec["process"] = draw(st.fixed_dictionaries({}, optional={
            "command": st.just(["/bin/sh", "-c", "true"]), "cwd": st.sampled_from(["/", "/tmp"]),
            "env": st.just({"A": "b"}), "init": st.booleans(), "tty": st.sampled_from(["auto", False])}))
    if draw(st.booleans()):
        spec["security"] = draw(st.fixed_dictionaries({}, optional={
            "capabilities": st.just({"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}),
            "seccomp": st.sampled_from(["off", "default", {"deny": ["ptrace", "@mount"]}]),
            "landlock": st.just({"read": ["/usr"], "read_write": ["/tmp"], "optional": True}),
            "no_new_privs": st.booleans()}))
    doc: dict[str, Any] = {"apiVersion": "vbdecl/v1", "kind": "Environment",
                           "metadata": {"name": draw(st.sampled_from(["web", "db", "x1"]))}, "spec": spec}
    # one mutation: a value replaced by junk somewhere, a key dropped, or nothing
    how = draw(st.integers(0, 3))
    if how == 1 and spec:
        key = draw(st.sampled_from(sorted(spec)))
        spec[key] = draw(junk)
    elif how == 2 and spec.get("filesystem"):
        entries = spec["filesystem"]
        i = draw(st.integers(0, len(entries) - 1))
        k = draw(st.sampled_from(sorted(entries[i])))
        entries[i][k] = draw(st.one_of(junk, paths, modes, sizes))
    return doc


@SETTINGS
@given(good_manifests())
def test_nearly_valid_manifests_raise_only_manifest_or_plan_errors(tmp_path: Path, doc: Any) -> None:
    _library(tmp_path / "m.yaml", _text(doc))


def test_bad_corpus_has_at_least_150_cases() -> None:
    bad = Path(__file__).resolve().parent.parent / "bad"
    cases = [line for line in (bad / "EXPECTED.tsv").read_text().splitlines()
             if line and not line.startswith("#")]
    assert len(cases) >= 150, len(cases)
    # a file may have several expected problems (one row each)
    assert len(list(bad.glob("*.yaml"))) == len({line.split("\t")[0] for line in cases})


# --- vb: argv -> manifest -> argv' --------------------------------------------------------------

_HOST = ["/usr", "/etc", "/tmp"]
_DESTS = ["/a", "/usr", "/x/y", "/tmp/z", "/usr/lib", "/opt/b c"]
_PERMS = st.sampled_from(["0755", "0700", "1777", "0640"])
_NAMES = st.sampled_from(["A", "PATH", "X_1", "LANG"])


def _with_perms(ops: st.SearchStrategy[list[str]]) -> st.SearchStrategy[list[str]]:
    return st.tuples(st.one_of(st.just([]), _PERMS.map(lambda m: ["--perms", m])), ops).map(
        lambda t: t[0] + t[1])


_dest = st.sampled_from(_DESTS)
_fs_ops = st.one_of(
    st.tuples(st.sampled_from(["--bind", "--ro-bind", "--dev-bind"]), st.sampled_from(_HOST), _dest).map(list),
    st.tuples(st.sampled_from(["--bind-try", "--ro-bind-try", "--dev-bind-try"]),
              st.sampled_from([*_HOST, "/nonexistent-vbdecl"]), _dest).map(list),
    _with_perms(st.tuples(st.one_of(st.just([]), st.just(["--size", "1048576"])), _dest).map(
        lambda t: [*t[0], "--tmpfs", t[1]])),
    _with_perms(_dest.map(lambda d: ["--dir", d])),
    st.tuples(st.sampled_from(["usr/lib", "/usr/bin", "../x", "a b"]), _dest).map(lambda t: ["--symlink", *t]),
    # (mqueue with its own ipc namespace: in a user namespace it could not be mounted otherwise)
    st.sampled_from([["--proc", "/proc"], ["--dev", "/dev"], ["--unshare-ipc", "--mqueue", "/dev/mqueue"]]),
    _dest.map(lambda d: ["--remount-ro", d]),
    st.tuples(_PERMS, _dest).map(lambda t: ["--chmod", *t]),
    _dest.map(lambda d: ["--overlay-src", "/usr", "--tmp-overlay", d]),
    _dest.map(lambda d: ["--overlay-src", "/usr", "--overlay-src", "/etc", "--ro-overlay", d]),
    _dest.map(lambda d: ["--overlay-src", "/etc", "--overlay", "/tmp/up", "/tmp/work", d]),
)
_process_ops = st.one_of(
    st.tuples(_NAMES, st.sampled_from(["1", "", "a=b", "x y"])).map(lambda t: ["--setenv", *t]),
    _NAMES.map(lambda n: ["--unsetenv", n]),
    st.sampled_from([["--clearenv"], ["--chdir", "/tmp"], ["--new-session"], ["--die-with-parent"],
                     ["--argv0", "sh"], ["--cap-drop", "ALL"], ["--cap-drop", "CAP_CHOWN"],
                     ["--cap-add", "CAP_NET_ADMIN"]]),
)
_ns_ops = st.sampled_from([["--unshare-pid"], ["--unshare-pid", "--as-pid-1"], ["--unshare-ipc"],
                           ["--unshare-net"], ["--unshare-uts", "--hostname", "box"], ["--unshare-cgroup"],
                           ["--unshare-user", "--uid", "0", "--gid", "0"],
                           ["--unshare-user", "--uid", "1000", "--gid", "100", "--disable-userns"],
                           ["--unshare-all"], ["--unshare-all", "--share-net"]])
bwrap_argvs = st.tuples(st.lists(st.one_of(_fs_ops, _process_ops, _ns_ops), max_size=12),
                        st.sampled_from([["/bin/true"], ["sh", "-c", "echo hi"]])).map(
    lambda t: [a for op in t[0] for a in op] + ["--", *t[1]])


def _spec_of(argv: list[str]) -> dict[str, Any]:
    opts = vbparse.parse(argv, uid=0, gid=0)
    return vbparse.to_document(opts, uid=0, gid=0, cwd="/")


@SETTINGS
@given(bwrap_argvs)
def test_vb_argv_to_manifest_to_argv_gives_the_same_sandbox(tmp_path: Path, argv: list[str]) -> None:
    """What `vbdecl convert --from-bwrap` writes, read back and converted with
    `--to-bwrap`, is a command line vb turns into the very same spec."""
    from hypothesis import assume

    from vbdecl.model import load_normalized
    from vbdecl.vb.manifest import document_to_manifest, dump_yaml, manifest_to_bwrap

    try:
        first = _spec_of(argv)
    except vbparse.VbUsageError:
        assume(False)
        raise
    path = tmp_path / "m.yaml"
    path.write_text(dump_yaml(document_to_manifest(first)))
    loaded = load_normalized(path)[0]["spec"]
    again = _spec_of(manifest_to_bwrap(loaded))["spec"]
    want = dict(first["spec"])
    want.pop("vb"), again.pop("vb")
    if want["process"]["cwd"] is None:  # vb_only() notes it: the manifest starts in /
        want["process"] = {**want["process"], "cwd": "/"}
    for spec in (want, again):  # vb, as bubblewrap, sets PWD after its chdir whatever came before
        proc = spec["process"] = dict(spec["process"])
        proc["env"] = {k: v for k, v in proc["env"].items() if k != "PWD"}
        proc["unset_env"] = [k for k in proc["unset_env"] if k != "PWD"]
    assert again == want, (argv, manifest_to_bwrap(loaded))
